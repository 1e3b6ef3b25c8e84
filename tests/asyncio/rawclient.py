"""A frame-level WebSocket client for tests: shardws' own sans-I/O Connection
(client side) over an asyncio stream. It can refuse to answer pings, stop
reading, and see every frame event (pings, pongs, fragments as messages)."""

from __future__ import annotations

import asyncio
import base64
import os
from collections import deque
from typing import Any

from shardws.protocol.connection import Connection, Side, State


def upgrade_request(
    port: int, path: str = "/", headers: list[tuple[str, str]] | None = None
) -> bytes:
    """A WebSocket upgrade request to 127.0.0.1:``port`` with a fresh key."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = Connection(Side.CLIENT, max_size=None, state=State.OPEN)
        self.events: deque[Any] = deque()
        self.answer_pings = True
        self.status: int | None = None
        self.head = b""

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", headers: list[tuple[str, str]] | None = None
    ) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        writer.write(upgrade_request(port, path, headers))
        client.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        client.status = int(client.head.split(b" ", 2)[1])
        return client

    def flush(self) -> None:
        data = self.protocol.data_to_send()
        if data:
            self.writer.write(b"".join(data))

    def send_text(self, text: str, fin: bool = True) -> None:
        self.protocol.send_text(text.encode(), fin=fin)
        self.flush()

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        self.protocol.send_binary(data, fin=fin)
        self.flush()

    def ping(self, data: bytes) -> None:
        self.protocol.send_ping(data)
        self.flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.protocol.send_close(code, reason)
        self.flush()

    async def next_event(self, timeout: float = 5.0) -> Any:
        """The next event (str, bytes, Ping, Pong, Close); ``None`` at EOF."""
        while not self.events:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
            except ConnectionResetError:
                data = b""
            if not data:
                if self.protocol.state is not State.CLOSED:
                    self.protocol.receive_eof()
                return None
            self.events.extend(self.protocol.receive_data(data))
            if self.answer_pings:
                self.flush()
            else:
                self.protocol.data_to_send()  # drop the automatic pongs
        return self.events.popleft()

    async def until_eof(self, timeout: float = 5.0) -> list[Any]:
        """Read until the server closes the TCP connection; return the events seen."""
        seen = []
        while (event := await self.next_event(timeout)) is not None:
            seen.append(event)
        return seen

    async def aclose(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
