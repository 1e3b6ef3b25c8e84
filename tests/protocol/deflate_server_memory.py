"""Server RSS per idle connection, with and without permessage-deflate (docs/compression.md).

Not a test: run ``PYTHONPATH=. python tests/protocol/deflate_server_memory.py``
(``--connections N``, default 5000; about 30 s in all).

For each row a fresh server subprocess runs ``shardws.serve(echo, "127.0.0.1",
0, ...)`` (the default ``compression="deflate"``, a configured factory, or
``compression=None``). This
process opens the connections with raw sockets, in waves of 100, each
sending the handshake request of the row (so the server negotiates what a
browser would get) and then staying idle. The server's VmRSS
(``/proc/PID/status``) is read:

* before: after a warm-up wave of 100 connections that each exchanged a
  message and closed (lazy imports, first allocations of the allocator);
* fresh: once every connection has completed its handshake;
* after one message: once every connection has sent one small compressed
  text message (``{"type": "chat", "text": "hello ..."}``) and received its
  echo.

Each figure is (RSS - before) / connections, in KiB. Both processes raise
RLIMIT_NOFILE's soft limit to the hard one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import zlib

WAVE = 100

BROWSER = "permessage-deflate; client_max_window_bits"

# (label, keyword arguments of serve(), Sec-WebSocket-Extensions offer)
ROWS = [
    ("defaults: 12-bit windows, memLevel 5, context takeover", "", BROWSER),
    (
        "defaults, max_live_contexts=None (every stream stays live)",
        "extensions=[ServerPerMessageDeflateFactory(server_max_window_bits=12, "
        "client_max_window_bits=12, compress_settings={'memLevel': 5}, max_live_contexts=None)]",
        BROWSER,
    ),
    (
        "defaults, client offers no context takeover (both directions)",
        "",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "client_max_window_bits",
    ),
    ("compression=None", "compression=None", BROWSER),
]

SERVER = """
import asyncio, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
import shardws
from shardws.protocol.deflate import ServerPerMessageDeflateFactory

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with shardws.serve(echo, "127.0.0.1", 0, KWARGS) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

asyncio.run(main())
"""

TEXT = b'{"type": "chat", "text": "hello from a mostly idle client"}'


def client_frame(compressed: bool) -> bytes:
    """One masked text frame carrying TEXT, compressed (RSV1) or not."""
    if compressed:
        # A fresh raw DEFLATE stream is valid under any negotiated window.
        encoder = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -9)
        payload = (encoder.compress(TEXT) + encoder.flush(zlib.Z_SYNC_FLUSH))[:-4]
    else:
        payload = TEXT
    assert len(payload) < 126
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81 | (0x40 if compressed else 0), 0x80 | len(payload)]) + key + masked


class Client(asyncio.Protocol):
    """A raw WebSocket client: handshake, then at most one message and its echo."""

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.handshake: asyncio.Future[bytes] = loop.create_future()
        self.echo: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.handshake.done():
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.buffer = rest
            self.handshake.set_result(head)
        # Server frames are unmasked; the echo of TEXT is under 126 bytes.
        if (
            self.echo is not None
            and not self.echo.done()
            and len(self.buffer) >= 2
            and len(self.buffer) >= 2 + (self.buffer[1] & 0x7F)
        ):
            self.echo.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        for future in (self.handshake, self.echo):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("closed by the server"))

    def send(self, frame: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.echo = asyncio.get_running_loop().create_future()
        self.transport.write(frame)
        if self.buffer:  # an echo can only follow the message
            self.data_received(b"")
        return self.echo


def upgrade_request(port: int, offer: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"
    ).encode()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settled_rss(pid: int, deadline: float = 10.0) -> int:
    """VmRSS once two reads 100 ms apart agree within 16 KiB (the server caught up)."""
    end = time.monotonic() + deadline
    last = rss_kib(pid)
    while time.monotonic() < end:
        time.sleep(0.1)
        now = rss_kib(pid)
        if abs(now - last) <= 16:
            return now
        last = now
    return last


async def open_wave(port: int, offer: str, count: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(count):
        _, client = await loop.create_connection(
            lambda: Client(upgrade_request(port, offer)), "127.0.0.1", port
        )
        clients.append(client)
    heads = await asyncio.gather(*(c.handshake for c in clients))
    for head in heads:
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake failed: {head[:200]!r}")
    return clients


async def measure_row(kwargs: str, offer: str, connections: int) -> dict[str, object]:
    program = SERVER.replace("KWARGS", kwargs)
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=errors
    )
    clients: list[Client] = []
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"server did not start: {line!r}")
        port = int(line)
        # Warm-up: one wave that exchanges a message and closes.
        warm = await open_wave(port, offer, WAVE)
        extensions = re.search(rb"(?im)^sec-websocket-extensions: *(.*)$", await warm[0].handshake)
        negotiated = extensions.group(1).decode() if extensions else ""
        frame = client_frame(compressed=bool(negotiated))
        await asyncio.gather(*(c.send(frame) for c in warm))
        for c in warm:
            assert c.transport is not None
            c.transport.close()
        await asyncio.gather(*(c.lost for c in warm))  # our side closed; settled_rss waits for the server
        before = settled_rss(server.pid)
        for start in range(0, connections, WAVE):
            clients += await open_wave(port, offer, min(WAVE, connections - start))
        fresh = settled_rss(server.pid)
        for start in range(0, connections, WAVE):
            await asyncio.gather(*(c.send(frame) for c in clients[start : start + WAVE]))
        after = settled_rss(server.pid)
    except BaseException:
        errors.seek(0)
        sys.stderr.write(errors.read()[-3000:].decode(errors="replace"))
        raise
    finally:
        errors.close()
        for c in clients:
            if c.transport is not None:
                c.transport.abort()
        server.kill()  # its RSS is all this wanted; a graceful close takes seconds
        server.wait(timeout=30)
    return {
        "negotiated": negotiated or "(none)",
        "fresh": (fresh - before) / connections,
        "after": (after - before) / connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    print(f"{args.connections} connections; message: {len(TEXT)} bytes each way\n")
    print("| server / client offer | negotiated | KiB/conn, fresh | KiB/conn, after one message |")
    print("| --- | --- | ---: | ---: |")
    for label, kwargs, offer in ROWS:
        row = asyncio.run(measure_row(kwargs, offer, args.connections))
        print(
            f"| {label} | `{row['negotiated']}` | {row['fresh']:.1f} | {row['after']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
