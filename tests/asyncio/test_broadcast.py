"""broadcast(): framed once, written to OPEN connections, slow / closed /
fragmenting ones skipped and counted; and the connection registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

import shardws
from shardws.asyncio import registry
from shardws.protocol.deflate import ServerPerMessageDeflateFactory

from .conftest import Accepted, StartServer, port_of, uri, wait_until
from .rawclient import RawClient


class Spy:
    """Records the objects written to each connection's transport."""

    def __init__(self, connections: list[shardws.ServerConnection]) -> None:
        self.writes: dict[shardws.ServerConnection, list[bytes]] = {}
        for connection in connections:
            connection._sock_fd = -1  # no direct writes (test_direct_writes.py): all via write()
            transport = connection._transport
            original = transport.write
            self.writes[connection] = log = []

            def write(data: bytes, log: list[bytes] = log, original: Any = original) -> None:
                log.append(data)
                original(data)

            transport.write = write  # type: ignore[method-assign]


async def open_clients(
    start_server: StartServer, count: int, client_compression: str | None = None, **options: Any
) -> tuple[list[ClientConnection], list[shardws.ServerConnection]]:
    acc = Accepted()
    server = await start_server(acc.handler, **options)
    clients = [await connect(uri(server), compression=client_compression) for _ in range(count)]
    connections = [await acc.next() for _ in range(count)]
    return clients, connections


@pytest.fixture(autouse=True)
def fresh_stats() -> None:
    shardws.broadcast_stats.reset()


@pytest.mark.parametrize("message", ["text ✓", b"\x00\x01binary", bytearray(b"ba"), memoryview(b"mv")])
async def test_every_open_connection_receives_one_shared_frame(
    start_server: StartServer, message: Any
) -> None:
    clients, connections = await open_clients(start_server, 3, compression=None)
    spy = Spy(connections)
    shardws.broadcast(connections, message)
    assert all(len(writes) == 1 for writes in spy.writes.values())
    frames = [writes[0] for writes in spy.writes.values()]
    expected = message if isinstance(message, str) else bytes(message)
    for client in clients:
        assert await client.recv() == expected
        await client.close()
    assert frames[0] is frames[1] is frames[2]  # ONE bytes object for all
    assert shardws.broadcast_stats.sent == 3 and shardws.broadcast_stats.skipped == 0


async def test_compressed_connections_share_by_frame_share_key(start_server: StartServer) -> None:
    """server_no_context_takeover: equal share keys, one compressed frame for all;
    context takeover: each connection compresses its own."""
    shared_clients, shared = await open_clients(
        start_server, 2, client_compression="deflate",
        compression=None,
        extensions=[ServerPerMessageDeflateFactory(server_no_context_takeover=True)],
    )  # fmt: skip
    own_clients, own = await open_clients(start_server, 2, client_compression="deflate")
    plain_clients, plain = await open_clients(start_server, 2, compression=None)
    spy = Spy(shared + own + plain)
    message = "compressible " * 100
    shardws.broadcast(shared + own + plain, message)
    frame = {connection: writes[0] for connection, writes in spy.writes.items()}
    for client in shared_clients + own_clients + plain_clients:
        assert await client.recv() == message
        await client.close()
    assert frame[shared[0]] is frame[shared[1]]
    assert frame[own[0]] is not frame[own[1]]
    assert frame[plain[0]] is frame[plain[1]]
    assert len(frame[shared[0]]) < len(frame[plain[0]])


async def test_closed_connections_are_skipped_silently(start_server: StartServer) -> None:
    clients, connections = await open_clients(start_server, 2)
    await clients[0].close()
    await connections[0].wait_closed()
    shardws.broadcast(connections, "only to the open one", raise_exceptions=True)
    assert await clients[1].recv() == "only to the open one"
    assert shardws.broadcast_stats.as_dict() == {
        "sent": 1, "skipped": 1, "skipped_closed": 1, "skipped_slow": 0, "skipped_fragmented": 0,
    }  # fmt: skip
    await clients[1].close()


