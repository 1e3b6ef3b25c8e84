"""The C fast paths against the Python methods they stand in for, on random input.

Each case feeds the same reads (valid and broken frames, split at random
points) to two connections of the same server, one served by the C methods
and one by the Python methods (``_data_received_py`` & co., the
specification), then sends three messages and receives what was queued.
Everything observable must match: the queue, what recv() returns, what
send() raises, the state, the close code and every byte written.
Deterministic (a fixed seed per test); in-process, with a transport that
records writes.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from shardws import speedups
from shardws.asyncio.connection import ServerConnection
from shardws.asyncio.server import FAST_METHODS, Server
from tests.protocol.wire import MASK, raw

from .conftest import StartServer
from .rawclient import upgrade_request

REQUEST = upgrade_request(80)


class RecordingTransport:
    """What a connection needs of a transport; keeps every byte written."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.out = bytearray()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: list[bytes]) -> None:
        self.out += b"".join(chunks)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        if not self.closing:  # as a transport does: connection_lost() follows
            self.closing = True
            asyncio.get_running_loop().call_soon(self.connection.connection_lost, None)

    abort = close


def frame(op: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    return raw((0x80 if fin else 0) | rsv | op, payload, mask=MASK if masked else None)


# (weight, what the peer sends)
PIECES: list[tuple[int, Callable[[random.Random], bytes]]] = [
    (30, lambda r: frame(1, r.choice(["hi", "κόσμε", "x" * r.randint(0, 300)]).encode())),
    (25, lambda r: frame(2, os.urandom(r.choice([0, 5, 125, 126, 200, 1001, 70000])))),
    (8, lambda r: frame(9, b"pp")),
    (6, lambda r: frame(1, b"frag", fin=False) + frame(0, b"ment")),
    (4, lambda r: frame(1, b"ok\xff\xfe")),  # invalid UTF-8
    (3, lambda r: frame(2, b"raw", masked=False)),
    (3, lambda r: frame(1, b"rsv", rsv=0x40)),
    (2, lambda r: frame(8, (1000).to_bytes(2, "big") + b"bye")),
    (2, lambda r: bytes([0x82, 0xFF]) + b"\x80" + bytes(7) + b"\x01\x02\x03\x04"),
    (2, lambda r: frame(r.choice([3, 0xB]), b"bad")),
]


def reads(rng: random.Random) -> list[bytes]:
    weights = [w for w, _ in PIECES]
    makers = rng.choices([m for _, m in PIECES], weights, k=rng.randint(1, 12))
    data = b"".join(make(rng) for make in makers)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def observe(server: Server, path: str, chunks: list[bytes]) -> tuple[Any, ...]:
    """Serve one connection with the C or the Python methods; all it did."""
    for name, python_name in FAST_METHODS:
        python = ServerConnection.__dict__[python_name]
        setattr(ServerConnection, name, FAST[name] if path == "c" else python)
    connection: ServerConnection = server._protocol_factory()  # type: ignore[attr-defined]
    transport = RecordingTransport(connection)
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(REQUEST)
    assert connection._protocol is not None  # no hook: the 101 is written at once
    transport.out.clear()  # the 101
    for chunk in chunks:
        connection.data_received(chunk)
        await asyncio.sleep(0)
    queued = list(connection._messages)
    sent = []
    for message in ("echo", b"\x00bin", "é" * 3000):
        try:
            await connection.send(message)
            sent.append("ok")
        except Exception as exc:  # noqa: BLE001 - the type is what is compared
            sent.append(type(exc).__name__)
    received = [await connection.recv() for _ in range(len(connection._messages))]
    protocol = connection._protocol
    state = (protocol.state.name, protocol.close_code, connection._queued_bytes)
    out = bytes(transport.out)
    transport.close()
    await connection.wait_closed()
    return queued, received, sent, state, out


if speedups.connection_fast_paths is not None:  # the pure build has only one path
    FAST = {name: ServerConnection.__dict__[name] for name, _ in FAST_METHODS}

    @pytest.mark.parametrize("seed", range(4))
    async def test_c_and_python_paths_do_the_same(
        start_server: StartServer, monkeypatch: pytest.MonkeyPatch, seed: int
    ) -> None:
        for name, _ in FAST_METHODS:  # restored after the test
            monkeypatch.setattr(ServerConnection, name, ServerConnection.__dict__[name])
        servers = [
            await start_server(
                lambda ws: ws.wait_closed(),
                compression=None,
                max_size=max_size,
                max_queue=max_queue,
                ping_interval=None,
            )
            for max_size in (1000, 2**20)
            for max_queue in (2, 16, None)
        ]
        rng = random.Random(seed)
        for case in range(60):
            chunks = reads(rng)
            server = rng.choice(servers)
            c = await observe(server, "c", chunks)
            python = await observe(server, "python", chunks)
            assert c == python, (seed, case, [len(chunk) for chunk in chunks])
