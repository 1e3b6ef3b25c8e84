"""Throughput benchmark: shardws against websockets, picows and aiohttp, one load generator.

    python scripts/bench.py [--quick] [--repeat N] [--servers A,B] [--tests A,B]
                            [--workers N] [--json PATH] [--write docs/benchmarks.md]

Every server runs alone in a subprocess pinned to one CPU (uvloop, keepalive
pings off) and is driven by the same load generator in this process, pinned
to another CPU: raw ``asyncio.Protocol`` clients on uvloop that send
pre-built masked frames and count the answers (by bytes where every answer
has the same size, by scanning frame headers where permessage-deflate makes
the sizes vary). Identical echo semantics everywhere: each server echoes a
message with its type, answers the text ``count`` with its number of open
connections and ``bcast:ROUNDS:SIZE[:PER]`` by broadcasting ROUNDS rounds of
PER (default 1) text messages of SIZE bytes to every connection, yielding to
the loop between rounds (each server writes or groups the PER messages of a
round its own way).

Tests (each also with permessage-deflate negotiated, ``+deflate``):

* ``rr32``: 32 B request/response, 100 connections, 1 message in flight each;
* ``pipe32``: 32 B pipelined on 1 connection, 2 batches of 64 in flight;
* ``big16k``: 16 KiB request/response, 10 connections, 1 in flight each;
* ``broadcast``: deliveries/s of 32 B broadcasts to 1000 connections, one
  broadcast per loop iteration;
* ``broadcast8``: the same with 8 broadcasts per loop iteration (a publisher
  that publishes in bursts, or several publishers at once);
* ``handshake``: completed upgrades/s, 50 concurrent connect + upgrade +
  close handshake loops;
* ``idle_rss``: server RSS growth per idle open connection (5000 open, on a
  fresh server process), KiB.

``bare`` (a uvloop TCP echo) is the generator's ceiling for the echo tests;
``bare-task`` (the same echo answered by a task per connection awaiting a
future per read) is the floor of the websockets API's model, where a
handler task awaits ``recv()``; ``bare-ws`` (a WebSocket server reduced to
the upgrade and a Python loop of ``transport.write()``) is the broadcast
ceiling of any server that writes each delivery.
Each pass measures every server in turn; the tables report the median of
the passes, the JSON file every point (with the CPU use of the generator
and of the server during the point).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------- the servers

PRELUDE = r"""
import asyncio, os, resource, sys
if sys.argv[1] != "-":
    os.sched_setaffinity(0, {int(sys.argv[1])})
DEFLATE = sys.argv[2] == "1"
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
import uvloop
CLIENTS = set()
"""

SERVE_UNTIL_STDIN_CLOSES = r"""
    print(PORT, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
"""

BARE = PRELUDE + r"""
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.write = transport.write

    def data_received(self, data):
        self.write(data)

async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0, backlog=4096)
    PORT = server.sockets[0].getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES + r"""
uvloop.run(main())
"""

# The floor of the websockets API's model for the echo tests: a uvloop TCP
# echo whose answers come from a task per connection that awaits a future
# per read (no WebSocket at all), as a handler awaiting recv() does.
BARE_TASK = PRELUDE + r"""
import collections

class TaskEcho(asyncio.Protocol):
    def connection_made(self, transport):
        self.write = transport.write
        self.queue = collections.deque()
        self.waiter = None
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self.run())

    def data_received(self, data):
        self.queue.append(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc):
        self.task.cancel()

    async def recv(self):
        while not self.queue:
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.queue.popleft()

    async def run(self):
        while True:
            self.write(await self.recv())

async def main():
    server = await asyncio.get_running_loop().create_server(TaskEcho, "127.0.0.1", 0, backlog=4096)
    PORT = server.sockets[0].getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES + r"""
uvloop.run(main())
"""

# The ceiling of broadcast for a server that writes each delivery (one
# syscall each): a WebSocket server reduced to the upgrade, the bench's
# commands and a Python loop of transport.write() over prebuilt frames.
BARE_WS = PRELUDE + r"""
import base64, hashlib

def frame(opcode, payload):
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload

async def broadcast(rounds, payload, per):
    data = frame(1, payload)
    for _ in range(rounds):
        for _ in range(per):
            for transport in list(CLIENTS):
                transport.write(data)
        await asyncio.sleep(0)

