"""Batched sends: with the C speedups on Linux 5.19 or later, broadcast()
and the end of a loop iteration (Server._flush_corked) hand the kernel their
direct writes through io_uring, one system call per 256 connections; what
the kernel does not take goes to the transport, as for any direct write
(test_direct_writes.py). Turned off (``batched_sends(False)``,
``SHARDWS_NO_IO_URING=1``) or where io_uring is missing, each write is one
send(). The peers see the same bytes either way."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import shardws
from shardws import speedups

from .conftest import Accepted, StartServer, open_raw, port_of
from .test_broadcast import open_clients
from .test_direct_writes import read_events, socket_client

# Whether this process batches when asked to: the C speedups, a kernel with
# io_uring and nothing refusing it. Where it does not, the tests below check
# that every delivery still arrives, and that none went through a ring.
RING = speedups.broadcast_plain is not None and speedups.batched_sends()[0]


@pytest.fixture(params=[True, False], ids=["batched", "one-by-one"])
def batching(request: pytest.FixtureRequest) -> Iterator[bool]:
    speedups.batched_sends(request.param)
    try:
        yield request.param and RING
    finally:
        speedups.batched_sends(True)


def batched() -> int:
    return speedups.batched_sends()[1]


async def bare_peers(
    start_server: StartServer, count: int, size: int, small: int
) -> tuple[shardws.Server, list[Any], list[shardws.ServerConnection]]:
    """``count`` clients on bare sockets (test_direct_writes.socket_client)
    with receive buffers of ``size`` bytes; the first ``small`` server
    connections get send buffers of that size too."""
    acc = Accepted()
    server = await start_server(acc.handler, compression=None, max_size=None, write_limit=2**24)
    peers = [await socket_client(port_of(server), rcvbuf=size) for _ in range(count)]
    connections = [await acc.next() for _ in peers]
    for connection in connections[:small]:
        connection._transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, size
        )
    return server, peers, connections


@pytest.mark.both_loops
async def test_a_broadcast_to_more_connections_than_a_batch_reaches_each_once(
    start_server: StartServer, batching: bool
) -> None:
    clients, connections = await open_raw(start_server, 300)
    before = batched()
    shardws.broadcast(connections, "one")
    assert batched() - before == (300 if batching else 0)
    shardws.broadcast(connections, "two")  # the same loop iteration: corked behind "one"
    assert batched() - before == (300 if batching else 0)
    for client in clients:
        assert [await client.next_event(), await client.next_event()] == ["one", "two"]
    for client in clients:
        await client.aclose()


@pytest.mark.both_loops
async def test_what_the_kernel_does_not_take_goes_through_the_transport_in_order(
    start_server: StartServer, batching: bool
) -> None:
    # small buffers on two: the kernel takes part of the frame
    _, peers, connections = await bare_peers(start_server, 3, 2**16, small=2)
    big = bytes(range(256)) * 2**12  # 1 MiB
    before = batched()
    shardws.broadcast(connections, big)
    assert batched() - before == (3 if batching else 0)
    # the rest (a view of the frame) waits in the two transports
    assert [c._transport.get_write_buffer_size() > 2**19 for c in connections[:2]] == [True] * 2
    # the next broadcast queues behind it there, and goes direct on the third
    connections[2]._broadcast_epoch = None  # as in the next loop iteration
    for connection in connections[:2]:
        connection._broadcast_epoch = None
    shardws.broadcast(connections, "after")
    assert batched() - before == (4 if batching else 0)
    for sock, protocol, events in peers:
        assert await read_events(sock, protocol, events, 2) == [big, "after"]
        sock.close()


@pytest.mark.both_loops
async def test_batches_keep_each_connection_s_order_among_compressed_and_corked_ones(
    start_server: StartServer, batching: bool
) -> None:
    # plain and compressed connections alternate: broadcast_plain() submits
    # its batch before each compressed one goes to Python (deliver())
    plain, plain_connections = await open_clients(start_server, 4, compression=None)
    compressed, compressed_connections = await open_clients(
        start_server, 2, client_compression="deflate"
    )
    connections = [
        plain_connections[0], compressed_connections[0], plain_connections[1],
        compressed_connections[1], plain_connections[2], plain_connections[3],
    ]
    await plain_connections[0].send("own")  # corked: the broadcast queues behind it
    before = batched()
    shardws.broadcast(connections, "one")
    shardws.broadcast(connections, "two")
    assert batched() - before == (3 if batching else 0)
    assert [await plain[0].recv() for _ in range(3)] == ["own", "one", "two"]
    for client in plain[1:] + compressed:
        assert [await client.recv(), await client.recv()] == ["one", "two"]


@pytest.mark.both_loops
async def test_what_a_loop_iteration_corked_goes_out_in_batches(
    start_server: StartServer, batching: bool
) -> None:
    clients, connections = await open_raw(start_server, 300)
    before = batched()
    for i, connection in enumerate(connections):
        await connection.send(f"to {i}")  # corked: Server._flush_corked writes it
        await connection.send(b"and more")
    for i, client in enumerate(clients):
        assert [await client.next_event(), await client.next_event()] == [f"to {i}", b"and more"]
    assert batched() - before == (300 if batching else 0)
    for client in clients:
        await client.aclose()


@pytest.mark.both_loops
async def test_recv_leaves_its_write_to_the_batch_only_when_another_connection_waits_too(
    start_server: StartServer, batching: bool
) -> None:
    clients, connections = await open_raw(start_server, 2)

    async def answer_then_wait(connection: shardws.ServerConnection) -> Any:
        await connection.send("answer")
        return await connection.recv()

    before = batched()
    # both steps run in one loop iteration: the first connection is alone on
    # the server's list when its recv() waits, and writes at once; the
    # second one joins it and leaves its write to the batch
    tasks = [asyncio.create_task(answer_then_wait(c)) for c in connections]
    for client in clients:
        assert await client.next_event() == "answer"
    assert batched() - before == (1 if batching else 0)
    for i, client in enumerate(clients):
        client.send_text(f"next {i}")
    assert await asyncio.gather(*tasks) == ["next 0", "next 1"]
    for client in clients:
        await client.aclose()


@pytest.mark.both_loops
async def test_a_corked_write_the_kernel_takes_in_part_arrives_whole_and_in_order(
    start_server: StartServer, batching: bool
) -> None:
    server, peers, connections = await bare_peers(start_server, 2, 2**12, small=1)
    # 8 messages of 4000 bytes (each one chunk, under SPLIT_PAYLOAD_AT): 32 KB
    # corked, more than the first connection's socket takes at once
    messages = [bytes([i]) * 4000 for i in range(8)]
    for connection in connections:
        for message in messages:
            await connection.send(message)
    before = batched()
    server._flush_corked()  # as the loop is about to
    assert batched() - before == (2 if batching else 0)
    # the kernel took part of the first connection's: the rest is in the transport
    assert connections[0]._transport.get_write_buffer_size() > 0
    many = [f"small {i}" for i in range(20)]  # more than 8 chunks: written alone, not batched
    for connection in connections:
        for text in many:
            await connection.send(text)
    server._flush_corked()
    assert batched() - before == (2 if batching else 0)
    for sock, protocol, events in peers:
        assert await read_events(sock, protocol, events, 28) == messages + many
        sock.close()


async def test_a_write_that_raises_leaves_the_others_written(
    start_server: StartServer, batching: bool
) -> None:
    # default loop only: uvloop's transport methods cannot be replaced
    clients, connections = await open_raw(start_server, 3)
    broken = connections[1]
    broken._sock_fd = -1  # through transport.write(), which fails

    def write(data: Any) -> None:
        raise OSError("write failed")

    broken._transport.write = write  # type: ignore[method-assign]
    broken._transport.writelines = write  # type: ignore[method-assign]
    for connection in connections:
        await connection.send("corked")
    with pytest.raises(OSError, match="write failed"):
        connections[0]._server._flush_corked()  # as the loop will call it
    assert [c._flush_scheduled for c in connections] == [False] * 3
    for client in (clients[0], clients[2]):
        assert await client.next_event() == "corked"
        await client.aclose()
    broken._transport.abort()  # it could not even write its close frame
    assert await clients[1].until_eof() == []


async def test_shardws_no_io_uring_turns_batching_off(tmp_path: Any) -> None:
    code = "from shardws import speedups; print(speedups.batched_sends()[0])"
    env = {**os.environ, "SHARDWS_NO_IO_URING": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
    assert speedups.batched_sends(False) == (False, batched())
    assert speedups.batched_sends(None)[0] is False
    assert speedups.batched_sends(True)[0] is RING


# The two programs below run in a process of their own (a fork, a ring
# closed for good): both serve clients and run a body on them.
CLIENTS = """
import asyncio, os
from websockets.asyncio.client import connect
import shardws
from shardws import speedups

