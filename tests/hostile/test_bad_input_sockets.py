"""A hostile peer over real sockets against a shardws server in a subprocess.

The server runs in its own process (so its memory can be measured with
psutil and ``/proc``) with an echo handler. The attacker speaks raw bytes
through asyncio streams, with its own tiny frame writer (:func:`frame`):
nothing of shardws is used on the attacking side.

After every case a *bystander* connection opened before the attack (and a
fresh one opened after it) must still get its echo: one bad peer never
disturbs the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pathlib
import select
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

import shardws

MAIN_MAX_SIZE = 8 * 2**20  # the main server's max_size
SMALL_MAX_SIZE = 64 * 2**10  # a second server, for the 1 KiB bomb
OPEN_TIMEOUT = 0.5  # handshake deadline of both servers
DEADLINE = 10.0  # the most any single wait in a case may take
KEY = base64.b64encode(b"0123456789abcdef").decode()  # a valid Sec-WebSocket-Key

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10

# ------------------------------------------------------------ the server

SERVER_SCRIPT = r"""
import asyncio, json, os, sys
import shardws

async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except shardws.ConnectionClosed:
        pass

async def main():
    servers = [await shardws.serve(echo, "127.0.0.1", 0, **cfg) for cfg in json.loads(sys.argv[1])]
    ports = [next(iter(s.sockets)).getsockname()[1] for s in servers]
    print(json.dumps({"pid": os.getpid(), "ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    for s in servers:
        s.close()
        await s.wait_closed()

asyncio.run(main())
"""

CONFIGS = [
    {"max_size": MAIN_MAX_SIZE, "open_timeout": OPEN_TIMEOUT, "ping_interval": None,
     "compression": "deflate"},
    {"max_size": SMALL_MAX_SIZE, "open_timeout": OPEN_TIMEOUT, "ping_interval": None,
     "compression": "deflate"},
]


@dataclass
class ServerProcess:
    pid: int
    port: int  # the main server
    small_port: int  # max_size 64 KiB
    stderr_path: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Both servers in one subprocess, which stops when its stdin closes."""
    workdir = tmp_path_factory.mktemp("hostile")
    stderr_path = str(workdir / "server.stderr")
    # the child imports the very shardws this test process imports
    root = pathlib.Path(shardws.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, json.dumps(CONFIGS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=workdir,
        )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30.0)
        line = proc.stdout.readline() if ready else b""
        assert line, f"server did not start: {pathlib.Path(stderr_path).read_text()}"
        info = json.loads(line)
        yield ServerProcess(info["pid"], info["ports"][0], info["ports"][1], stderr_path)
        assert proc.poll() is None, f"server died: {pathlib.Path(stderr_path).read_text()}"
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------- memory probes


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's RSS high-water mark (VmHWM) of ``pid``."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


async def server_idle(pid: int, quiet: float = 0.3, timeout: float = 3 * DEADLINE) -> None:
    """Poll the server's CPU time (with a deadline) until it stops growing for ``quiet`` s."""
    proc = psutil.Process(pid)

    def cpu() -> float:
        times = proc.cpu_times()
        return float(times.user + times.system)

    async with asyncio.timeout(timeout):
        last, since = cpu(), time.monotonic()
        while time.monotonic() - since < quiet:
            await asyncio.sleep(0.05)  # polling with a deadline
            now = cpu()
            if now != last:
                last, since = now, time.monotonic()


# ------------------------------------------------ the attacker's wire code


def mask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 5.3 masking (XOR with the repeated 4-byte key)."""
    n = len(data)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, flags: int = 0,
          masked: bool = True, length: int | None = None, key: bytes | None = None) -> bytes:
    """One client frame. ``flags``: RSV bits; ``length`` overrides the announced length."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | flags | opcode])
    mbit = 0x80 if masked else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 2**16:
        head.append(mbit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mbit | 127)
        head += n.to_bytes(8, "big")
    if not masked:
        return bytes(head) + payload
    key = os.urandom(4) if key is None else key
    return bytes(head) + key + mask(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return code.to_bytes(2, "big") + reason


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame: (opcode, payload). Servers MUST NOT mask."""
    b0, b1 = await reader.readexactly(2)
    assert not b1 & 0x80, "RFC 6455 5.1: a server MUST NOT mask any frames"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


def upgrade_request(*, method: str = "GET", version: str | None = "13", key: str | None = KEY,
                    extra: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} /attack HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
             "Connection: Upgrade"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status code and headers (lower-cased names) of an HTTP response."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def wait_eof(reader: asyncio.StreamReader, timeout: float = DEADLINE) -> bytes:
    """Everything the server still sends until it closes the TCP connection."""
    chunks = []
    async with asyncio.timeout(timeout):
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass  # closed as well: bytes of ours arrived after the server's close()
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def raw_connection(port: int, *, rcvbuf: int | None = None
                         ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect(), so the window starts small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def open_websocket(
    port: int, *, extensions: str | None = None, rcvbuf: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]]:
    """A raw connection after a successful handshake: (reader, writer, response headers)."""
    extra = (f"Sec-WebSocket-Extensions: {extensions}",) if extensions else ()
    async with raw_connection(port, rcvbuf=rcvbuf) as (reader, writer):
        writer.write(upgrade_request(extra=extra))
        status, headers = await read_head(reader)
        assert status == 101, (status, headers)
        yield reader, writer, headers


async def expect_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       *, reply: bool = True) -> int:
    """Read until the server's close frame, answer it (``reply``), wait for EOF; the close code.

    After failing a connection the server may close TCP at once (RFC 6455
    7.1.7) rather than wait for our answer: both are accepted.
    """
    async with asyncio.timeout(DEADLINE):
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == OP_CLOSE:
                break
    code = int.from_bytes(payload[:2], "big") if payload else 1005
    if reply:
        with contextlib.suppress(ConnectionError):
            writer.write(frame(OP_CLOSE, payload[:2]))
    await wait_eof(reader)
    return code


# --------------------------------------------------- the bystander check


@contextlib.asynccontextmanager
async def bystander(server: ServerProcess) -> AsyncIterator[ClientConnection]:
    """A well-behaved connection open across the attack; checked again after it."""
    url = f"ws://127.0.0.1:{server.port}/bystander"
    async with connect(url, open_timeout=DEADLINE, ping_interval=None) as ws:
        await ws.send("before")
        assert await asyncio.wait_for(ws.recv(), DEADLINE) == "before"
        yield ws
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), DEADLINE) == "after"
    async with connect(url, open_timeout=DEADLINE, ping_interval=None) as fresh:
        await fresh.send("fresh")
        assert await asyncio.wait_for(fresh.recv(), DEADLINE) == "fresh"


# ------------------------------------------------------- handshake table

BIG_LINE = "X-Padding: " + "a" * 8300  # one header line over 8 KiB
MANY_HEADERS = tuple(f"X-Header-{i}: {i}" for i in range(130))  # over 128 header lines

HANDSHAKE_CASES: dict[str, tuple[bytes, int]] = {
    "non_get": (upgrade_request(method="POST"), 405),
    "wrong_version": (upgrade_request(version="8"), 426),
    "no_version": (upgrade_request(version=None), 426),
    "no_upgrade": (upgrade_request().replace(b"Upgrade: websocket\r\n", b""), 426),
    "missing_key": (upgrade_request(key=None), 400),
    "key_not_base64": (upgrade_request(key="not base64 at all!"), 400),
    "key_15_bytes": (upgrade_request(key=base64.b64encode(b"x" * 15).decode()), 400),
    "header_line_over_8k": (upgrade_request(extra=(BIG_LINE,)), 431),
    "over_128_headers": (upgrade_request(extra=MANY_HEADERS), 431),
    "not_http": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE_CASES))
async def test_bad_handshake_is_rejected(server: ServerProcess, case: str) -> None:
    request, status = HANDSHAKE_CASES[case]
    async with bystander(server), raw_connection(server.port) as (reader, writer):
        writer.write(request)
        got, headers = await read_head(reader)
        assert got == status, (got, headers)
        if status == 426 and case != "no_upgrade":
            # RFC 6455 4.4: the server MUST [...] include a |Sec-WebSocket-Version|
            # header field indicating the version(s) the server is capable of.
            assert headers.get("sec-websocket-version") == "13"
        await wait_eof(reader)  # the server does not keep a failed handshake open


# ------------------------------------------------- handshakes that stall

STALL_CASES = {
    "nothing_sent": [],
    "partial_request": [b"GET /attack HTTP/1.1\r\nHost: 127.0.0.1\r\n"],
    # a slowloris: bytes keep coming, but the handshake never completes
    "trickle": [bytes([c]) for c in upgrade_request()[:40]],
}


@pytest.mark.parametrize("case", sorted(STALL_CASES))
async def test_unfinished_handshake_is_dropped_after_open_timeout(
    server: ServerProcess, case: str
) -> None:
    async with bystander(server), raw_connection(server.port) as (reader, writer):
        start = time.monotonic()
        eof = asyncio.ensure_future(wait_eof(reader, 4 * OPEN_TIMEOUT + 2.0))
        for piece in STALL_CASES[case]:
            if eof.done():
                break
            writer.write(piece)
            await asyncio.sleep(OPEN_TIMEOUT / 10)  # attacker's pacing, not a synchronisation
        await eof  # raises TimeoutError if the server keeps the connection
        assert time.monotonic() - start >= OPEN_TIMEOUT * 0.9


# ---------------------------------------------------------- frame table


def _ping_frame(size: int) -> bytes:
    return frame(OP_PING, b"p" * size)


FRAME_CASES: dict[str, tuple[bytes, int]] = {
    # RFC 6455 5.1: "The server MUST close the connection upon receiving a
    # frame that is not masked."
    "unmasked_text": (frame(OP_TEXT, b"hello", masked=False), 1002),
    "rsv1_without_extension": (frame(OP_TEXT, b"hello", flags=RSV1), 1002),
    "rsv2": (frame(OP_TEXT, b"hello", flags=RSV2), 1002),
    "rsv3_on_ping": (frame(OP_PING, b"", flags=RSV3), 1002),
    "control_over_125": (_ping_frame(126), 1002),
    "fragmented_control": (frame(OP_PING, b"x", fin=False), 1002),
    "reserved_opcode_3": (frame(0x3, b"x"), 1002),
    "reserved_opcode_11": (frame(0xB, b""), 1002),
    "continuation_first": (frame(OP_CONT, b"x"), 1002),
    "text_inside_fragments": (frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"), 1002),
    "close_code_999": (frame(OP_CLOSE, close_payload(999)), 1002),
    "close_code_1005": (frame(OP_CLOSE, close_payload(1005)), 1002),
    "close_code_1006": (frame(OP_CLOSE, close_payload(1006)), 1002),
    "close_code_5000": (frame(OP_CLOSE, close_payload(5000)), 1002),
    "close_one_byte": (frame(OP_CLOSE, b"\x03"), 1002),
    "invalid_utf8_text": (frame(OP_TEXT, b"abc\xff\xfe"), 1007),
    "invalid_utf8_fragment": (frame(OP_TEXT, b"ok", fin=False) + frame(OP_CONT, b"\xed\xa0\x80"), 1007),
    "invalid_utf8_close_reason": (frame(OP_CLOSE, close_payload(1000, b"\xc3\x28")), 1007),
    # only the header: the length alone must trigger 1009, before any buffering
    "announced_over_max_size": (frame(OP_BINARY, length=MAIN_MAX_SIZE + 1), 1009),
    "announced_2_pow_62": (frame(OP_BINARY, length=2**62), 1009),
    "fragments_over_max_size": (
        frame(OP_BINARY, b"\0" * (MAIN_MAX_SIZE // 2 + 1), fin=False)
        + frame(OP_CONT, length=MAIN_MAX_SIZE // 2 + 1), 1009),
}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
async def test_bad_frame_fails_the_connection(server: ServerProcess, case: str) -> None:
    data, code = FRAME_CASES[case]
    async with bystander(server), open_websocket(server.port) as (reader, writer, _):
        writer.write(data)
        assert await expect_close(reader, writer) == code


# ------------------------------------------------------- deflate bombs


def deflate_bomb(inflated: int, wbits: int) -> bytes:
    """A permessage-deflate payload of ``inflated`` zero bytes (tail stripped, RFC 7692 7.2.1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    chunk = b"\0" * 2**20
    out = [compressor.compress(chunk) for _ in range(inflated // len(chunk))]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(out)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def client_window_bits(extensions: str) -> int:
    for param in extensions.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name == "client_max_window_bits" and value:
            return int(value.strip('"'))
    return 15


BOMB_CASES = {
    # name: (which server, max_size, bytes once inflated)
    "1KiB_to_1MiB": ("small", SMALL_MAX_SIZE, 2**20),
    "255KiB_to_256MiB": ("main", MAIN_MAX_SIZE, 256 * 2**20),
}


@pytest.mark.parametrize("case", sorted(BOMB_CASES))
async def test_deflate_bomb_closes_1009_with_bounded_memory(
    server: ServerProcess, case: str
) -> None:
    which, max_size, inflated = BOMB_CASES[case]
    port = server.small_port if which == "small" else server.port
    async with bystander(server), open_websocket(
        port, extensions="permessage-deflate; client_max_window_bits"
    ) as (reader, writer, headers):
        extensions = headers.get("sec-websocket-extensions", "")
        assert extensions.startswith("permessage-deflate"), headers
        bomb = deflate_bomb(inflated, client_window_bits(extensions))
        assert len(bomb) < max_size // 32  # small on the wire...
        data = frame(OP_BINARY, bomb, flags=RSV1)
        base = rss(server.pid)
        reset_peak_rss(server.pid)
        writer.write(data)
        assert await expect_close(reader, writer) == 1009  # ...too big once inflated
        growth = peak_rss(server.pid) - base
        assert growth < 2 * max(max_size, 2**20), f"server RSS grew by {growth / 2**20:.1f} MiB"


# ---------------------------------------------------------- ping flood

PINGS = 100_000
PING_FLOOD_RSS_LIMIT = 8 * 2**20  # the pongs owed are ~12 MiB; buffering them all must fail


async def test_ping_flood_without_reading_keeps_memory_bounded(server: ServerProcess) -> None:
    """100 000 pings of 125 bytes, never reading the pongs: the server must not buffer them all.

    The client's receive buffer is made small so that the kernel cannot absorb
    the pongs for the server. Whether the server stops reading or answers only
    the most recent ping (RFC 6455 5.5.3 allows it), its memory stays bounded;
    the last ping gets its pong, and the echo sent after the flood comes back.
    """
    key = os.urandom(4)
    pings = [frame(OP_PING, i.to_bytes(4, "big") + b"f" * 121, key=key) for i in range(PINGS)]
    last_payload = (PINGS - 1).to_bytes(4, "big") + b"f" * 121
    async with bystander(server), open_websocket(server.port, rcvbuf=4096) as (reader, writer, _):
        base = rss(server.pid)
        reset_peak_rss(server.pid)
        writer.write(b"".join(pings) + frame(OP_TEXT, b"done"))
        del pings
        # Do not read until the server has gone idle: it has either processed
        # every ping or stopped reading (the kernel buffers hide which from us).
        await server_idle(server.pid)
        growth_unread = peak_rss(server.pid) - base
        # Now read: pongs (possibly coalesced), then the echo of "done".
        pongs, last_pong = 0, b""
        async with asyncio.timeout(DEADLINE * 3):
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == OP_PONG:
                    pongs, last_pong = pongs + 1, payload
                elif opcode == OP_TEXT:
                    assert payload == b"done"
                    break
                else:  # pragma: no cover - diagnostic
                    raise AssertionError((opcode, payload[:20]))
        growth = peak_rss(server.pid) - base
        assert 1 <= pongs <= PINGS
        assert last_pong == last_payload
        assert growth_unread < PING_FLOOD_RSS_LIMIT, f"{growth_unread / 2**20:.1f} MiB unread"
        assert growth < PING_FLOOD_RSS_LIMIT, f"server RSS grew by {growth / 2**20:.1f} MiB"
        writer.write(frame(OP_CLOSE, close_payload(1000)))
        assert await expect_close(reader, writer, reply=False) == 1000
