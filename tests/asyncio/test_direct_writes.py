"""Direct writes: with the C speedups, a connection over a plain TCP or Unix
socket sends on the socket itself (one send()/sendmsg()) while its transport
holds nothing and is not closing; what the kernel does not take goes to the
transport. On the pure path, and for TLS, every write goes through the
transport. Either way the peer sees the same bytes in the same order."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.client import connect, unix_connect

import shardws
from shardws import speedups
from shardws.protocol.connection import Connection, Side, State

from .conftest import Accepted, StartServer, open_raw, port_of, uri
from .rawclient import upgrade_request

DIRECT = speedups.connection_fast_paths is not None


def socket_fd(connection: shardws.ServerConnection) -> int:
    return int(connection._transport.get_extra_info("socket").fileno())


class TransportCalls:
    """Records the write / writelines calls on a default-loop transport."""

    def __init__(self, connection: shardws.ServerConnection) -> None:
        self.calls: list[str] = []
        transport = connection._transport
        write, writelines = transport.write, transport.writelines

        def spy_write(data: Any) -> None:
            self.calls.append("write")
            write(data)

        def spy_writelines(chunks: Any) -> None:
            self.calls.append("writelines")
            writelines(chunks)

        transport.write = spy_write  # type: ignore[method-assign]
        transport.writelines = spy_writelines  # type: ignore[method-assign]


@pytest.mark.both_loops
async def test_a_tcp_connection_sends_on_its_socket_until_it_is_lost(
    start_server: StartServer,
) -> None:
    [client], [connection] = await open_raw(start_server)
    assert connection._sock_fd == (socket_fd(connection) if DIRECT else -1)
    await connection.send("over the socket")
    assert await client.next_event() == "over the socket"
    await client.aclose()
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert connection._sock_fd == -1


@pytest.mark.both_loops
async def test_a_unix_connection_sends_on_its_socket(tmp_path: Path) -> None:
    fds: list[tuple[int, int]] = []

    async def handler(ws: shardws.ServerConnection) -> None:
        fds.append((ws._sock_fd, socket_fd(ws)))
        async for message in ws:
            await ws.send(message)

    path = str(tmp_path / "direct.sock")
    async with shardws.unix_serve(handler, path, compression=None), unix_connect(path) as client:
        for message in ("unix", b"\x00\x01", "x" * 70000):
            await client.send(message)
            assert await client.recv() == message
    [(fd, real)] = fds
    assert fd == (real if DIRECT else -1)


async def test_tls_connections_write_through_their_transport() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    fds: list[int] = []

    async def handler(ws: shardws.ServerConnection) -> None:
        fds.append(ws._sock_fd)
        async for message in ws:
            await ws.send(message)

    async with shardws.serve(handler, "127.0.0.1", 0, ssl=server_ctx) as server:
        url = uri(server).replace("ws://", "wss://")
        async with connect(url, ssl=client_ctx) as client:
            await client.send("tls")
            assert await client.recv() == "tls"
    assert fds == [-1]


async def test_send_and_broadcast_skip_the_transport(start_server: StartServer) -> None:
    # default loop only: uvloop's transport methods cannot be replaced
    clients, connections = await open_raw(start_server, 3)
    spies = [TransportCalls(connection) for connection in connections]
    await connections[0].send("one")
    await connections[0].send(b"two")  # corked with "one": one sendmsg()
    connections[0]._flush()
    shardws.broadcast(connections, "to all")
    assert [await clients[0].next_event() for _ in range(3)] == ["one", b"two", "to all"]
    for client in clients[1:]:
        assert await client.next_event() == "to all"
    # (on the pure path: the transport's methods, whichever they call inside)
    assert [bool(spy.calls) for spy in spies] == [not DIRECT] * 3
    for client in clients:
        await client.aclose()


async def socket_client(
    port: int, rcvbuf: int | None = None
) -> tuple[socket.socket, Connection, list[Any]]:
    """A WebSocket client on a bare non-blocking socket: the test reads it
    without giving the loop a turn."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if rcvbuf is not None:  # a fixed receive window: no autotuning
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    protocol = Connection(Side.CLIENT, max_size=None, state=State.OPEN)
    events = list(protocol.receive_data(head.split(b"\r\n\r\n", 1)[1]))
    return sock, protocol, events