RING = speedups.broadcast_plain is not None and speedups.batched_sends()[0]

async def with_clients(count, body):
    connections, ready = [], asyncio.Event()

    async def handler(ws):
        connections.append(ws)
        if len(connections) == count:
            ready.set()
        await ws.wait_closed()

    async with shardws.serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        clients = [await connect(f"ws://127.0.0.1:{port}") for _ in range(count)]
        await asyncio.wait_for(ready.wait(), 10)
        await body(connections, clients)
        for client in clients:
            await client.close()

async def everyone_gets(clients, message):
    assert [await client.recv() for client in clients] == [message] * len(clients)
"""

FORKED = CLIENTS + """
async def broadcast(connections, clients):
    before = speedups.batched_sends()[1]
    shardws.broadcast(connections, f"from {os.getpid()}")
    await everyone_gets(clients, f"from {os.getpid()}")
    assert speedups.batched_sends()[1] - before == (2 if RING else 0)

asyncio.run(with_clients(2, broadcast))  # the parent sets up its ring
pid = os.fork()
if pid == 0:  # the child must not submit to the parent's ring: it sets up its own
    try:
        asyncio.run(with_clients(2, broadcast))
    except BaseException as exc:
        print("child:", repr(exc), flush=True)
        os._exit(1)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the child failed"
