"""Interoperability: the websockets (asyncio) client against a shardws server."""

from __future__ import annotations

import pytest
from interop_cases import CASES, MAX_SIZE, run_case
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


class WebsocketsClient:
    """:class:`interop_cases.Client` over ``websockets.asyncio.client``."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        assert ws.response is not None
        self.extensions = ws.response.headers.get("Sec-WebSocket-Extensions")

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def send_fragments(self, parts: list[str] | list[bytes]) -> None:
        await self.ws.send(iter(parts))  # websockets sends an iterable as fragments

    async def recv(self) -> str | bytes:
        return await self.ws.recv()

    async def ping(self, payload: bytes) -> bytes:
        # websockets resolves the waiter when the matching pong arrives.
        await (await self.ws.ping(payload))
        return payload

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    async def recv_close(self) -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as info:
            await self.ws.recv()
        assert info.value.rcvd is not None
        return info.value.rcvd.code, info.value.rcvd.reason

    async def aclose(self) -> None:
        await self.ws.close()


async def _connect(url: str, offer_deflate: bool) -> WebsocketsClient:
    ws = await connect(
        url, compression="deflate" if offer_deflate else None, max_size=MAX_SIZE,
        ping_interval=None,
    )
    return WebsocketsClient(ws)


@pytest.mark.parametrize("mode", ["deflate", "server-plain"])
@pytest.mark.parametrize("case", sorted(CASES))
async def test_websockets_client(case: str, mode: str) -> None:
    await run_case(_connect, case, mode)
