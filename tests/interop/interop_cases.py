"""The interoperability table shared by the three client test modules.

Every test module wraps one independent WebSocket client library in a
:class:`Client` adapter and runs the same table of cases against a shardws
server started on port 0 (:func:`running_server`).  The server handler is a
tiny command interpreter, so the *client* drives every case:

=====================  =====================================================
message from client    what the server handler does
=====================  =====================================================
``cmd:frag:text``      sends :data:`FRAGMENTS` as one fragmented text message
``cmd:frag:binary``    the same, binary, from an *async* iterable
``cmd:ping``           ``latency = await (await ws.ping(b"srv"))``, replies
                       ``latency:<seconds>``
``cmd:close``          ``await ws.close(4001, "server bye")``
anything else          echoes it back with the same type
=====================  =====================================================

When the handler ends it records how the connection ended
(exception class name or ``"clean"``, close code, close reason) in
``Harness.endings``, which the close cases assert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import shardws

FRAGMENTS = ["frag", "ment", "ed ", "mess", "age ✓"]
TEXT = "héllo wörld ✓ " * 8
BINARY = bytes(range(256)) * 4
BIG = 2**20  # 1 MiB messages
MAX_SIZE = 2**21  # server and clients raise max_size above BIG
DEADLINE = 10.0  # seconds any single case may take

# (server compression, client offers permessage-deflate, extension expected)
MODES: dict[str, tuple[str | None, bool, bool]] = {
    "deflate": ("deflate", True, True),
    "server-plain": (None, True, False),
    "client-plain": ("deflate", False, False),
}


class Client(Protocol):
    """What each client library adapter offers (all methods async)."""

    extensions: str | None  # Sec-WebSocket-Extensions of the 101 response

    async def send(self, message: str | bytes) -> None: ...
    async def send_fragments(self, parts: list[str] | list[bytes]) -> None: ...
    async def recv(self) -> str | bytes: ...  # answers server pings on the way
    async def ping(self, payload: bytes) -> bytes: ...  # returns the pong's payload
    async def close(self, code: int, reason: str) -> None: ...
    async def recv_close(self) -> tuple[int, str]: ...  # the server's close frame
    async def aclose(self) -> None: ...  # release everything (idempotent)


Connect = Callable[[str, bool], Awaitable[Client]]  # (url, offer deflate) -> client


@dataclass
class Harness:
    url: str
    endings: asyncio.Queue[tuple[str, int | None, str | None]] = field(
        default_factory=asyncio.Queue
    )


async def _fragments_async(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _command(ws: shardws.ServerConnection, command: str) -> None:
    if command == "frag:text":
        await ws.send(iter(FRAGMENTS))
    elif command == "frag:binary":
        await ws.send(_fragments_async([p.encode() for p in FRAGMENTS]))
    elif command == "ping":
        latency = await (await ws.ping(b"srv"))
        await ws.send(f"latency:{latency!r}")
    elif command == "close":
        await ws.close(4001, "server bye")
    else:  # pragma: no cover - a typo in the table
        raise AssertionError(command)


def _handler(harness: Harness) -> Callable[[shardws.ServerConnection], Awaitable[None]]:
    async def handler(ws: shardws.ServerConnection) -> None:
        ending = "clean"
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("cmd:"):
                    await _command(ws, message[4:])
                else:
                    await ws.send(message)
        except shardws.ConnectionClosed as exc:
            ending = type(exc).__name__
        finally:
            await ws.wait_closed()
            harness.endings.put_nowait((ending, ws.close_code, ws.close_reason))

    return handler


@contextlib.asynccontextmanager
async def running_server(compression: str | None, **kwargs: object) -> AsyncIterator[Harness]:
    """A shardws echo/command server on 127.0.0.1, port 0, stopped on exit."""
    harness = Harness(url="")
    async with shardws.serve(
        _handler(harness), "127.0.0.1", 0, compression=compression, max_size=MAX_SIZE,
        ping_interval=None, **kwargs,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if kwargs.get("ssl") else "ws"
        harness.url = f"{scheme}://127.0.0.1:{port}/interop"
        yield harness


# ------------------------------------------------------------------ cases


async def case_text(c: Client, h: Harness) -> None:
    await c.send(TEXT)
    assert await c.recv() == TEXT


async def case_binary(c: Client, h: Harness) -> None:
    await c.send(BINARY)
    assert await c.recv() == BINARY


async def case_fragmented_in_text(c: Client, h: Harness) -> None:
    await c.send_fragments(FRAGMENTS)
    assert await c.recv() == "".join(FRAGMENTS)


async def case_fragmented_in_binary(c: Client, h: Harness) -> None:
    parts = [p.encode() for p in FRAGMENTS]
    await c.send_fragments(parts)
    assert await c.recv() == b"".join(parts)


async def case_fragmented_out_text(c: Client, h: Harness) -> None:
    await c.send("cmd:frag:text")
    assert await c.recv() == "".join(FRAGMENTS)


async def case_fragmented_out_binary(c: Client, h: Harness) -> None:
    await c.send("cmd:frag:binary")
    assert await c.recv() == "".join(FRAGMENTS).encode()


async def case_big_binary(c: Client, h: Harness) -> None:
    payload = os.urandom(BIG)  # incompressible
    await c.send(payload)
    assert await c.recv() == payload


async def case_big_text(c: Client, h: Harness) -> None:
    payload = ("shardws ✓ " * (BIG // 10))[: BIG // 2]  # compressible, ~1 MiB of UTF-8
    await c.send(payload)
    assert await c.recv() == payload


async def case_ping_from_client(c: Client, h: Harness) -> None:
    assert await c.ping(b"cli-ping") == b"cli-ping"
    await c.send("after ping")  # the connection is still usable
    assert await c.recv() == "after ping"


async def case_ping_from_server(c: Client, h: Harness) -> None:
    await c.send("cmd:ping")
    reply = await c.recv()
    assert isinstance(reply, str) and reply.startswith("latency:"), reply
    assert 0.0 <= float(reply.removeprefix("latency:")) < DEADLINE


async def case_close_from_client(c: Client, h: Harness) -> None:
    await c.send("hi")
    assert await c.recv() == "hi"
    await c.close(4000, "client bye")
    ending = await asyncio.wait_for(h.endings.get(), DEADLINE)
    assert ending == ("ConnectionClosedError", 4000, "client bye")


async def case_close_from_server(c: Client, h: Harness) -> None:
    await c.send("cmd:close")
    assert await c.recv_close() == (4001, "server bye")


async def case_close_normal(c: Client, h: Harness) -> None:
    await c.close(1000, "")
    ending = await asyncio.wait_for(h.endings.get(), DEADLINE)
    assert ending[:2] == ("clean", 1000)


CASES: dict[str, Callable[[Client, Harness], Awaitable[None]]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


async def run_case(connect: Connect, case: str, mode: str) -> None:
    """Start a server in ``mode``, connect the client, check negotiation, run ``case``."""
    server_compression, offer, expect_deflate = MODES[mode]
    async with running_server(server_compression) as harness:
        client = await asyncio.wait_for(connect(harness.url, offer), DEADLINE)
        try:
            if expect_deflate:
                assert client.extensions is not None
                assert client.extensions.split(";")[0].strip() == "permessage-deflate"
            else:
                assert client.extensions is None
            await asyncio.wait_for(CASES[case](client, harness), DEADLINE)
        finally:
            await client.aclose()
