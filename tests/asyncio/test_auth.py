"""basic_auth: the spec's handler decorator and websockets' process_request form."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import shardws
from shardws.asyncio.auth import build_www_authenticate_basic, parse_authorization_basic

from .conftest import StartServer, uri


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


REJECTED = [
    # Authorization header values (a list: several headers); body of the 401
    pytest.param([], "Missing credentials\n", id="missing"),
    pytest.param([basic("admin", "wrong")], "Invalid credentials\n", id="wrong-password"),
    pytest.param([basic("root", "pw")], "Invalid credentials\n", id="unknown-user"),
    pytest.param([basic("admin", "pw") + "x"], "Unsupported credentials\n", id="bad-base64"),
    pytest.param(["Basic " + base64.b64encode(b"no-colon").decode()], "Unsupported credentials\n", id="no-colon"),
    pytest.param(["Basic " + base64.b64encode(b"\xff:\xfe").decode()], "Unsupported credentials\n", id="not-utf8"),
    pytest.param(["Bearer abc"], "Unsupported credentials\n", id="other-scheme"),
    pytest.param(["Basic"], "Unsupported credentials\n", id="no-token"),
    pytest.param([basic("admin", "pw"), basic("admin", "pw")], "Too many credentials\n", id="repeated"),
]  # fmt: skip


def decorated(calls: list[str | None]) -> Any:
    @shardws.basic_auth("admin", "pw", realm="Test realm")
    async def handler(connection: shardws.ServerConnection) -> None:
        calls.append(connection.username)
        await connection.send(f"hello {connection.username}")

    return handler


def keyword_forms() -> list[Any]:
    async def check_async(user: str, password: str) -> bool:
        return (user, password) == ("admin", "pw")

    realm = "Test realm"
    return [
        pytest.param(lambda: shardws.basic_auth(realm=realm, credentials=("admin", "pw")), id="credentials-pair"),
        pytest.param(lambda: shardws.basic_auth(realm=realm, credentials=[("x", "y"), ("admin", "pw")]), id="credentials-list"),
        pytest.param(lambda: shardws.basic_auth(realm=realm, check_credentials=lambda u, p: (u, p) == ("admin", "pw")), id="check-sync"),
        pytest.param(lambda: shardws.basic_auth(realm=realm, check_credentials=check_async), id="check-async"),
    ]  # fmt: skip


async def start_protected(start_server: StartServer, form: Any, calls: list[str | None]) -> shardws.Server:
    if form is None:
        return await start_server(decorated(calls))

    async def handler(connection: shardws.ServerConnection) -> None:
        calls.append(connection.username)
        await connection.send(f"hello {connection.username}")

    return await start_server(handler, process_request=form())


FORMS = [pytest.param(None, id="decorator"), *keyword_forms()]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("authorizations", "body"), REJECTED)
async def test_rejected_with_401_before_the_handler_runs(
    start_server: StartServer, form: Any, authorizations: list[str], body: str
) -> None:
    calls: list[str | None] = []
    server = await start_protected(start_server, form, calls)
    headers = [("Authorization", value) for value in authorizations]
    with pytest.raises(InvalidStatus) as caught:
        async with connect(uri(server), additional_headers=headers):
            pass
    response = caught.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Test realm", charset="UTF-8"'
    assert response.body == body.encode()
    assert calls == []


@pytest.mark.parametrize("form", FORMS)
async def test_valid_credentials_reach_the_handler(start_server: StartServer, form: Any) -> None:
    calls: list[str | None] = []
    server = await start_protected(start_server, form, calls)
    async with connect(uri(server), additional_headers={"Authorization": basic("admin", "pw")}) as ws:
        assert await ws.recv() == "hello admin"
    # credentials in the URI (what browsers and the websockets client send)
    host, port = server.sockets[0].getsockname()[:2]
    async with connect(f"ws://admin:pw@{host}:{port}/") as ws:
        assert await ws.recv() == "hello admin"
    assert calls == ["admin", "admin"]


async def test_decorator_runs_before_process_request(start_server: StartServer) -> None:
    seen: list[str | None] = []

    def process_request(connection: shardws.ServerConnection, request: shardws.Request) -> None:
        seen.append(connection.username)

    server = await start_server(decorated([]), process_request=process_request)
    with pytest.raises(InvalidStatus):
        async with connect(uri(server)):
            pass
    assert seen == []
    async with connect(uri(server), additional_headers={"Authorization": basic("admin", "pw")}):
        pass
    assert seen == ["admin"]


def test_decorator_keeps_the_handler_name() -> None:
    handler = decorated([])
    assert handler.__name__ == "handler"
    assert callable(handler.__shardws_auth__)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"credentials": ("a", "b"), "check_credentials": lambda u, p: True},
        {"username": "a"},
        {"username": "a", "password": "b", "credentials": ("a", "b")},
        {"credentials": ["not a pair"]},
    ],
)
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        shardws.basic_auth(**kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (basic("a", "b:c"), ("a", "b:c")),
        (basic("", ""), ("", "")),
        ("basic " + base64.b64encode(b"u:p").decode(), ("u", "p")),
        (basic("é", "ü"), ("é", "ü")),
        ("Basic !!!!", None),
        ("Digest x", None),
    ],
)
def test_parse_authorization_basic(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_authorization_basic(value) == expected


@pytest.mark.parametrize(
    ("realm", "header"),
    [
        ("WebSocket", 'Basic realm="WebSocket", charset="UTF-8"'),
        ('say "hi"', 'Basic realm="say \\"hi\\"", charset="UTF-8"'),
        ("back\\slash", 'Basic realm="back\\\\slash", charset="UTF-8"'),
    ],
)
def test_www_authenticate(realm: str, header: str) -> None:
    assert build_www_authenticate_basic(realm) == header
