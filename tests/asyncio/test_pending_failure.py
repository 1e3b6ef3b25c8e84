"""A protocol error in the same read as complete messages: the handler answers
the messages before the close frame goes out (Autobahn 3.2, 4.1.3, 5.15 strict),
and the held-back failure is bounded (reading pauses; close_timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import shardws
from shardws.asyncio import connection as connection_module
from shardws.exceptions import RemoteProtocolError
from shardws.protocol.connection import Pong, State
from shardws.protocol.frames import OP_BINARY, OP_PING, OP_TEXT, Close
from tests.protocol.wire import client

from .conftest import Accepted, port_of, wait_until
from .rawclient import RawClient

MESSAGES = client(OP_TEXT, b"one") + client(OP_BINARY, b"two")
BAD = client(0x3)  # reserved opcode: 1002
FAULT = Close(1002, "invalid opcode 0x3")

Handler = Callable[[shardws.ServerConnection], Awaitable[None]]


async def echo_all(connection: shardws.ServerConnection) -> None:
    try:
        async for message in connection:
            await connection.send(message)
    except shardws.ConnectionClosedError as exc:
        assert isinstance(exc.__cause__, RemoteProtocolError)


async def echo_one_then_return(connection: shardws.ServerConnection) -> None:
    await connection.send(await connection.recv())


async def echo_one_then_close(connection: shardws.ServerConnection) -> None:
    await connection.send(await connection.recv())
    await connection.close(1000, "bye")  # the fault's code goes out instead


async def echo_one_then_raise(connection: shardws.ServerConnection) -> None:
    await connection.send(await connection.recv())
    raise ValueError("handler bug")  # 1011 would go out; the fault's 1002 does


async def never_read(connection: shardws.ServerConnection) -> None:
    await connection.wait_closed()


# (name, handler, serve() options, client bytes in one write, events the client sees)
CASES: list[tuple[str, Handler, dict[str, Any], bytes, list[Any]]] = [
    ("echo until closed", echo_all, {}, MESSAGES + BAD, ["one", b"two", FAULT]),
    ("answers one, then returns", echo_one_then_return, {}, MESSAGES + BAD, ["one", FAULT]),
    ("answers one, then close(1000)", echo_one_then_close, {}, MESSAGES + BAD, ["one", FAULT]),
    ("answers one, then raises", echo_one_then_raise, {}, MESSAGES + BAD, ["one", FAULT]),
    ("never reads: close_timeout", never_read, {"close_timeout": 0.05}, MESSAGES + BAD, [FAULT]),
    ("never reads: no close_timeout", never_read, {"close_timeout": None}, MESSAGES + BAD, [FAULT]),
    ("fault alone fails at once", echo_all, {}, BAD, [FAULT]),
    ("ping then fault fails at once", echo_all, {}, client(OP_PING, b"p") + BAD, [Pong(b"p"), FAULT]),
]


@pytest.mark.both_loops
@pytest.mark.parametrize(
    ("name", "handler", "options", "wire", "expected"), CASES, ids=[c[0] for c in CASES]
)
async def test_answers_go_out_before_the_close_frame(
    start_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    handler: Handler,
    options: dict[str, Any],
    wire: bytes,
    expected: list[Any],
) -> None:
    monkeypatch.setattr(connection_module, "PENDING_FAILURE_TIMEOUT", 0.05)
    server = await start_server(handler, **options)
    raw = await RawClient.connect(port_of(server))
    assert raw.status == 101
    raw.writer.write(wire)
    assert await raw.until_eof() == expected
    await raw.aclose()


async def test_reading_pauses_while_a_failure_is_held_back(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, close_timeout=5)
    raw = await RawClient.connect(port_of(server))
    connection = await acc.next()
    raw.writer.write(MESSAGES + BAD)
    await wait_until(lambda: len(connection._messages) == 2)
    assert connection.state is State.OPEN  # the handler may still answer
    assert not connection._transport.is_reading()
    await connection.send("answer")
    await connection.close(1000)  # applies the held-back failure
    assert await raw.until_eof() == ["answer", FAULT]
    assert connection.closed
    assert isinstance(connection._close_exc().__cause__, RemoteProtocolError)
    # messages that arrived before the fault are still there to read
    assert [await connection.recv(), await connection.recv()] == ["one", b"two"]
    with pytest.raises(shardws.ConnectionClosedError):
        await connection.recv()
    await raw.aclose()


async def test_peer_gone_while_a_failure_is_held_back(start_server: Any) -> None:
    """Reading is paused, so the peer's EOF is not seen: close_timeout still closes."""
    acc = Accepted()
    server = await start_server(acc.handler, close_timeout=0.05)
    raw = await RawClient.connect(port_of(server))
    connection = await acc.next()
    raw.writer.write(MESSAGES + BAD)
    await wait_until(lambda: len(connection._messages) == 2)
    await raw.aclose()
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert connection._fail_handle is None
    assert [await connection.recv(), await connection.recv()] == ["one", b"two"]
    with pytest.raises(shardws.ConnectionClosedError) as caught:
        await connection.recv()
    assert isinstance(caught.value.__cause__, RemoteProtocolError)
