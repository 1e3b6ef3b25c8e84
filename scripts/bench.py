"""Throughput benchmark: shardws against websockets, aiohttp (and picows when installed).

    python scripts/bench.py [--quick] [--clients N] [--write docs/benchmarks.md]

Measured in one run, with the same load generator for every server:

* **echo round trips/s** with 32 B and 4 KiB binary messages, ``--clients``
  connections, each keeping ``BATCH * DEPTH`` messages in flight;
* **broadcast deliveries/s**: the server sends ``ROUNDS`` 32 B text messages
  to 1000 connections with its broadcast primitive (websockets'
  ``broadcast()``, a loop of ``send_str`` for aiohttp, a loop of
  ``transport.send`` for picows).

Each server runs alone in a subprocess pinned to one CPU, on uvloop, with
keepalive pings off and no compression negotiated. The load generator runs
in this process, pinned to another CPU: a raw-socket ``asyncio.Protocol``
client on uvloop that pipelines pre-masked frames and counts the bytes of the
answers (every answer has the same size), so it spends almost nothing per
message and is the same for every server. Every server is measured once
per pass, in turn, and each figure is the best of its passes. ``--quick``
(one pass) keeps the whole run under 30 s; a full run (three passes) stays
under 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import os
import re
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROADCAST_CONNECTIONS = 1000

# ----------------------------------------------------------- the servers
# Each prints its port, echoes every message with the same type, answers
# "count" with the number of open connections and "bcast:ROUNDS:SIZE" by
# broadcasting ROUNDS text messages of SIZE bytes to every connection,
# yielding to the event loop between rounds.

PRELUDE = r"""
import asyncio, os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
import uvloop
CLIENTS = set()
"""

# One program for the two servers of the websockets API: shardws runs it
# unchanged as ``import shardws as websockets``.
WEBSOCKETS_API = PRELUDE + r"""
import MODULE as websockets

async def handler(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str) and message == "count":
                await ws.send(str(len(CLIENTS)))
            elif isinstance(message, str) and message.startswith("bcast:"):
                _, rounds, size = message.split(":")
                text = "x" * int(size)
                for _ in range(int(rounds)):
                    websockets.broadcast(CLIENTS, text)
                    await asyncio.sleep(0)
            else:
                await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)

async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, ping_interval=None, backlog=4096) as server:
        print(next(iter(server.sockets)).getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

uvloop.run(main())
"""
SHARDWS = WEBSOCKETS_API.replace("import MODULE", "import shardws")
WEBSOCKETS = WEBSOCKETS_API.replace("import MODULE", "import websockets")

AIOHTTP = PRELUDE + r"""
from aiohttp import WSMsgType, web

async def handler(request):
    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=2**20)
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "count":
                    await ws.send_str(str(len(CLIENTS)))
                elif msg.data.startswith("bcast:"):
                    _, rounds, size = msg.data.split(":")
                    text = "x" * int(size)
                    for _ in range(int(rounds)):
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
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()

uvloop.run(main())
"""

PICOWS = PRELUDE + r"""
from picows import WSListener, WSMsgType, ws_create_server

async def broadcast(rounds, text):
    for _ in range(rounds):
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
            _, rounds, size = frame.get_payload_as_bytes().split(b":")
            asyncio.ensure_future(broadcast(int(rounds), b"x" * int(size)))
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_bytes())

