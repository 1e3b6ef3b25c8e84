"""wss: shardws serving TLS with a certificate issued by a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import pytest
import trustme
from interop_cases import BIG, DEADLINE, MAX_SIZE, running_server
from websockets.asyncio.client import connect


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


MESSAGES = {"text": "tls ✓", "binary": b"\x00\xfftls", "big": b"\xab" * BIG}


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_wss_round_trip_websockets(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, compression: str | None
) -> None:
    async with running_server(compression, ssl=server_ctx) as harness:
        assert harness.url.startswith("wss://")
        async with connect(harness.url, ssl=client_ctx, max_size=MAX_SIZE,
                           compression=compression, open_timeout=DEADLINE) as ws:
            assert ws.transport.get_extra_info("ssl_object") is not None
            for message in MESSAGES.values():
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), DEADLINE) == message
            await ws.close(4000, "tls bye")
        ending = await asyncio.wait_for(harness.endings.get(), DEADLINE)
        assert ending == ("ConnectionClosedError", 4000, "tls bye")


async def test_wss_round_trip_aiohttp(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async with running_server("deflate", ssl=server_ctx) as harness, \
            aiohttp.ClientSession() as session, \
            session.ws_connect(harness.url, ssl=client_ctx, max_msg_size=MAX_SIZE) as ws:
        for message in MESSAGES.values():
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
            msg = await ws.receive(timeout=DEADLINE)
            assert msg.data == message


async def test_wss_untrusted_certificate_is_rejected_by_the_client(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """The server really presents the trustme certificate: a client without the CA refuses it."""
    untrusting = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    async with running_server("deflate", ssl=server_ctx) as harness:
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(harness.url, ssl=untrusting, open_timeout=DEADLINE)
        # the failed TLS handshake does not disturb the server
        async with connect(harness.url, ssl=client_ctx, open_timeout=DEADLINE) as ws:
            await ws.send("still serving")
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == "still serving"