class BareWebSocket(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""
        self.open = False

    def data_received(self, data):
        buf = self.buffer + data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            key = next(line.split(b":", 1)[1].strip() for line in buf[:end].split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.open = True
            CLIENTS.add(self.transport)
            buf = buf[end + 4:]
        while len(buf) >= 6:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + 4 + n:
                break
            mask = buf[pos:pos + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[pos + 4:pos + 4 + n]))
            opcode, buf = buf[0] & 0x0F, buf[pos + 4 + n:]
            if opcode == 8:
                self.transport.write(frame(8, payload[:2]))
                self.transport.close()
                break
            if payload == b"count":
                self.transport.write(frame(1, str(len(CLIENTS)).encode()))
            elif payload.startswith(b"bcast:"):
                _, rounds, size, *per = payload.split(b":")
                asyncio.ensure_future(broadcast(int(rounds), b"x" * int(size), int(per[0]) if per else 1))
        self.buffer = buf

    def connection_lost(self, exc):
        CLIENTS.discard(self.transport)

async def main():
    server = await asyncio.get_running_loop().create_server(BareWebSocket, "127.0.0.1", 0, backlog=4096)
    PORT = server.sockets[0].getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES + r"""
uvloop.run(main())
"""

# The handler of the two servers of the websockets API: shardws runs it
# unchanged as ``import shardws as websockets``; it is also the module that
# ``shardws serve --workers N`` serves.
HANDLER = r"""
import asyncio
import MODULE as websockets

CLIENTS = set()

async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and message == "count":
                await ws.send(str(len(CLIENTS)))
            elif isinstance(message, str) and message.startswith("bcast:"):
                _, rounds, size, *per = message.split(":")
                text = "x" * int(size)
                for _ in range(int(rounds)):
                    for _ in range(int(per[0]) if per else 1):
                        websockets.broadcast(CLIENTS, text)
                    await asyncio.sleep(0)
            else:
                await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)
"""

WEBSOCKETS_API = PRELUDE + HANDLER + r"""
async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, ping_interval=None, backlog=4096,
                                compression="deflate" if DEFLATE else None) as server:
        PORT = next(iter(server.sockets)).getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES.replace("\n    ", "\n        ") + r"""
uvloop.run(main())
"""

AIOHTTP = PRELUDE + r"""
from aiohttp import WSMsgType, web

async def handler(request):
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=2**20, compress=DEFLATE)
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "count":
                    await ws.send_str(str(len(CLIENTS)))
                elif msg.data.startswith("bcast:"):
                    _, rounds, size, *per = msg.data.split(":")
                    text = "x" * int(size)
                    for _ in range(int(rounds)):
                        for _ in range(int(per[0]) if per else 1):
                            for client in list(CLIENTS):
                                if not client.closed:
                                    await client.send_str(text)
                        await asyncio.sleep(0)
                else:
                    await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    finally:
        CLIENTS.discard(ws)
    return ws

async def main():
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    PORT = site._server.sockets[0].getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES + r"""
uvloop.run(main())
"""

PICOWS = PRELUDE + r"""
from picows import WSListener, WSMsgType, ws_create_server

async def broadcast(rounds, text, per):
    for _ in range(rounds):
        for _ in range(per):
            for transport in list(CLIENTS):
                transport.send(WSMsgType.TEXT, text)
        await asyncio.sleep(0)

class Listener(WSListener):
    def on_ws_connected(self, transport):
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport):
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type is WSMsgType.TEXT and frame.get_payload_as_bytes() == b"count":
            transport.send(WSMsgType.TEXT, str(len(CLIENTS)).encode())
        elif frame.msg_type is WSMsgType.TEXT and frame.get_payload_as_bytes().startswith(b"bcast:"):
            _, rounds, size, *per = frame.get_payload_as_bytes().split(b":")
            asyncio.ensure_future(broadcast(int(rounds), b"x" * int(size), int(per[0]) if per else 1))
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_bytes())

async def main():
    server = await ws_create_server(lambda request: Listener(), "127.0.0.1", 0, backlog=4096)
    PORT = server.sockets[0].getsockname()[1]
""" + SERVE_UNTIL_STDIN_CLOSES + r"""
uvloop.run(main())
"""

# name: (program, extra environment, speaks permessage-deflate, speaks WebSocket)
SERVERS: dict[str, tuple[str, dict[str, str], bool, bool]] = {
    "bare": (BARE, {}, False, False),
    "bare-task": (BARE_TASK, {}, False, False),
    "bare-ws": (BARE_WS, {}, False, True),
    "shardws": (WEBSOCKETS_API.replace("import MODULE", "import shardws"), {}, True, True),
    "shardws-pure": (WEBSOCKETS_API.replace("import MODULE", "import shardws"),
                     {"SHARDWS_NO_SPEEDUPS": "1"}, True, True),
    "websockets": (WEBSOCKETS_API.replace("import MODULE", "import websockets"), {}, True, True),
    "picows": (PICOWS, {}, False, True),
    "aiohttp": (AIOHTTP, {}, True, True),
}
PEERS = ("websockets", "picows")


