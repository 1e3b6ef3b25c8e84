"""Malformed input from a client: each case must fail the server connection with its close code.

Each case is fed to a server :class:`Connection` (``max_size`` = 1024) all at
once and one byte at a time; the connection must send a close frame with the
expected code, remember the failure, ask for the transport to be closed, and
ignore anything that follows.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pytest

from shardws.protocol.connection import Connection, Event, Side, State
from shardws.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    parse_close,
)
from tests.protocol.wire import client, raw

MAX_SIZE = 1024
KOSME = "κόσμε".encode()
RSV1, RSV2, RSV3 = 4, 2, 1


def deflate(*fragments: bytes) -> list[bytes]:
    """The compressed frame payloads of one message as a permessage-deflate peer sends it."""
    compressor = zlib.compressobj(wbits=-15)
    out = [compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH) for data in fragments]
    out[-1] = out[-1][:-4]
    return out


@dataclass
class Case:
    name: str
    data: bytes
    code: int
    deflate: bool = False
    events: list[Event] = field(default_factory=list)


def close(code: int, reason: bytes = b"") -> bytes:
    return client(OP_CLOSE, code.to_bytes(2, "big") + reason)


BAD_INPUT = [
    # --- framing (1002)
    Case("unmasked client frame", raw(0x81, b"Hello", mask=None), 1002),
    Case("RSV1 without extension", client(OP_TEXT, b"a", rsv=RSV1), 1002),
    Case("RSV2 without extension", client(OP_TEXT, b"a", rsv=RSV2), 1002),
    Case("RSV3 without extension", client(OP_TEXT, b"a", rsv=RSV3), 1002),
    Case("RSV2 with deflate", client(OP_TEXT, b"a", rsv=RSV2), 1002, deflate=True),
    Case("RSV3 with deflate", client(OP_BINARY, b"a", rsv=RSV3), 1002, deflate=True),
    Case(
        "RSV1 on continuation with deflate",
        client(OP_TEXT, deflate(b"a", b"")[0], fin=False, rsv=RSV1)
        + client(OP_CONT, b"\x00", rsv=RSV1),
        1002,
        deflate=True,
    ),
    Case("RSV1 on ping with deflate", client(OP_PING, b"", rsv=RSV1), 1002, deflate=True),
    Case("RSV1 on pong with deflate", client(OP_PONG, b"", rsv=RSV1), 1002, deflate=True),
    Case("RSV1 on close with deflate", client(OP_CLOSE, b"", rsv=RSV1), 1002, deflate=True),
    *[Case(f"reserved opcode {op:#x}", client(op, b"x"), 1002) for op in (3, 4, 5, 6, 7)],
    *[Case(f"reserved opcode {op:#x}", client(op, b"x"), 1002) for op in (0xB, 0xC, 0xD, 0xE, 0xF)],
    Case("ping of 126 bytes", client(OP_PING, bytes(126)), 1002),
    Case("pong of 126 bytes", client(OP_PONG, bytes(126)), 1002),
    Case("close of 126 bytes", close(1000, bytes(124)), 1002),
    Case("close with a 16-bit length field", bytes((0x88, 0xFE)) + (5).to_bytes(2, "big"), 1002),
    Case(
        "ping with a 64-bit length (127 code)", bytes((0x89, 0xFF)) + (5).to_bytes(8, "big"), 1002
    ),
    Case("fragmented ping", client(OP_PING, b"x", fin=False), 1002),
    Case("fragmented pong", client(OP_PONG, b"x", fin=False), 1002),
    Case("fragmented close", client(OP_CLOSE, b"\x03\xe8", fin=False), 1002),
    Case("continuation without start", client(OP_CONT, b"x"), 1002),
    Case("unfinished continuation without start", client(OP_CONT, b"x", fin=False), 1002),
    Case(
        "new text frame during fragmented message",
        client(OP_TEXT, b"Hel", fin=False) + client(OP_TEXT, b"lo"),
        1002,
    ),
    Case(
        "new binary frame during fragmented message, after a ping",
        client(OP_BINARY, b"a", fin=False)
        + client(OP_PING, b"p")
        + client(OP_BINARY, b"b", fin=False),
        1002,
        events=[],  # Ping is checked separately (see test_events_before_failure)
    ),
    Case("64-bit length with MSB set", raw(0x82, length=2**63), 1002),
    Case("64-bit length all ones", raw(0x82, length=2**64 - 1), 1002),
    Case(
        "corrupt compressed data",
        client(OP_TEXT, b"\xff\xff\xff\xff", rsv=RSV1),
        1002,
        deflate=True,
    ),
    Case("close payload of 1 byte", client(OP_CLOSE, b"\x03"), 1002),
    *[
        Case(f"invalid close code {code}", close(code), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    ],
    # --- size (1009): only the header is fed, so nothing of the payload is buffered
    Case("frame over max_size (16-bit length), header only", raw(0x82, length=MAX_SIZE + 1), 1009),
    Case("frame over max_size (64-bit length), header only", raw(0x81, length=2**40), 1009),
    Case(
        "message over max_size across fragments, last header only",
        client(OP_BINARY, bytes(600), fin=False) + raw(0x80, length=600),
        1009,
    ),
    Case(
        "text message over max_size across three fragments",
        client(OP_TEXT, bytes(400), fin=False)
        + client(OP_CONT, bytes(400), fin=False)
        + client(OP_CONT, bytes(400)),
        1009,
    ),
    Case(
        "compressed message over max_size",
        client(OP_BINARY, deflate(bytes(5000))[0], rsv=RSV1),
        1009,
        deflate=True,
    ),
    Case(
        "compressed fragments over max_size",
        client(OP_BINARY, deflate(bytes(1000), bytes(100))[0], fin=False, rsv=RSV1)
        + client(OP_CONT, deflate(bytes(1000), bytes(100))[1]),
        1009,
        deflate=True,
    ),
    # --- UTF-8 (1007)
    Case("invalid UTF-8 in a single frame", client(OP_TEXT, b"Hello\xff"), 1007),
    Case(
        "fail fast: invalid first fragment only",
        client(OP_TEXT, KOSME + b"\xf4\x90\x80\x80", fin=False),
        1007,
    ),
    Case(
        "fail fast: surrogate prefix ED A0 in first fragment",
        client(OP_TEXT, KOSME + b"\xed\xa0", fin=False),
        1007,
    ),
    Case(
        "fail fast: second fragment completes an invalid sequence",
        client(OP_TEXT, KOSME + b"\xf4", fin=False) + client(OP_CONT, b"\x90", fin=False),
        1007,
    ),
    Case(
        "fail fast: invalid bytes in an incomplete frame",
        client(OP_TEXT, KOSME + b"\xf4\x90\x80\x80" + b"edited" * 30)[: 8 + len(KOSME) + 2],
        1007,
    ),
    Case(
        "fail fast: invalid bytes in an incomplete continuation frame",
        client(OP_TEXT, KOSME + b"\xce", fin=False) + client(OP_CONT, b"\xff" + bytes(200))[:10],
        1007,
    ),
    Case(
        "fail fast: unfinished 2-byte sequence then ASCII in an incomplete frame",
        client(OP_TEXT, b"\xc3" + b"a" * 200)[:10],
        1007,
    ),
    Case("overlong 2-byte encoding", client(OP_TEXT, b"\xc0\xaf"), 1007),
    Case("overlong 3-byte encoding", client(OP_TEXT, b"\xe0\x80\xaf"), 1007),
    Case("overlong 4-byte encoding", client(OP_TEXT, b"\xf0\x80\x80\xaf"), 1007),
    Case("surrogate ED A0 80", client(OP_TEXT, b"\xed\xa0\x80"), 1007),
    Case("code point above U+10FFFF", client(OP_TEXT, b"\xf4\x90\x80\x80"), 1007),
    Case("lone continuation byte", client(OP_TEXT, b"\x80"), 1007),
    Case("FE byte", client(OP_TEXT, b"\xfe"), 1007),
    Case("truncated UTF-8 at message end", client(OP_TEXT, KOSME + b"\xce"), 1007),
    Case(
        "truncated UTF-8 at the end of a fragmented message",
        client(OP_TEXT, KOSME, fin=False) + client(OP_CONT, b"\xe1\xbd"),
        1007,
    ),
    Case("invalid UTF-8 close reason", close(1000, b"\xff"), 1007),
    Case("surrogate in close reason", close(1001, b"\xed\xa0\x80"), 1007),
    Case(
        "invalid UTF-8 in compressed text",
        client(OP_TEXT, deflate(b"ok\xff")[0], rsv=RSV1),
        1007,
        deflate=True,
    ),
    Case(
        "invalid UTF-8 in a compressed first fragment",
        client(OP_TEXT, deflate(b"\xed\xa0\x80", b"")[0], fin=False, rsv=RSV1),
        1007,
        deflate=True,
    ),
    # --- valid messages before the bad frame are still delivered
    Case("message then bad opcode", client(OP_TEXT, b"ok") + client(3), 1002, events=["ok"]),
    Case(
        "fragmented message then RSV2",
        client(OP_BINARY, b"a", fin=False)
        + client(OP_CONT, b"b")
        + client(OP_BINARY, b"c", rsv=RSV2),
        1002,
        events=[b"ab"],
    ),
]


def _server(deflate: bool) -> Connection:
    if not deflate:
        return Connection(Side.SERVER, max_size=MAX_SIZE)
    from shardws.protocol.deflate import PerMessageDeflate

    return Connection(
        Side.SERVER, max_size=MAX_SIZE, extensions=[PerMessageDeflate(False, False, 15, 15)]
    )


def test_table_size() -> None:
    assert len(BAD_INPUT) >= 40
    assert len({case.name for case in BAD_INPUT}) == len(BAD_INPUT)


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", BAD_INPUT, ids=[case.name for case in BAD_INPUT])
def test_bad_input(case: Case, bytewise: bool) -> None:
    conn = _server(case.deflate)
    chunks = [case.data[i : i + 1] for i in range(len(case.data))] if bytewise else [case.data]
    events: list[Event] = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
    assert [e for e in events if isinstance(e, str | bytes)] == case.events
    assert conn.failure is not None
    assert conn.failure.close_code == case.code
    # Messages parsed in the same call as the fault hold its close frame back
    # until the application is done with them (then fail_pending()).
    if conn.pending_failure is not None:
        assert case.events and not bytewise
        assert conn.pending_failure is conn.failure
        assert conn.state is State.OPEN and not conn.close_transport_now()
        assert conn.fail_pending()
    assert conn.pending_failure is None
    # The close frame sent is the last thing queued, unmasked, with the code.
    parser = FrameParser(require_mask=False, max_size=None)
    for frame_bytes in conn.data_to_send():
        parser.feed(frame_bytes)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert frames[-1].opcode == OP_CLOSE
    sent = parse_close(frames[-1].payload)
    assert sent.code == case.code
    assert conn.close_sent == sent
    assert conn.state is State.CLOSING
    assert conn.close_transport_now()
    # After failing, incoming data is ignored.
    assert conn.receive_data(client(OP_TEXT, b"later")) == []
    assert conn.data_to_send() == []
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert conn.close_code == 1006
