"""Interoperability: websocket-client (synchronous) against a shardws server.

websocket-client blocks, so every call runs in a worker thread
(``asyncio.to_thread``) while the server runs on the test's event loop.
It does not implement permessage-deflate: it runs in the mode where the
server offers compression and the client does not ask for it.
"""

from __future__ import annotations

import asyncio

import pytest
import websocket
from interop_cases import CASES, DEADLINE, run_case
from websocket import ABNF


def _close_payload(data: bytes) -> tuple[int, str]:
    return int.from_bytes(data[:2], "big"), data[2:].decode()


class SyncClient:
    """:class:`interop_cases.Client` over ``websocket.WebSocket`` in a thread."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.extensions = ws.getheaders().get("sec-websocket-extensions")

    async def send(self, message: str | bytes) -> None:
        opcode = ABNF.OPCODE_TEXT if isinstance(message, str) else ABNF.OPCODE_BINARY
        await asyncio.to_thread(self.ws.send, message, opcode)

    def _send_fragments(self, parts: list[str] | list[bytes]) -> None:
        opcode = ABNF.OPCODE_TEXT if isinstance(parts[0], str) else ABNF.OPCODE_BINARY
        for i, part in enumerate(parts):
            fin = int(i == len(parts) - 1)
            data = part.encode() if isinstance(part, str) else part
            self.ws.send_frame(ABNF.create_frame(data, opcode if i == 0 else ABNF.OPCODE_CONT, fin))

    async def send_fragments(self, parts: list[str] | list[bytes]) -> None:
        await asyncio.to_thread(self._send_fragments, parts)

    def _recv(self) -> str | bytes:
        # recv_data answers pings itself and skips pongs.
        opcode, data = self.ws.recv_data()
        assert opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY), (opcode, data)
        return data.decode() if opcode == ABNF.OPCODE_TEXT else data

    async def recv(self) -> str | bytes:
        return await asyncio.to_thread(self._recv)

    def _ping(self, payload: bytes) -> bytes:
        self.ws.ping(payload)
        while True:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == ABNF.OPCODE_PONG:
                return bytes(frame.data)

    async def ping(self, payload: bytes) -> bytes:
        return await asyncio.to_thread(self._ping, payload)

    async def close(self, code: int, reason: str) -> None:
        await asyncio.to_thread(self.ws.close, code, reason.encode(), DEADLINE)

    def _recv_close(self) -> tuple[int, str]:
        while True:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == ABNF.OPCODE_CLOSE:  # websocket-client has answered it
                self.ws.shutdown()  # so close() must not send a second close frame
                return _close_payload(frame.data)

    async def recv_close(self) -> tuple[int, str]:
        return await asyncio.to_thread(self._recv_close)

    async def aclose(self) -> None:
        if self.ws.connected:
            await asyncio.to_thread(self.ws.close, 1000, b"", DEADLINE)


async def _connect(url: str, offer_deflate: bool) -> SyncClient:
    assert not offer_deflate  # websocket-client has no permessage-deflate
    ws = await asyncio.to_thread(websocket.create_connection, url, timeout=DEADLINE)
    return SyncClient(ws)


@pytest.mark.parametrize("case", sorted(CASES))
async def test_websocket_client_sync(case: str) -> None:
    await run_case(_connect, case, "client-plain")