def server_env(extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (0 for the ones gone)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class ServerProcess:
    """One benchmarked server in a subprocess pinned to ``cpu``; stops when stdin closes."""

    def __init__(self, name: str, cpu: int, deflate: bool, profile: Path | None = None) -> None:
        program, extra, _, _ = SERVERS[name]
        self.name = name
        if profile is not None:  # cProfile the whole life of the server, written when it stops
            program = program.replace(
                "uvloop.run(main())", f"import cProfile\ncProfile.run('uvloop.run(main())', {str(profile)!r})")
        # stderr goes to a file (shown if the server does not start): picows
        # prints a line per write to a connection the load generator closed.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program, str(cpu), "1" if deflate else "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            env=server_env(extra), cwd="/",
        )
        assert self.proc.stdout is not None
        poller = select.poll()  # not select(): the generator may hold fds above 1024
        poller.register(self.proc.stdout, select.POLLIN)
        line = self.proc.stdout.readline() if poller.poll(30_000) else b""
        if not line.strip().isdigit():
            tail = self.stderr_tail()
            self.stop()
            raise RuntimeError(f"{name} server did not start:\n{tail}")
        self.port = int(line)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].decode(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


class WorkersProcess:
    """``shardws serve bench_handler:handler --workers N``: the supervisor, not pinned."""

    def __init__(self, workers: int, deflate: bool) -> None:
        self.dir = tempfile.TemporaryDirectory()
        Path(self.dir.name, "bench_handler.py").write_text(
            HANDLER.replace("import MODULE", "import shardws"))
        with socket.socket() as probe:  # a free port: bind port 0, then release it
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        env = server_env({})
        env["PYTHONPATH"] = self.dir.name + os.pathsep + env["PYTHONPATH"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shardws", "serve", "bench_handler:handler",
             "--workers", str(workers), "--host", "127.0.0.1", "--port", str(self.port),
             "--compression", "deflate" if deflate else "none", "--ping-interval", "0",
             "--control", "none", "--backlog", "4096", "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr,
            env=env, cwd=self.dir.name,
        )
        deadline = time.monotonic() + 30
        while True:  # ready when every worker accepts: poll a few connections
            try:
                for _ in range(2 * workers):
                    socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.stderr_tail()
                    self.stop()
                    raise RuntimeError(f"shardws serve did not start:\n{tail}") from None
                time.sleep(0.05)

    def pids(self) -> list[int]:
        try:
            me = psutil.Process(self.proc.pid)
            return [self.proc.pid] + [c.pid for c in me.children(recursive=True)]
        except psutil.Error:
            return []

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].decode(errors="replace")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
        self.dir.cleanup()


# ------------------------------------------------------ the load generator

MASK = b"\x37\xfa\x21\x3d"
CLOSE_CODE = b"\x03\xe8"  # 1000


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame, FIN set, RSV bits clear (RFC 6455 5.2, 5.3)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 2**16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    keystream = (MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return head + MASK + masked


def server_frame_size(n: int) -> int:
    """Bytes of an unmasked, uncompressed server frame carrying ``n`` bytes."""
    return n + (2 if n < 126 else 4 if n < 2**16 else 10)


CLOSE_FRAME = client_frame(0x8, CLOSE_CODE)


def payload(size: int) -> bytes:
    """``size`` bytes of text-like data (words), the same every run: deflate gets real work."""
    words = [b"alpha", b"bravo", b"shard", b"socket", b"42", b"frame", b"{", b'"id":', b"},"]
    rnd = random.Random(size)
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words) + b" "
    return bytes(out[:size])


def upgrade_request(deflate: bool) -> bytes:
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
    return (
        "GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(b'benchmark-key-16').decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{ext}\r\n"
    ).encode()


class FrameScanner:
    """Counts complete server frames in a byte stream, across reads.

    Keeps the bytes of a partial header (``partial``) and the bytes still to
    come of the current frame (``skip``); reads only the 2-10 header bytes of
    each frame (RFC 6455 5.2: the 7-bit length, or 126 + 16 bits, or
    127 + 64 bits; server frames are unmasked).
    """

    __slots__ = ("partial", "skip")

    def __init__(self) -> None:
        self.partial = b""
        self.skip = 0

    def feed(self, data: bytes) -> int:
        """The number of frames that ``data`` completes."""
        if self.partial:
            data = self.partial + data
            self.partial = b""
        n = len(data)
        i = self.skip
        frames = 0
        if i:
            if i > n:
                self.skip = i - n
                return 0
            frames = 1
        while i + 2 <= n:
            length = data[i + 1] & 0x7F
            if length < 126:
                end = i + 2 + length
            elif length == 126:
                if i + 4 > n:
                    break
                end = i + 4 + int.from_bytes(data[i + 2 : i + 4], "big")
            else:
                if i + 10 > n:
                    break
                end = i + 10 + int.from_bytes(data[i + 2 : i + 10], "big")
            if end > n:
                self.skip = end - n
                return frames
            frames += 1
            i = end
        self.skip = 0
        if i < n:
            self.partial = data[i:]
        return frames


