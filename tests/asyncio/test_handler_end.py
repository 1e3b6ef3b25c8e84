"""How the end of a handler is logged: a closure is not a handler bug.

``async for message in connection`` raises ConnectionClosedError when the
peer vanishes or the server closes with 1012 (rolling restart); that is the
normal end of a connection, logged at DEBUG, not "connection handler
failed". Another connection's ConnectionClosed escaping from a handler whose
own connection is still open is a bug: ERROR and 1011.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect

import shardws

from .conftest import port_of, uri, wait_until
from .test_server import handshake_request


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "connection handler failed"]


async def test_peer_vanishing_during_async_for_is_not_an_error(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def handler(connection: shardws.ServerConnection) -> None:
        try:
            async for _ in connection:
                pass
        except BaseException as exc:
            ended.set_result(exc)
            raise
        ended.set_result(None)

    caplog.set_level(logging.DEBUG, logger="shardws.server")
    server = await start_server(handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(handshake_request())
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 101")
    writer.transport.abort()  # no closing handshake: 1006 on the server side
    assert isinstance(await asyncio.wait_for(ended, 5), shardws.ConnectionClosedError)
    await wait_until(lambda: not server.websockets)
    assert failures(caplog) == []
    assert any(
        r.levelno == logging.DEBUG and r.getMessage().startswith("connection handler ended by the closure")
        for r in caplog.records
    )


async def test_another_connections_closure_escaping_is_an_error(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first: asyncio.Future[shardws.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(connection: shardws.ServerConnection) -> None:
        if not first.done():
            first.set_result(connection)
            await connection.wait_closed()
            return
        await connection.recv()
        await (await first).send("to a closed connection")  # raises ConnectionClosed

    caplog.set_level(logging.INFO, logger="shardws.server")
    server = await start_server(handler)
    async with connect(uri(server)) as gone:
        await asyncio.wait_for(asyncio.shield(first), 5)
    async with connect(uri(server)) as client:
        await client.send("go")
        await asyncio.wait_for(client.wait_closed(), 5)
        assert client.close_code == 1011
    assert gone.close_code == 1000
    logged = failures(caplog)
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert logged[0].exc_info is not None
    assert issubclass(logged[0].exc_info[0], shardws.ConnectionClosed)  # type: ignore[arg-type]
