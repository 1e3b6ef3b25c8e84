"""Back-pressure holds on every loop: a client that does not read stops send().

CPython 3.12.0-3.12.7 and 3.13.0 shipped a default-loop ``writelines()`` that
never pauses the protocol (gh-127655). There, connections on that loop
join their chunks into one ``write()`` (``_join_writes``); uvloop's
``writelines()`` pauses everywhere.
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from shardws.asyncio import connection as connection_module

from .conftest import Accepted, StartServer, port_of
from .rawclient import RawClient

BIG = b"x" * 2**18  # above SPLIT_PAYLOAD_AT: header and payload go out as two chunks


@pytest.mark.both_loops
@pytest.mark.parametrize("affected", [False, True], ids=["fixed python", "affected python"])
async def test_send_to_a_client_that_does_not_read_pauses_and_stays_bounded(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, affected: bool
) -> None:
    # "fixed python" keeps the real value: on an affected Python it is True too.
    affected = affected or connection_module._WRITELINES_UNPAUSED
    monkeypatch.setattr(connection_module, "_WRITELINES_UNPAUSED", affected)
    acc = Accepted()
    server = await start_server(acc.handler, write_limit=2**14, compression=None)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    on_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
    assert connection._join_writes is (affected and not on_uvloop)
    sent = 0
    while not connection._write_paused:
        assert sent < 64, "send() never paused: the write buffer grows without bound"
        connection._protocol.send_binary(BIG)  # type: ignore[union-attr]
        connection._flush()
        sent += 1
    # paused: the buffer stays within one message of the limit
    assert connection._transport.get_write_buffer_size() <= 2**14 + len(BIG) + 16
    await client.aclose()


@pytest.mark.parametrize("join", [False, True])
async def test_flush_joins_the_chunks_into_one_write_when_asked(
    start_server: StartServer, join: bool
) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, compression=None)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    calls: list[tuple[str, int]] = []
    transport = connection._transport
    real_write, real_writelines = transport.write, transport.writelines

    def write(data: bytes) -> None:
        calls.append(("write", len(data)))
        real_write(data)

    def writelines(chunks: list[bytes]) -> None:
        calls.append(("writelines", len(chunks)))
        real_writelines(chunks)

    transport.write = write  # type: ignore[method-assign]
    transport.writelines = writelines  # type: ignore[method-assign]
    connection._join_writes = join
    connection._sock_fd = -1  # no direct writes (test_direct_writes.py): all via the transport
    await connection.send(BIG)
    connection._flush()
    header = 4 if len(BIG) < 65536 else 10
    # (the default loop's writelines() itself joins and calls write() on 3.11)
    assert calls[0] == (("write", header + len(BIG)) if join else ("writelines", 2))
    assert await client.next_event() == BIG
    await client.aclose()