class Client(asyncio.Protocol):
    """A raw WebSocket (or, for ``bare``, TCP) load client.

    Counts the server's complete frames in ``count``: by bytes when every
    answer has ``answer`` bytes, else (``answer == 0``) with a FrameScanner.
    Every ``per`` frames it writes ``chunk`` (``per == 0``: never), or calls
    ``on_done(self)`` once if ``chunk`` is empty.
    """

    def __init__(self, request: bytes | None, answer: int) -> None:
        self.request = request
        self.answer = answer
        self.scanner = None if answer else FrameScanner()
        self.count = 0
        self.pending = 0
        self.per = 0
        self.credit = 0
        self.chunk = b""
        self.on_done: Callable[[Client], None] | None = None
        self.first = b""  # the first two bytes after the handshake (sanity check)
        self.head = b""
        self.upgraded = request is None
        self.extensions = ""
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.request is None:
            self.opened.set_result(None)
        else:
            self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            data = self.handshake(data)
            if not data:
                return
        if not self.first:
            self.first = data[:2]
        if self.scanner is None:
            total = self.pending + len(data)
            done = total // self.answer
            self.pending = total - done * self.answer
        else:
            done = self.scanner.feed(data)
        if done:
            self.count += done
            per = self.per
            if per:
                credit = self.credit + done
                if credit >= per:
                    k = credit // per
                    self.credit = credit - k * per
                    if self.chunk:
                        self.transport.write(self.chunk if k == 1 else self.chunk * k)
                    else:
                        self.per = 0
                        self.on_done(self)  # type: ignore[misc]
                else:
                    self.credit = credit

    def handshake(self, data: bytes) -> bytes:
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.head[:end], self.head[end + 4 :]
        self.head = b""
        self.upgraded = True
        if not head.startswith(b"HTTP/1.1 101"):
            if not self.opened.done():
                self.opened.set_exception(RuntimeError(head[:300].decode("latin-1")))
            return b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-extensions:"):
                self.extensions = line.split(b":", 1)[1].strip().decode("latin-1")
        self.opened.set_result(None)
        return rest

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self, websocket: bool) -> None:
        """Start the closing handshake (the server closes TCP), or close TCP for ``bare``."""
        self.per = 0
        if self.transport.is_closing():
            return
        if websocket:
            self.transport.write(CLOSE_FRAME)
        else:
            self.transport.close()


class Control(asyncio.Protocol):
    """One plain (uncompressed) connection that asks the server ``count``."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.buffer = bytearray()
        self.upgraded = False
        self.listening = True
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(upgrade_request(False))

    def data_received(self, data: bytes) -> None:
        if not self.listening:
            return
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                self.upgraded = True
                del self.buffer[: end + 4]
                self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    async def count(self) -> int:
        self.buffer.clear()
        self.transport.write(client_frame(0x1, b"count"))
        deadline = time.monotonic() + 10
        while len(self.buffer) < 2 or len(self.buffer) < 2 + (self.buffer[1] & 0x7F):
            if time.monotonic() > deadline:
                raise RuntimeError("no answer to count")
            await asyncio.sleep(0.002)
        return int(self.buffer[2 : 2 + (self.buffer[1] & 0x7F)])

    async def wait_registered(self, n: int, timeout: float = 60.0) -> None:
        """Until the server's handlers hold ``n`` connections (this one included)."""
        deadline = time.monotonic() + timeout
        while await self.count() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not register {n} connections")
            await asyncio.sleep(0.02)


async def connect(port: int, factory: Callable[[], asyncio.Protocol]) -> Any:
    _, protocol = await asyncio.get_running_loop().create_connection(factory, "127.0.0.1", port)
    await asyncio.wait_for(protocol.opened, 30)  # type: ignore[attr-defined]
    return protocol


async def open_clients(port: int, n: int, request: bytes | None, answer: int) -> list[Client]:
    """``n`` connections, at most 100 handshakes in flight (no listen backlog overflows)."""
    gate = asyncio.Semaphore(100)

    async def one() -> Client:
        async with gate:
            client: Client = await connect(port, lambda: Client(request, answer))
            return client

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def close_clients(clients: list[Client], websocket: bool) -> None:
    """Closing handshakes, then wait (2 s at most) for the server to close TCP."""
    for c in clients:
        c.close(websocket)
    if websocket:
        await asyncio.wait([c.lost for c in clients], timeout=2.0)
    for c in clients:
        c.transport.abort()


CPUS = (0, 0)  # (the servers' CPU, the generator's CPU), set by main()


def cpu_busy() -> tuple[float, float]:
    """Busy seconds (all but idle and iowait) of the servers' CPU and of the generator's CPU."""
    times = psutil.cpu_times(percpu=True)
    return tuple(sum(times[c]) - times[c].idle - getattr(times[c], "iowait", 0.0)  # type: ignore[return-value]
                 for c in CPUS)


class Point:
    """Context for one measured window: wall time, generator and server CPU %.

    ``others`` is the CPU % that the servers' CPU and the generator's CPU
    spent on anything but the server and the generator (other jobs, and
    some kernel work not charged to a process): a point with much of it was
    disturbed.
    """

    def __init__(self, server_pids: list[int]) -> None:
        self.pids = server_pids

    def __enter__(self) -> Point:
        self.wall = time.perf_counter()
        self.gen = time.process_time()
        self.srv = process_cpu(self.pids)
        self.busy = cpu_busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.gen = (time.process_time() - self.gen) / self.wall * 100
        self.srv = (process_cpu(self.pids) - self.srv) / self.wall * 100
        busy = [(b - a) / self.wall * 100 for a, b in zip(self.busy, cpu_busy(), strict=True)]
        self.others = (max(0.0, busy[0] - self.srv), max(0.0, busy[1] - self.gen))


