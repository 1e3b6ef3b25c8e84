"""The five examples of spec/server-api.md, started as written and driven as a user would."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

import shardws

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"shardws_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def start(module: ModuleType, *args: Any) -> tuple[asyncio.Task[None], shardws.Server]:
    """Run the example's main() as a task; return it and the server it started."""
    started: asyncio.Future[shardws.Server] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(module.main(*args, started=started))
    done, _ = await asyncio.wait([task, started], timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # main() failed: show why
    return task, started.result()


@pytest.fixture
async def example(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ModuleType, str]]:
    """Start examples/<param>.py on 127.0.0.1:0; yield (module, ws URI); stop it after."""
    module = load(request.param)
    task, server = await start(module, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield module, f"ws://127.0.0.1:{port}"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not server.is_serving()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("example", ["echo"], indirect=True)
@pytest.mark.parametrize("message", ["hello", "", "héllo ✓"])
async def test_echo(example: tuple[ModuleType, str], message: str) -> None:
    _, uri = example
    async with connect(uri) as ws:
        await ws.send(message)
        assert await ws.recv() == f"Echo: {message}"


@pytest.mark.parametrize("example", ["chat"], indirect=True)
async def test_chat_broadcasts_to_every_client_and_rejects_bad_json(
    example: tuple[ModuleType, str],
) -> None:
    module, uri = example
    async with connect(uri) as alice, connect(uri) as bob, connect(uri) as carol:
        # wait until the three handlers registered their client
        for ws in (alice, bob, carol):
            await ws.send("{not json")
            assert json.loads(await ws.recv()) == {"error": "Invalid JSON format"}
        assert len(module.clients) == 3

        await alice.send(json.dumps({"user": "alice", "message": "hi all"}))
        for ws in (alice, bob, carol):
            received = json.loads(await ws.recv())
            assert received["user"] == "alice"
            assert received["message"] == "hi all"
            assert isinstance(received["timestamp"], float)

        await bob.send(json.dumps({"message": "anon"}))
        for ws in (alice, bob, carol):
            assert json.loads(await ws.recv())["user"] == "Anonymous"

        # max_size=10 KB: a bigger message closes that client with 1009
        await carol.send(json.dumps({"message": "x" * 11000}))
        with pytest.raises(ConnectionClosedError) as caught:
            await carol.recv()
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009

        await alice.send(json.dumps({"user": "alice", "message": "still here"}))
        assert json.loads(await bob.recv())["message"] == "still here"
        assert json.loads(await alice.recv())["message"] == "still here"


AUTH_REJECTED = [
    pytest.param({}, id="no-credentials"),
    pytest.param(basic("admin", "wrong"), id="wrong-password"),
    pytest.param(basic("root", "secret123"), id="wrong-user"),
    pytest.param({"Authorization": "Basic !!!"}, id="malformed"),
]


@pytest.mark.parametrize("example", ["auth"], indirect=True)
@pytest.mark.parametrize("headers", AUTH_REJECTED)
async def test_auth_rejects_without_valid_credentials(
    example: tuple[ModuleType, str], headers: dict[str, str]
) -> None:
    _, uri = example
    with pytest.raises(InvalidStatus) as caught:
        async with connect(uri, additional_headers=headers):
            pass
    response = caught.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="WebSocket", charset="UTF-8"'


@pytest.mark.parametrize("example", ["auth"], indirect=True)
async def test_auth_welcomes_valid_credentials(
    capsys: pytest.CaptureFixture[str], example: tuple[ModuleType, str]
) -> None:
    _, uri = example
    async with connect(uri, additional_headers=basic("admin", "secret123")) as ws:
        assert ws.response is not None
        assert ws.response.headers["Server"] == "MyWebSocketServer/1.0"
        assert await ws.recv() == "Welcome! You are authenticated."
        await ws.send("STATUS")
        assert await ws.recv() == "Server is running normally"
        await ws.send("ping")
        assert await ws.recv() == "Received: ping"
    # the header the example prints for its users carries these credentials
    assert f'Use Authorization: {basic("admin", "secret123")["Authorization"]}\n' in capsys.readouterr().out


@pytest.mark.parametrize("example", ["api_key"], indirect=True)
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_api_key_rejected(example: tuple[ModuleType, str], headers: dict[str, str]) -> None:
    _, uri = example
    with pytest.raises(InvalidStatus) as caught:
        async with connect(uri, additional_headers=headers):
            pass
    assert caught.value.response.status_code == 403
    assert caught.value.response.body == b"Invalid API key"


@pytest.mark.parametrize("example", ["api_key"], indirect=True)
async def test_api_key_accepted(example: tuple[ModuleType, str]) -> None:
    _, uri = example
    async with connect(uri, additional_headers={"X-API-Key": "valid-api-key"}) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert await ws.recv() == "API connection established"
        await ws.send("GET /users")
        assert json.loads(await ws.recv()) == {"status": "success", "data": "..."}
        await ws.send("DELETE /users")
        assert json.loads(await ws.recv()) == {"error": "Unknown command"}


async def test_unix_socket(tmp_path: Path) -> None:
    module = load("unix_socket")
    path = tmp_path / "ws.sock"
    path.write_text("stale")  # the example removes an existing file first
    task, server = await start(module, str(path))
    try:
        async with unix_connect(str(path)) as ws:
            assert await ws.recv() == "Connected via Unix socket"
            await ws.send("over unix")
            assert await ws.recv() == "Unix echo: over unix"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not server.is_serving()
