"""Interoperability: aiohttp's ``ws_connect`` client against a shardws server.

aiohttp has no API to send a fragmented message, so the two
``fragmented_in_*`` cases are not generated for it (the server-side
fragmentation cases do run; websockets and websocket-client cover
fragments sent by the client).
"""

from __future__ import annotations

import types

import aiohttp
import pytest
from interop_cases import CASES, DEADLINE, MAX_SIZE, run_case


class AiohttpClient:
    """:class:`interop_cases.Client` over ``aiohttp.ClientSession.ws_connect``.

    autoping is off so that pongs reach :meth:`ping`; :meth:`recv` answers
    the server's pings itself.
    """

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 extensions: str | None) -> None:
        self.session = session
        self.ws = ws
        self.extensions = extensions

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def send_fragments(self, parts: list[str] | list[bytes]) -> None:  # pragma: no cover
        raise AssertionError("aiohttp cannot send fragments; the case is not generated")

    async def _next(self) -> aiohttp.WSMessage:
        while True:
            msg = await self.ws.receive(timeout=DEADLINE)
            if msg.type is aiohttp.WSMsgType.PING:
                await self.ws.pong(msg.data)
            else:
                return msg

    async def recv(self) -> str | bytes:
        msg = await self._next()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        return msg.data  # type: ignore[no-any-return]

    async def ping(self, payload: bytes) -> bytes:
        await self.ws.ping(payload)
        msg = await self._next()
        assert msg.type is aiohttp.WSMsgType.PONG, msg
        return msg.data  # type: ignore[no-any-return]

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def recv_close(self) -> tuple[int, str]:
        msg = await self._next()
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg  # autoclose answers it
        return msg.data, msg.extra

    async def aclose(self) -> None:
        await self.ws.close()
        await self.session.close()


async def _connect(url: str, offer_deflate: bool) -> AiohttpClient:
    seen: list[str | None] = []

    async def on_request_end(session: object, ctx: object, params: types.SimpleNamespace) -> None:
        seen.append(params.response.headers.get("Sec-WebSocket-Extensions"))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    session = aiohttp.ClientSession(trace_configs=[trace])
    try:
        ws = await session.ws_connect(
            url, compress=15 if offer_deflate else 0, max_msg_size=MAX_SIZE, autoping=False,
        )
    except BaseException:
        await session.close()
        raise
    assert len(seen) == 1
    return AiohttpClient(session, ws, seen[0])


AIOHTTP_CASES = sorted(c for c in CASES if not c.startswith("fragmented_in"))


@pytest.mark.parametrize("mode", ["deflate", "server-plain"])
@pytest.mark.parametrize("case", AIOHTTP_CASES)
async def test_aiohttp_client(case: str, mode: str) -> None:
    await run_case(_connect, case, mode)