# test name: (clients, message size, frames per refill, refills in flight)
ECHO_TESTS = {"rr32": (100, 32, 1, 1), "pipe32": (1, 32, 64, 2), "big16k": (10, 16384, 1, 1)}
TESTS = ("rr32", "pipe32", "big16k", "broadcast", "broadcast8", "handshake", "idle_rss")
# broadcasts per loop iteration
BROADCAST_TESTS = {"broadcast": 1, "broadcast8": 8}
UNITS = {"rr32": "msg/s", "pipe32": "msg/s", "big16k": "msg/s", "broadcast": "deliveries/s",
         "broadcast8": "deliveries/s",
         "handshake": "handshakes/s", "idle_rss": "KiB/connection"}


async def echo_rate(server: Any, test: str, websocket: bool, deflate: bool,
                    cfg: argparse.Namespace) -> tuple[float, Point]:
    n_clients, size, per, depth = ECHO_TESTS[test]
    frame = client_frame(0x2, payload(size))
    # bare echoes the masked frame as is; a WebSocket server answers unmasked,
    # with a fixed size unless compressed (then: scan the headers)
    answer = len(frame) if not websocket else 0 if deflate else server_frame_size(size)
    request = upgrade_request(deflate) if websocket else None
    clients = await open_clients(server.port, n_clients, request, answer)
    if deflate and "permessage-deflate" not in clients[0].extensions:
        await close_clients(clients, websocket)
        raise RuntimeError(f"permessage-deflate not negotiated: {clients[0].extensions!r}")
    chunk = frame * per
    for c in clients:
        c.per, c.chunk = per, chunk
        c.transport.write(chunk * depth)
    try:
        await asyncio.sleep(cfg.warmup)
        start = sum(c.count for c in clients)
        with Point(server.pids()) as point:
            await asyncio.sleep(cfg.seconds)
            end = sum(c.count for c in clients)
    finally:
        await close_clients(clients, websocket)
    expected = frame[:1] if not deflate else bytes([frame[0] | 0x40])
    firsts = {c.first[:1] for c in clients}
    if not firsts <= {frame[:1], expected}:
        raise RuntimeError(f"unexpected answer {firsts} to {frame[:2]!r}")
    return (end - start) / point.wall, point


async def broadcast_rate(server: Any, test: str, deflate: bool,
                         cfg: argparse.Namespace) -> tuple[float, Point]:
    n = cfg.broadcast_connections
    per = BROADCAST_TESTS[test]
    control: Control = await connect(server.port, Control)
    clients = await open_clients(server.port, n, upgrade_request(deflate), 0 if deflate else 34)
    try:
        await control.wait_registered(n + 1)
        control.listening = False
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        remaining = [n]

        def finished(c: Client) -> None:
            remaining[0] -= 1
            if not remaining[0] and not done.done():
                done.set_result(None)

        for c in clients:
            c.count = c.credit = 0
            c.per, c.chunk, c.on_done = cfg.rounds * per, b"", finished
        with Point(server.pids()) as point:
            control.transport.write(client_frame(0x1, f"bcast:{cfg.rounds}:32:{per}".encode()))
            await asyncio.wait_for(done, 120)
    finally:
        await close_clients(clients, True)
        control.transport.abort()
    return n * cfg.rounds * per / point.wall, point


class Upgrader(asyncio.Protocol):
    """One handshake: upgrade, send a close frame, wait until the server closes TCP.

    RFC 6455 7.1.1: "the server SHOULD close the underlying TCP connection
    first, so that it holds the TIME_WAIT state and not the client" -- the
    generator's ephemeral ports stay free however many handshakes it makes.
    """

    def __init__(self, request: bytes, done: asyncio.Future[bool]) -> None:
        self.request = request
        self.done = done
        self.upgraded = False
        self.head = b""
        self.transport: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.upgraded:  # the server's close frame: the server closes TCP next
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        self.upgraded = self.head.startswith(b"HTTP/1.1 101")
        if not self.upgraded:
            self.transport.close()
            return
        self.transport.write(CLOSE_FRAME)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.upgraded)


async def handshake_rate(server: Any, deflate: bool, cfg: argparse.Namespace) -> tuple[float, Point]:
    loop = asyncio.get_running_loop()
    request = upgrade_request(deflate)
    counted = [0, 0]  # upgrades, failures
    stop = [False]

    async def worker() -> None:
        while not stop[0]:
            done: asyncio.Future[bool] = loop.create_future()
            await loop.create_connection(lambda d=done: Upgrader(request, d), "127.0.0.1", server.port)
            ok = await asyncio.wait_for(done, 10)
            counted[0 if ok else 1] += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(cfg.handshake_loops)]
    try:
        await asyncio.sleep(cfg.warmup)
        start = counted[0]
        with Point(server.pids()) as point:
            await asyncio.sleep(cfg.seconds)
            end = counted[0]
    finally:
        stop[0] = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors or counted[1]:
        raise RuntimeError(f"{counted[1]} failed upgrades; {errors[:1]}")
    return (end - start) / point.wall, point