async def read_events(
    sock: socket.socket, protocol: Connection, events: list[Any], count: int
) -> list[Any]:
    """Read ``sock`` on the loop until ``events`` holds ``count`` events."""
    loop = asyncio.get_running_loop()
    while len(events) < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 2**20), 5)
        assert chunk, "the server closed the connection"
        events += protocol.receive_data(chunk)
    return events


@pytest.mark.both_loops
async def test_order_is_kept_when_the_transport_holds_data(start_server: StartServer) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, compression=None, write_limit=2**24)
    sock, protocol, events = await socket_client(port_of(server))
    connection = await acc.next()
    transport = connection._transport
    # Big messages until the kernel's buffers are full and the transport
    # holds the rest (part of the last one, at least): the client reads
    # nothing meanwhile.
    messages: list[Any] = []
    while transport.get_write_buffer_size() == 0:
        assert len(messages) < 1024, "the socket never filled up"
        message = struct.pack("!I", len(messages)) * 2**14  # 64 KiB
        messages.append(message)
        await connection.send(message)
        connection._flush()
    # The client drains its socket without a loop turn: the kernel has room
    # again, but the transport has not written what it holds yet. A message
    # sent now must queue behind that, not go to the socket first.
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(2**20)
        except BlockingIOError:
            break
        assert chunk, "the server closed the connection"
        data += chunk
    assert transport.get_write_buffer_size() > 0
    small = [f"small {i}" for i in range(3)]
    for text in small:
        await connection.send(text)
    connection._flush()
    messages += small
    events += protocol.receive_data(bytes(data))
    assert await read_events(sock, protocol, events, len(messages)) == messages
    sock.close()


@pytest.mark.both_loops
async def test_a_big_message_the_kernel_takes_in_part_arrives_whole(
    start_server: StartServer,
) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, compression=None, max_size=None, write_limit=2**24)
    sock, protocol, events = await socket_client(port_of(server), rcvbuf=2**16)
    connection = await acc.next()
    connection._transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 2**16
    )
    message = bytes(range(256)) * 2**14  # 4 MiB: the kernel takes a few hundred KiB
    await connection.send(message)
    connection._flush()
    # the rest (a view of the message, not a copy) waits in the transport
    assert connection._transport.get_write_buffer_size() > 2**20
    assert await read_events(sock, protocol, events, 1) == [message]
    sock.close()


async def flush_now(connection: shardws.ServerConnection) -> None:
    connection._flush()


async def wait_in_recv(connection: shardws.ServerConnection) -> None:
    # recv() writes what send() corked before it waits, unless the transport
    # is closing (the C path then sends without asking the transport again);
    # alone on the server's list, it never leaves it to the batch
    with pytest.raises(shardws.ConnectionClosed):
        async with asyncio.timeout(5):  # recv() runs in this task: before the loss is seen
            await connection.recv()


@pytest.mark.both_loops
@pytest.mark.parametrize("write_corked", [flush_now, wait_in_recv])
async def test_nothing_goes_out_once_the_transport_is_closing(
    start_server: StartServer, write_corked: Callable[[shardws.ServerConnection], Awaitable[None]]
) -> None:
    [client], [connection] = await open_raw(start_server)
    await connection.send("before")
    connection._flush()
    await connection.send("corked, then the transport closes")
    connection._transport.close()
    await write_corked(connection)
    assert await client.until_eof() == ["before"]
    await client.aclose()


@pytest.mark.both_loops
async def test_a_reset_peer_is_reported_through_the_transport(
    start_server: StartServer,
) -> None:
    [client], [connection] = await open_raw(start_server)
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.writer.transport.abort()  # RST

    async def send_until_closed() -> None:
        # the first sends may reach the socket before the loop reads the
        # reset: the kernel refuses them, and the transport reports the loss
        while True:
            await connection.send("into a reset connection")
            connection._flush()
            await asyncio.sleep(0)  # a loop turn: the transport sees the error

    with pytest.raises(shardws.ConnectionClosed):
        await asyncio.wait_for(send_until_closed(), 5)
    await asyncio.wait_for(connection.wait_closed(), 5)
    assert connection.close_code == 1006
