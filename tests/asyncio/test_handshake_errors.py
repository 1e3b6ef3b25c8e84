"""A response the server cannot write (header injection, bad names, bad
status line) or a hook that fails while the 101 is built is answered 500
(with the same body every time) and logged at ERROR; the server keeps serving."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect

import shardws

from .conftest import port_of, uri
from .test_server import echo, handshake_request, http_exchange

BAD_PATH = "/bad"


def on_bad_path(value: Any) -> Any:
    """A hook that returns ``value`` for requests to /bad, None (proceed) for others."""

    def hook(connection: Any, request: shardws.Request, *rest: Any) -> Any:
        return value if request.path == BAD_PATH else None

    return hook


def raise_on_bad_path(connection: Any, request: shardws.Request) -> Any:
    if request.path == BAD_PATH:
        raise RuntimeError("extra_headers bug")
    return None


def select_on_bad_path(connection: Any, offered: list[str]) -> str | None:
    if connection.request.path == BAD_PATH:
        raise RuntimeError("select_subprotocol bug")
    return None


def select_not_offered_on_bad_path(connection: Any, offered: list[str]) -> str | None:
    return "never-offered" if connection.request.path == BAD_PATH else None


def bad_header_on_101(connection: Any, request: shardws.Request, response: shardws.Response) -> None:
    if request.path == BAD_PATH:
        response.headers["X-Bad"] = "a\r\nInjected: 1"


# (name, serve() options); each makes the answer to GET /bad unwritable, or fails building it
CASES: list[tuple[str, dict[str, Any]]] = [
    ("extra_headers value with CR LF", {"extra_headers": on_bad_path({"X-Bad": "a\r\nInjected: 1"})}),
    ("extra_headers value with LF", {"extra_headers": on_bad_path([("X-Bad", "a\nInjected: 1")])}),
    ("extra_headers bad name", {"extra_headers": on_bad_path({"Bad Name": "x"})}),
    ("extra_headers name with colon", {"extra_headers": on_bad_path({"Injected: 1\r\nX": "x"})}),
    ("extra_headers value not a str", {"extra_headers": on_bad_path({"X-Num": 42})}),
    ("extra_headers raises", {"extra_headers": raise_on_bad_path}),
    (
        "process_request response with CR LF in a header",
        {
            "process_request": on_bad_path(
                shardws.Response(403, "Forbidden", shardws.Headers([("X-Bad", "a\r\nInjected: 1")]), b"")
            )
        },
    ),
    (
        "process_request response with a bad reason phrase",
        {"process_request": on_bad_path(shardws.Response(403, "Forbidden\r\nInjected: 1", b""))},
    ),
    (
        "process_request response with a bad status",
        {"process_request": on_bad_path(shardws.Response(1000, "Too big", b""))},
    ),
    ("process_response bad header on the 101", {"process_response": bad_header_on_101}),
    ("select_subprotocol raises", {"select_subprotocol": select_on_bad_path}),
    ("select_subprotocol picks what was not offered", {"select_subprotocol": select_not_offered_on_bad_path}),
]

SERVER_ERROR_BODY = b"\r\n\r\nFailed to open a WebSocket connection.\nSee server log for more information.\n"


@pytest.mark.parametrize(("name", "options"), CASES, ids=[c[0] for c in CASES])
async def test_server_side_failure_gets_500(
    start_server: Any, caplog: pytest.LogCaptureFixture, name: str, options: dict[str, Any]
) -> None:
    caplog.set_level(logging.INFO, logger="shardws.server")
    server = await start_server(echo, **options)
    answer = await http_exchange(port_of(server), handshake_request(path=BAD_PATH))
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"Injected" not in answer
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(SERVER_ERROR_BODY)
    errors = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and r.getMessage().startswith("opening handshake failed")
    ]
    assert len(errors) == 1 and errors[0].exc_info is not None
    # the server keeps serving
    async with connect(uri(server)) as client:
        await client.send("still here")
        assert await client.recv() == "still here"