async def slow_connection(start_server: StartServer) -> tuple[RawClient, shardws.ServerConnection]:
    """A connection whose client does not read, with its write buffer above write_limit."""
    acc = Accepted()
    server = await start_server(acc.handler, write_limit=2**14, compression=None)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    big = b"x" * 2**18
    while not connection._write_paused:
        connection._protocol.send_binary(big)  # type: ignore[union-attr]
        connection._flush()  # no drain: fill it up
    return client, connection


@pytest.mark.parametrize("raise_exceptions", [False, True])
async def test_slow_connections_are_skipped_and_counted(
    start_server: StartServer, raise_exceptions: bool
) -> None:
    slow_client, slow = await slow_connection(start_server)
    clients, fast = await open_clients(start_server, 2)
    buffered = slow._transport.get_write_buffer_size()
    if raise_exceptions:
        with pytest.raises(ExceptionGroup) as caught:
            shardws.broadcast([slow, *fast], "news", raise_exceptions=True)
        assert len(caught.value.exceptions) == 1
        assert isinstance(caught.value.exceptions[0], RuntimeError)
    else:
        shardws.broadcast([slow, *fast], "news")
    assert slow._transport.get_write_buffer_size() == buffered  # nothing added
    for client in clients:
        assert await client.recv() == "news"
        await client.close()
    assert shardws.broadcast_stats.skipped_slow == 1
    assert shardws.broadcast_stats.sent == 2
    await slow_client.aclose()


async def test_fragmenting_connections_are_skipped(start_server: StartServer) -> None:
    clients, connections = await open_clients(start_server, 2)
    fragments: asyncio.Queue[str | None] = asyncio.Queue()

    async def source() -> AsyncIterator[str]:
        while (item := await fragments.get()) is not None:
            yield item

    sending = asyncio.create_task(connections[0].send(source()))
    await fragments.put("half")
    await wait_until(lambda: connections[0]._fragmented is not None)
    with pytest.raises(ExceptionGroup) as caught:
        shardws.broadcast(connections, "news", raise_exceptions=True)
    assert [type(e) for e in caught.value.exceptions] == [shardws.ConcurrencyError]
    shardws.broadcast(connections, "more news")  # no raise: skipped quietly
    await fragments.put(None)
    await sending
    assert await clients[0].recv() == "half"
    assert [await clients[1].recv(), await clients[1].recv()] == ["news", "more news"]
    assert shardws.broadcast_stats.skipped_fragmented == 2
    for client in clients:
        await client.close()


@pytest.mark.parametrize("message", [{"a": 1}, 42, None, ["list"]])
def test_broadcast_rejects_other_types(message: Any) -> None:
    with pytest.raises(TypeError):
        shardws.broadcast([], message)


async def test_registry_tracks_open_connections_and_topics(start_server: StartServer) -> None:
    before = registry.count()
    messages_in = registry.stats.messages_in
    messages_out = registry.stats.messages_out
    clients, connections = await open_clients(start_server, 3)
    assert registry.count() == before + 3
    assert set(connections) <= registry.connections()
    assert connections[0].subscribe("room") and connections[1].subscribe("room")
    assert registry.subscribers("room") == {connections[0], connections[1]}
    shardws.broadcast(registry.subscribers("room"), "to the room")
    assert await clients[0].recv() == "to the room"
    assert await clients[1].recv() == "to the room"
    assert registry.stats.messages_out == messages_out + 2
    await clients[2].send("in")
    assert await connections[2].recv() == "in"
    assert registry.stats.messages_in == messages_in + 1

    connections[1].unsubscribe("room")
    connections[1].unsubscribe("never-joined")
    assert registry.subscribers("room") == {connections[0]}
    await clients[0].close()
    await connections[0].wait_closed()
    assert registry.subscribers("room") == set()
    assert connections[0] not in registry.connections()
    assert not connections[0].subscribe("room")  # closed: nothing recorded
    assert registry.subscribers("room") == set()
    for client in clients[1:]:
        await client.close()
    for connection in connections:
        await connection.wait_closed()
    assert registry.count() == before


def test_worker_id_hook() -> None:
    try:
        registry.set_worker_id(3)
        assert registry.worker_id == 3
        assert shardws.ServerConnection.worker_id.fget(object()) == 3  # type: ignore[attr-defined]
    finally:
        registry.set_worker_id(None)