async def idle_rss(name: str, cpu: int, deflate: bool, cfg: argparse.Namespace) -> tuple[float, Point]:
    """KiB of server RSS per idle connection, on a fresh server process."""
    server = ServerProcess(name, cpu, deflate)
    clients: list[Client] = []
    try:
        control: Control = await connect(server.port, Control)
        await control.wait_registered(1)
        with Point(server.pids()) as point:
            before = server.rss_kib()
            clients = await open_clients(server.port, cfg.idle_connections,
                                         upgrade_request(deflate), 0)
            await control.wait_registered(cfg.idle_connections + 1)
            after = server.rss_kib()
        if deflate and "permessage-deflate" not in clients[0].extensions:
            raise RuntimeError(f"permessage-deflate not negotiated: {clients[0].extensions!r}")
    finally:
        server.stop(kill=True)
        for c in clients:
            c.transport.abort()
        await asyncio.sleep(0.05)  # let the loop close their sockets
    return (after - before) / cfg.idle_connections, point


# ----------------------------------------------------------------- driver


def applies(server: str, test: str, deflate: bool) -> bool:
    """Whether ``test`` is measured for ``server`` (a '-' in the table otherwise)."""
    if server.startswith("shardws-w"):
        return test not in BROADCAST_TESTS and test != "idle_rss"
    if server == "bare-ws":
        return test in BROADCAST_TESTS and not deflate
    if test == "broadcast8" and deflate:  # broadcast +deflate already shows compression's cost
        return False
    _, _, speaks_deflate, websocket = SERVERS[server]
    if deflate and not speaks_deflate:
        return False
    return websocket or test in ECHO_TESTS


async def measure(cfg: argparse.Namespace, cpus: tuple[int, int]) -> list[dict[str, Any]]:
    """Every point of every pass: each pass measures every server in turn, test by test.

    The long-lived servers (one per server and mode) run for the whole
    measurement (an idle one costs nothing), so a burst of load from other
    jobs on a shared machine spoils one pass of each server rather than
    every pass of one server. ``idle_rss`` starts a fresh server each time.
    """
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    modes = [m for m in (False, True) if m in cfg.modes]
    points: list[dict[str, Any]] = []
    servers: dict[tuple[str, bool], Any] = {}
    try:
        for deflate in modes:
            for name in cfg.servers:
                if any(applies(name, t, deflate) for t in cfg.tests if t != "idle_rss"):
                    if name.startswith("shardws-w"):
                        servers[name, deflate] = WorkersProcess(int(name[9:]), deflate)
                    else:
                        servers[name, deflate] = ServerProcess(
                            name, cpus[0], deflate, profile_path(cfg, name, deflate))
        for n in range(cfg.repeat):
            for deflate in modes:
                for test in cfg.tests:
                    for name in cfg.servers:
                        if not applies(name, test, deflate):
                            continue
                        row = {"pass": n + 1, "test": test, "deflate": deflate, "server": name,
                               "unit": UNITS[test]}
                        try:
                            if test == "idle_rss":
                                value, point = await idle_rss(name, cpus[0], deflate, cfg)
                            else:
                                server = servers[name, deflate]
                                websocket = name.startswith("shardws-w") or SERVERS[name][3]
                                if test in ECHO_TESTS:
                                    value, point = await echo_rate(server, test, websocket, deflate, cfg)
                                elif test in BROADCAST_TESTS:
                                    value, point = await broadcast_rate(server, test, deflate, cfg)
                                else:
                                    value, point = await handshake_rate(server, deflate, cfg)
                            row.update(value=value, seconds=round(point.wall, 3),
                                       generator_cpu=round(point.gen, 1), server_cpu=round(point.srv, 1),
                                       others_cpu=[round(x, 1) for x in point.others])
                            shown = f"{value:12,.1f}" if test == "idle_rss" else f"{value:12,.0f}"
                            print(f"pass {n + 1}  {label(test, deflate):18s} {name:13s} {shown} "
                                  f"{UNITS[test]:15s} CPU % generator {point.gen:3.0f} server "
                                  f"{point.srv:3.0f} others {point.others[0]:3.0f} / "
                                  f"{point.others[1]:3.0f}", flush=True)
                        except Exception as exc:  # one broken point does not spoil the run
                            row.update(value=None, error=repr(exc)[:500])
                            print(f"pass {n + 1}  {label(test, deflate):18s} {name:13s} FAILED: "
                                  f"{exc!r}"[:300], flush=True)
                        points.append(row)
    finally:
        for server in servers.values():
            server.stop()
    return points


def profile_path(cfg: argparse.Namespace, name: str, deflate: bool) -> Path | None:
    if not cfg.profile or name == "bare":
        return None
    cfg.profile.mkdir(parents=True, exist_ok=True)
    return cfg.profile / f"{name}{'-deflate' if deflate else ''}.pstats"


def print_profiles(cfg: argparse.Namespace) -> None:
    """The top functions (own time) of every profiled server."""
    import pstats

    for path in sorted(cfg.profile.glob("*.pstats")):
        print(f"\n==== {path} (cProfile of the whole run of that server; top 15 by own time)")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(15)


def label(test: str, deflate: bool) -> str:
    return test + (" +deflate" if deflate else "")


def medians(points: list[dict[str, Any]], key: str = "value") -> dict[tuple[str, bool, str], float]:
    values: dict[tuple[str, bool, str], list[float]] = {}
    for p in points:
        if p.get(key) is not None:
            values.setdefault((p["test"], p["deflate"], p["server"]), []).append(p[key])
    return {k: statistics.median(v) for k, v in values.items()}