async def main():
    server = await ws_create_server(lambda request: Listener(), "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

uvloop.run(main())
"""

SERVERS = {"shardws": SHARDWS, "websockets": WEBSOCKETS, "aiohttp": AIOHTTP, "picows": PICOWS}


class ServerProcess:
    """One benchmarked server in a subprocess pinned to ``cpu``; stops when stdin closes."""

    def __init__(self, name: str, cpu: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        # stderr goes to a file (shown if the server does not start): picows
        # prints a line per write to a connection the load generator closed.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVERS[name], str(cpu)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, cwd="/",
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stderr.seek(0)
            tail = self.stderr.read()[-2000:].decode(errors="replace")
            self.stop()
            raise RuntimeError(f"{name} server did not start:\n{tail}")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


# ------------------------------------------------------ the load generator

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2, 5.3)."""
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
    return n + (2 if n < 126 else 4 if n < 2**16 else 10)


REQUEST = (
    "GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {base64.b64encode(b'benchmark-key-16').decode()}\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()


class LoadClient(asyncio.Protocol):
    """A raw WebSocket client that counts the bytes of the server's frames."""

    def __init__(self) -> None:
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.received = 0  # bytes of frames after the handshake
        self.first = b""  # the first bytes after the handshake (sanity check)
        self.keep = False  # keep what arrives in ``kept``
        self.kept = bytearray()
        self.on_data: object = None  # callable(client) or None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self.transport = transport  # type: ignore[assignment]
        transport.write(REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.opened.set_exception(RuntimeError(self.head[:200].decode("latin-1")))
                return
            data = self.head[end + 4:]
            self.opened.set_result(None)
        if len(self.first) < 64:
            self.first += data[: 64 - len(self.first)]
        self.received += len(data)
        if self.keep:
            self.kept += data
        if self.on_data is not None:
            self.on_data(self)  # type: ignore[operator]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x8, b"\x03\xe8"))
            self.transport.close()


async def open_clients(port: int, n: int) -> list[LoadClient]:
    loop = asyncio.get_running_loop()
    clients: list[LoadClient] = []
    for start in range(0, n, 100):  # in waves, so no listen backlog overflows
        wave = [await_connect(loop, port) for _ in range(min(100, n - start))]
        clients.extend(await asyncio.gather(*wave))
    return clients


async def await_connect(loop: asyncio.AbstractEventLoop, port: int) -> LoadClient:
    _, client = await loop.create_connection(LoadClient, "127.0.0.1", port)
    await asyncio.wait_for(client.opened, 30)
    return client


async def echo_rate(port: int, size: int, clients: int, seconds: float) -> float:
    """Round trips per second with ``clients`` connections pipelining ``size``-byte messages."""
    batch = 64 if size <= 256 else 8
    depth = 2
    frame = client_frame(0x2, bytes(range(256)) * (size // 256) + bytes(size % 256))
    chunk = frame * batch
    answer = server_frame_size(size)
    chunk_answer = answer * batch
    conns = await open_clients(port, clients)

    def on_data(c: LoadClient) -> None:
        # one more batch out for every batch answered: depth batches in flight
        while c.received >= c.answered_batches * chunk_answer + chunk_answer:  # type: ignore[attr-defined]
            c.answered_batches += 1  # type: ignore[attr-defined]
            c.send(chunk)

    for c in conns:
        c.answered_batches = 0  # type: ignore[attr-defined]
        c.on_data = on_data
        for _ in range(depth):
            c.send(chunk)
    await asyncio.sleep(min(0.3, seconds / 3))  # warm-up
    start_bytes, start = sum(c.received for c in conns), time.perf_counter()
    await asyncio.sleep(seconds)
    end_bytes, end = sum(c.received for c in conns), time.perf_counter()
    expected = bytes([frame[0], frame[1] & 0x7F])  # the answer's header starts unmasked
    for c in conns:
        assert c.first[:2] == expected, (c.first[:16], expected)
        c.on_data = None
        c.close()
    return (end_bytes - start_bytes) / answer / (end - start)


async def broadcast_rate(port: int, rounds: int) -> float:
    """Deliveries per second of ``rounds`` broadcasts of 32 B to BROADCAST_CONNECTIONS connections."""
    conns = await open_clients(port, BROADCAST_CONNECTIONS)
    controller = conns[0]
    deadline = time.monotonic() + 30
    controller.keep = True
    while True:  # until the server's handlers registered every connection
        controller.kept.clear()
        controller.send(client_frame(0x1, b"count"))
        kept = controller.kept
        while len(kept) < 2 or len(kept) < 2 + (kept[1] & 0x7F):
            await asyncio.sleep(0.005)
        if int(kept[2 : 2 + (kept[1] & 0x7F)]) >= len(conns):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not register every connection")
        await asyncio.sleep(0.05)
    controller.keep = False
    base = {id(c): c.received for c in conns}
    target = rounds * server_frame_size(32)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    remaining = [len(conns)]

    def on_data(c: LoadClient) -> None:
        if c.received - base[id(c)] >= target and not getattr(c, "finished", False):
            c.finished = True  # type: ignore[attr-defined]
            remaining[0] -= 1
            if not remaining[0] and not done.done():
                done.set_result(None)

    for c in conns:
        c.on_data = on_data
    start = time.perf_counter()
    controller.send(client_frame(0x1, f"bcast:{rounds}:32".encode()))
    await asyncio.wait_for(done, 60)
    elapsed = time.perf_counter() - start
    for c in conns:
        c.on_data = None
        c.close()
    return len(conns) * rounds / elapsed


# ----------------------------------------------------------------- driver


@dataclass
class Result:
    server: str
    echo32: float
    echo4k: float
    broadcast: float


def available() -> list[str]:
    names = ["shardws", "websockets", "aiohttp"]
    if importlib.util.find_spec("picows") is not None:
        names.append("picows")
    return names


async def measure(names: list[str], cpu: int, args: argparse.Namespace) -> list[Result]:
    """Best of ``args.repeat`` passes; each pass measures every server in turn.

    All the servers run for the whole measurement (an idle one costs
    nothing), so a burst of load from other jobs on a shared machine spoils
    one pass of each server rather than every pass of one server.
    """
    points = ("echo32", "echo4k", "broadcast")
    rates = {name: {k: [] for k in points} for name in names}  # type: ignore[var-annotated]
    servers: dict[str, ServerProcess] = {}
    try:
        for name in names:
            servers[name] = ServerProcess(name, cpu)
        for n in range(args.repeat):
            for name in names:
                port, r = servers[name].port, rates[name]
                r["echo32"].append(await echo_rate(port, 32, args.clients, args.seconds))
                r["echo4k"].append(await echo_rate(port, 4096, args.clients, args.seconds))
                r["broadcast"].append(await broadcast_rate(port, args.rounds))
                print(f"pass {n + 1}: {name:10s} " + "  ".join(
                    f"{k} {r[k][-1]:12,.0f}/s" for k in points), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return [Result(name, *(max(rates[name][k]) for k in points)) for name in names]


def table(results: list[Result], args: argparse.Namespace, cpus: tuple[int, int]) -> str:
    ours = next(r for r in results if r.server == "shardws")
    lines = [
        f"Python {sys.version.split()[0]}, uvloop, server pinned to CPU {cpus[0]}, load generator "
        f"to CPU {cpus[1]}; echo: {args.clients} connections, {args.seconds:g} s per point; "
        f"broadcast: {BROADCAST_CONNECTIONS} connections x {args.rounds} rounds of 32 B; "
        f"best of {args.repeat}; load average before the run {args.load[0]:.2f}, "
        f"after {args.load[1]:.2f} ({os.cpu_count()} CPUs).",
        "",
        "| server | echo 32 B (msg/s) | echo 4 KiB (msg/s) | broadcast (deliveries/s) "
        "| shardws / it (32 B, 4 KiB, broadcast) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = ", ".join(f"{getattr(ours, k) / getattr(r, k):.2f}x"
                          for k in ("echo32", "echo4k", "broadcast"))
        lines.append(f"| {r.server} | {r.echo32:,.0f} | {r.echo4k:,.0f} | {r.broadcast:,.0f} "
                     f"| {'-' if r is ours else ratio} |")
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    block = f"<!-- bench:start -->\n{text}\n<!-- bench:end -->"
    new, n = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
    path.write_text(new if n else doc.rstrip() + "\n\n" + block + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument("--clients", type=int, default=10, help="echo connections")
    parser.add_argument("--servers", default=",".join(available()),
                        help="comma-separated subset of: " + ", ".join(SERVERS))
    parser.add_argument("--write", type=Path, help="put the table into this markdown file")
    args = parser.parse_args(argv)
    args.seconds, args.rounds, args.repeat = (0.8, 40, 1) if args.quick else (2.0, 200, 3)

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = cpus[0], cpus[1 % len(cpus)]
    os.sched_setaffinity(0, {load_cpu})
    import uvloop

    load_before = os.getloadavg()[0]
    results = uvloop.run(measure(args.servers.split(","), server_cpu, args))
    args.load = (load_before, os.getloadavg()[0])
    text = table(results, args, (server_cpu, load_cpu))
    print()
    print(text)
    if args.write:
        write_docs(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
