"""Fixtures of the asyncio server tests: servers on port 0, loops, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

import shardws

from .rawclient import RawClient


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run the test on the default asyncio loop and on uvloop"
    )


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests marked ``both_loops`` run twice: default loop and uvloop."""
    if item.get_closest_marker("both_loops") is not None:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every loop turn (a few ms) until True; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        await asyncio.sleep(0.002)


def uri(server: shardws.Server, path: str = "/") -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"ws://{host}:{port}{path}"


def port_of(server: shardws.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


StartServer = Callable[..., Awaitable[shardws.Server]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """``await start_server(handler, **options)``: a server on 127.0.0.1:0, closed after the test."""
    servers: list[shardws.Server] = []

    async def start(handler: Any, **options: Any) -> shardws.Server:
        server = await shardws.serve(handler, "127.0.0.1", 0, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)


class Accepted:
    """A server whose handler hands each connection to the test and waits for it to close."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[shardws.ServerConnection] = asyncio.Queue()
        self.server: shardws.Server | None = None

    async def handler(self, connection: shardws.ServerConnection) -> None:
        await self.queue.put(connection)
        await connection.wait_closed()

    async def next(self) -> shardws.ServerConnection:
        return await asyncio.wait_for(self.queue.get(), 5)


@pytest.fixture
async def accepted(start_server: StartServer) -> Accepted:
    """A started server (``accepted.server``) whose connections come out of ``accepted.next()``."""
    acc = Accepted()
    acc.server = await start_server(acc.handler)
    return acc


async def open_raw(
    start_server: StartServer, count: int = 1, **options: Any
) -> tuple[list[RawClient], list[shardws.ServerConnection]]:
    """``count`` RawClients on a new server (no compression unless ``options``
    say so) and the server's connections, in the same order."""
    acc = Accepted()
    options.setdefault("compression", None)
    server = await start_server(acc.handler, **options)
    clients = [await RawClient.connect(port_of(server)) for _ in range(count)]
    return clients, [await acc.next() for _ in clients]