def fmt(test: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if test == "idle_rss" else f"{value:,.0f}"


def table(points: list[dict[str, Any]], cfg: argparse.Namespace, cpus: tuple[int, int]) -> str:
    med = medians(points)
    gen, srv = medians(points, "generator_cpu"), medians(points, "server_cpu")
    modes = [m for m in (False, True) if m in cfg.modes]
    names = cfg.servers
    rows = [(t, d) for d in modes for t in cfg.tests if any(applies(s, t, d) for s in names)]
    pinned = f"server pinned to CPU {cpus[0]}" + "".join(
        f" ({s}: supervisor and workers not pinned)" for s in names if s.startswith("shardws-w"))
    lines = [
        f"Python {sys.version.split()[0]}, uvloop, {pinned}, load generator pinned to CPU "
        f"{cpus[1]} ({os.cpu_count()} CPUs); {cfg.seconds:g} s per rate point after "
        f"{cfg.warmup:g} s of warm-up; broadcast {cfg.broadcast_connections} connections x "
        f"{cfg.rounds} rounds of 32 B; handshake {cfg.handshake_loops} loops; idle_rss "
        f"{cfg.idle_connections} connections; median of {cfg.repeat} pass(es); load average "
        f"before the run {cfg.load[0]:.2f}, after {cfg.load[1]:.2f}; {cfg.elapsed:.0f} s in all.",
        "",
        "| test | unit | " + " | ".join(names) + " |",
        "| --- | --- |" + " ---: |" * len(names),
    ]
    for t, d in rows:
        cells = [fmt(t, med.get((t, d, s))) for s in names]
        lines.append(f"| {label(t, d)} | {UNITS[t]} | " + " | ".join(cells) + " |")
    ours = [s for s in names if s.startswith("shardws")]
    peers = [p for p in PEERS if p in names]
    if ours and peers:
        cols = [f"{s} / {p}" for s in ours for p in peers]
        lines += ["", "shardws as a ratio to the peers, same run (for idle_rss lower is better):", "",
                  "| test | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
        for t, d in rows:
            cells = []
            for s in ours:
                for p in peers:
                    a, b = med.get((t, d, s)), med.get((t, d, p))
                    cells.append(f"{a / b:.2f}x" if a is not None and b else "-")
            lines.append(f"| {label(t, d)} | " + " | ".join(cells) + " |")
    lines += ["", "CPU use during each point, load generator % / server % (median; 100 % = one "
              "core; idle_rss: during the opening of the connections):", "",
              "| test | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for t, d in rows:
        cells = [f"{gen[t, d, s]:.0f} / {srv[t, d, s]:.0f}" if (t, d, s) in gen else "-"
                 for s in names]
        lines.append(f"| {label(t, d)} | " + " | ".join(cells) + " |")
    lines += acceptance(med, points)
    measured = [p for p in points if p.get("others_cpu")]
    disturbed = [p for p in measured if max(p["others_cpu"]) > 20]
    if measured:
        lines += ["", f"Points where the two CPUs spent more than 20 % on anything else (other jobs, "
                  f"kernel threads): {len(disturbed)} of {len(measured)}."]
    failed = [p for p in points if p.get("error")]
    if failed:
        lines += ["", f"{len(failed)} point(s) failed, e.g. {failed[0]['server']} "
                  f"{label(failed[0]['test'], failed[0]['deflate'])}: {failed[0]['error'][:200]}"]
    return "\n".join(lines)


# issue 7's acceptance: (test, deflate, peer or None for an absolute bound, bound, at least?)
ACCEPTANCE = [
    ("rr32", False, "websockets", 2.5, True), ("rr32", False, "picows", 1.0, True),
    ("pipe32", False, "picows", 1.2, True), ("broadcast", False, "picows", 1.2, True),
    ("big16k", False, "picows", 1.0, True), ("handshake", False, "picows", 1.0, True),
    ("idle_rss", False, "websockets", 1.0, False), ("idle_rss", True, None, 16.0, False),
]


def pass_ratios(points: list[dict[str, Any]], test: str, deflate: bool, peer: str) -> list[float]:
    """shardws / ``peer`` in each pass that measured both (a pass restarts every server)."""
    rates: dict[tuple[int, str], float] = {}
    for p in points:
        if p["test"] == test and p["deflate"] == deflate and p.get("value") is not None:
            rates[p["pass"], p["server"]] = p["value"]
    return [rates[n, "shardws"] / rates[n, peer] for n in sorted({n for n, _ in rates})
            if (n, "shardws") in rates and rates.get((n, peer))]


def acceptance(med: dict[tuple[str, bool, str], float],
               points: list[dict[str, Any]] | None = None) -> list[str]:
    """The issue's targets for shardws, met or not, from the medians of this run; with
    ``points``, also the pass-to-pass range of each ratio and in how many passes it was met."""
    lines = ["", "Targets (shardws, medians of this run):", ""]
    for test, deflate, peer, bound, at_least in ACCEPTANCE:
        ours = med.get((test, deflate, "shardws"))
        theirs = med.get((test, deflate, peer)) if peer else 1.0
        if ours is None or not theirs:
            continue
        value = ours / theirs
        met = value >= bound if at_least else value <= bound
        what = f"{value:.2f}x {peer}" if peer else f"{value:.1f} KiB"
        want = (f"{'>=' if at_least else '<='} {bound:g}x" if peer
                else f"{'>=' if at_least else '<='} {bound:g} KiB")
        line = f"- {label(test, deflate)}: {what} (target {want}): {'met' if met else 'MISSED'}"
        ratios = pass_ratios(points, test, deflate, peer) if points and peer else []
        if len(ratios) > 1:
            hits = sum(r >= bound if at_least else r <= bound for r in ratios)
            line += (f"; per pass {min(ratios):.2f}x to {max(ratios):.2f}x, "
                     f"met in {hits} of {len(ratios)}")
        lines.append(line)
    return lines if len(lines) > 3 else []


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    block = f"<!-- bench:start -->\n{text}\n<!-- bench:end -->"
    new, n = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
    path.write_text(new if n else doc.rstrip() + "\n\n" + block + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 pass of short points (under 2 minutes)")
    parser.add_argument("--repeat", type=int, help="passes; the tables show the median (default 3)")
    parser.add_argument("--servers",
                        default="bare,bare-task,bare-ws,shardws,shardws-pure,websockets,picows,aiohttp",
                        help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--tests", default=",".join(TESTS),
                        help="comma-separated subset of: " + ", ".join(TESTS))
    parser.add_argument("--modes", default="plain,deflate",
                        help="plain (no compression), deflate (permessage-deflate), or both")
    parser.add_argument("--workers", type=int, default=0,
                        help="also measure `shardws serve --workers N` (server shardws-wN)")
    parser.add_argument("--seconds", type=float, help="measuring window of a rate point")
    parser.add_argument("--rounds", type=int, default=0,
                        help="broadcast rounds per point (default 100, 40 with --quick)")
    parser.add_argument("--json", type=Path, default=ROOT / "reports" / "bench.json",
                        help="raw results (default reports/bench.json)")
    parser.add_argument("--write", type=Path, help="put the tables into this markdown file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the servers under cProfile: DIR/SERVER[-deflate].pstats, top printed "
                             "(slows them down: the rates are not comparable)")
    parser.add_argument("--table-from", type=Path, metavar="JSON",
                        help="measure nothing: print (and --write) the tables of an earlier --json file")
    cfg = parser.parse_args(argv)
    if cfg.table_from:
        data = json.loads(cfg.table_from.read_text())
        vars(cfg).update(data["meta"], table_from=cfg.table_from, write=cfg.write)
        cfg.modes = {m == "deflate" for m in data["meta"]["modes"]}
        text = table(data["points"], cfg, tuple(cfg.cpus))  # type: ignore[arg-type]
        print(text)
        if cfg.write:
            write_docs(cfg.write, text)
        return 0
    quick = cfg.quick
    cfg.repeat = cfg.repeat or (1 if quick else 3)
    cfg.seconds = cfg.seconds or (0.6 if quick else 2.0)
    cfg.warmup = 0.2 if quick else 0.3
    cfg.rounds = cfg.rounds or (40 if quick else 100)
    cfg.broadcast_connections = 1000
    cfg.handshake_loops = 50
    cfg.idle_connections = 5000
    cfg.servers = [s for s in cfg.servers.split(",") if s]
    if cfg.workers and f"shardws-w{cfg.workers}" not in cfg.servers:
        cfg.servers.append(f"shardws-w{cfg.workers}")
    cfg.tests = [t for t in cfg.tests.split(",") if t]
    cfg.modes = {m == "deflate" for m in cfg.modes.split(",")}
    unknown = [s for s in cfg.servers if s not in SERVERS and not re.fullmatch(r"shardws-w[1-9]\d*", s)]
    unknown += [t for t in cfg.tests if t not in TESTS]
    if unknown:
        parser.error(f"unknown server or test: {', '.join(unknown)}")

    global CPUS
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = cpus[0], cpus[1 % len(cpus)]
    CPUS = (server_cpu, load_cpu)
    os.sched_setaffinity(0, {load_cpu})
    import uvloop

    load_before, started = os.getloadavg()[0], time.monotonic()
    points = uvloop.run(measure(cfg, (server_cpu, load_cpu)))
    cfg.load, cfg.elapsed = (load_before, os.getloadavg()[0]), time.monotonic() - started
    text = table(points, cfg, (server_cpu, load_cpu))
    print()
    print(text)
    cfg.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(cfg).items()
            if k not in ("json", "write", "modes", "table_from", "profile")}
    meta.update(modes=sorted("deflate" if m else "plain" for m in cfg.modes), cpus=[server_cpu, load_cpu],
                python=sys.version.split()[0], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    median = [{"test": t, "deflate": d, "server": s, "value": v}
              for (t, d, s), v in medians(points).items()]
    cfg.json.write_text(json.dumps({"meta": meta, "median": median, "points": points}, indent=1) + "\n")
    print(f"\nraw results: {cfg.json}")
    if cfg.write:
        write_docs(cfg.write, text)
    if cfg.profile:
        print_profiles(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