asyncio.run(with_clients(2, broadcast))  # the parent's ring still works
print("ok", RING)
"""

# 300 connections: the first batch of 256 finds the ring gone, the rest are
# written after it was dropped
RING_CLOSED = CLIENTS + """
async def close_the_ring(connections, clients):
    shardws.broadcast(connections, "through the ring")
    await everyone_gets(clients, "through the ring")
    # something closes every descriptor it does not know, the ring's too
    rings = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[io_uring]":
                rings.append(int(fd))
        except FileNotFoundError:  # the directory's own descriptor
            pass
    assert len(rings) == 1
    os.close(rings[0])
    before = speedups.batched_sends()[1]
    shardws.broadcast(connections, "one by one")
    await everyone_gets(clients, "one by one")
    assert speedups.batched_sends() == (False, before)
    for connection in connections:  # the end of the iteration's writes
        await connection.send("and the end of the iteration")
    await everyone_gets(clients, "and the end of the iteration")
    assert speedups.batched_sends() == (False, before)

if RING:
    asyncio.run(with_clients(300, close_the_ring))
    print("ok")
else:
    print("no ring")
"""


async def test_a_ring_closed_under_the_server_leaves_it_writing_one_by_one() -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(RING_CLOSED)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == ("ok" if RING else "no ring")


async def test_a_forked_child_batches_through_a_ring_of_its_own() -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(FORKED)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["ok", str(RING)]
