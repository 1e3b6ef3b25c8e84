"""Corking: the messages send() queues in one loop iteration go out in one
write, in order with pongs, close frames and broadcasts; memory stays bounded."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

import shardws
from shardws.asyncio.connection import CORK_LIMIT
from shardws.protocol.connection import Ping, Pong
from shardws.protocol.frames import Close

from .conftest import StartServer, open_raw, wait_until
from .rawclient import RawClient


class WriteSpy:
    """Counts the write / writelines calls on a connection's transport and their bytes
    (default loop only: uvloop's transport methods are read-only)."""

    def __init__(self, connection: shardws.ServerConnection) -> None:
        self.calls: list[bytes] = []
        connection._sock_fd = -1  # no direct writes (test_direct_writes.py): all via the transport
        transport = connection._transport
        write, writelines = transport.write, transport.writelines

        inside = [False]  # asyncio's writelines calls write: count it once

        def spy_write(data: bytes) -> None:
            if not inside[0]:
                self.calls.append(bytes(data))
            write(data)

        def spy_writelines(chunks: Any) -> None:
            chunks = list(chunks)
            self.calls.append(b"".join(chunks))
            inside[0] = True
            try:
                writelines(chunks)
            finally:
                inside[0] = False

        transport.write = spy_write  # type: ignore[method-assign]
        transport.writelines = spy_writelines  # type: ignore[method-assign]


async def open_one(start_server: StartServer, **options: Any) -> tuple[RawClient, shardws.ServerConnection]:
    [client], [connection] = await open_raw(start_server, **options)
    return client, connection


async def events(client: RawClient, count: int) -> list[Any]:
    return [await client.next_event() for _ in range(count)]


# (messages sent in one loop iteration, what the client receives)
BATCHES = [
    (["a", b"b", "", b"", bytearray(b"c"), memoryview(b"dd")], ["a", b"b", "", b"", b"c", b"dd"]),
    ([""], [""]),  # an empty message is flushed too
    ([b"x" * 1000] * 20, [b"x" * 1000] * 20),
]


@pytest.mark.parametrize(("messages", "expected"), BATCHES)
async def test_one_write_per_loop_iteration(
    start_server: StartServer, messages: list[Any], expected: list[Any]
) -> None:
    client, connection = await open_one(start_server)
    spy = WriteSpy(connection)
    for message in messages:
        await connection.send(message)
    assert spy.calls == []  # held back until the loop turns
    assert await events(client, len(expected)) == expected
    assert len(spy.calls) == 1
    await client.aclose()


async def test_past_the_cork_limit_writes_at_once(start_server: StartServer) -> None:
    """A handler that sends without ever yielding holds at most CORK_LIMIT bytes back."""
    client, connection = await open_one(start_server, write_limit=2**22)
    spy = WriteSpy(connection)
    chunk = b"y" * 4096
    count = 3 * CORK_LIMIT // len(chunk)
    for _ in range(count):
        await connection.send(chunk)
        assert connection._corked < CORK_LIMIT
    assert len(spy.calls) >= 2  # written before the loop turned
    assert await events(client, count) == [chunk] * count
    await client.aclose()


async def test_cork_limit_is_at_most_write_limit(start_server: StartServer) -> None:
    client, connection = await open_one(start_server, write_limit=1000)
    spy = WriteSpy(connection)
    await connection.send(b"z" * 1200)
    assert len(spy.calls) == 1  # over write_limit: not held back
    assert await events(client, 1) == [b"z" * 1200]
    await client.aclose()


# (what follows the corked messages, what the client sees after them)
AFTER = ["ping", "pong", "close", "broadcast"]


@pytest.mark.both_loops
@pytest.mark.parametrize("after", AFTER)
async def test_order_is_kept_with_control_frames_and_broadcast(
    start_server: StartServer, after: str
) -> None:
    client, connection = await open_one(start_server)
    await connection.send("first")
    await connection.send(b"second")
    if after == "ping":
        await connection.ping(b"p")
        expected: list[Any] = ["first", b"second", Ping(b"p")]
    elif after == "pong":
        await connection.pong(b"q")
        expected = ["first", b"second", Pong(b"q")]
    elif after == "close":
        closing = asyncio.ensure_future(connection.close(1000, "bye"))
        expected = ["first", b"second", Close(1000, "bye")]
    else:
        shardws.broadcast([connection], "third")
        expected = ["first", b"second", "third"]
    assert await events(client, len(expected)) == expected
    if after == "close":  # the client answered the close frame as it read it
        await asyncio.wait_for(closing, 5)
    await client.aclose()


async def test_a_ping_answer_follows_the_messages_before_it(start_server: StartServer) -> None:
    """The pong the protocol queues on a read goes after the messages held back."""
    client, connection = await open_one(start_server)
    await connection.send("before")
    client.ping(b"answer me")
    assert await events(client, 2) == ["before", Pong(b"answer me")]
    await client.aclose()


async def test_nothing_is_written_once_the_transport_is_closing(start_server: StartServer) -> None:
    client, connection = await open_one(start_server)
    spy = WriteSpy(connection)
    await connection.send("never flushed")
    connection._transport.abort()
    await connection.wait_closed()
    await wait_until(lambda: not connection._flush_scheduled)
    assert spy.calls == []
    await client.aclose()


# ------------------------------------------------------------ broadcasts


async def test_broadcasts_of_one_loop_iteration_cost_two_writes(start_server: StartServer) -> None:
    clients, connections = await open_raw(start_server, 3)
    spies = [WriteSpy(connection) for connection in connections]
    shardws.broadcast_stats.reset()
    texts = ["a", "b", "c", "d"]
    for text in texts:
        shardws.broadcast(connections, text)
    # the first broadcast went out at once; the others wait for the loop
    assert [len(spy.calls) for spy in spies] == [1, 1, 1]
    for client in clients:
        assert await events(client, len(texts)) == texts
    frames = [spy.calls for spy in spies]
    assert frames[0] == frames[1] == frames[2]
    assert frames[0] == [b"\x81\x01a", b"\x81\x01b\x81\x01c\x81\x01d"]
    assert shardws.broadcast_stats.sent == len(texts) * len(connections)
    # a later loop iteration: written at once again
    shardws.broadcast(connections, "e")
    assert [len(spy.calls) for spy in spies] == [3, 3, 3]
    for client in clients:
        assert await events(client, 1) == ["e"]
        await client.aclose()


async def test_a_broadcast_joins_what_send_corked(start_server: StartServer) -> None:
    clients, connections = await open_raw(start_server, 2)
    spies = [WriteSpy(connection) for connection in connections]
    await connections[0].send("sent")
    shardws.broadcast(connections, "broadcast")
    assert [len(spy.calls) for spy in spies] == [0, 1]  # the first waits with its send()
    assert await events(clients[0], 2) == ["sent", "broadcast"]
    assert await events(clients[1], 1) == ["broadcast"]
    assert spies[0].calls == [b"\x81\x04sent\x81\x09broadcast"]
    for client in clients:
        await client.aclose()


async def test_corked_broadcasts_stay_under_the_cork_limit(start_server: StartServer) -> None:
    clients, connections = await open_raw(start_server, 2, write_limit=2**22)
    spies = [WriteSpy(connection) for connection in connections]
    chunk = b"y" * 4096
    count = 3 * CORK_LIMIT // len(chunk)
    for _ in range(count):
        shardws.broadcast(connections, chunk)
        assert all(connection._corked < CORK_LIMIT for connection in connections)
    assert all(len(spy.calls) >= 3 for spy in spies)  # written before the loop turned
    for client in clients:
        assert await events(client, count) == [chunk] * count
        await client.aclose()


async def test_an_epoch_left_by_another_loop_does_not_stop_the_grouping(
    start_server: StartServer,
) -> None:
    # as if a loop had closed before the callback that ends its epoch ran
    # (the module, not the function shardws.asyncio re-exports under its name)
    sys.modules["shardws.asyncio.broadcast"]._epoch[1] = object()
    clients, connections = await open_raw(start_server, 1)
    spy = WriteSpy(connections[0])
    shardws.broadcast(connections, "one")
    shardws.broadcast(connections, "two")
    assert await events(clients[0], 2) == ["one", "two"]
    assert len(spy.calls) == 2
    shardws.broadcast(connections, "three")  # the epoch moved on with this loop
    assert len(spy.calls) == 3
    assert await events(clients[0], 1) == ["three"]
    await clients[0].aclose()
