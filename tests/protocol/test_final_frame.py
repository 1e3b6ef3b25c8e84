"""serialize_final_frame (the server's fast path) writes exactly what serialize_frame writes."""

from __future__ import annotations

import pytest

from shardws.protocol.connection import SPLIT_PAYLOAD_AT, Connection, Side
from shardws.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    serialize_final_frame,
    serialize_frame,
)

# (opcode, payload length): each length encoding and its edges (RFC 6455
# 5.2); control frames stay within 125 bytes (section 5.5).
CASES = [(opcode, n) for opcode in (OP_TEXT, OP_BINARY) for n in (0, 1, 125, 126, 127, 65535, 65536)]
CASES += [(opcode, n) for opcode in (OP_CLOSE, OP_PING, OP_PONG) for n in (0, 2, 125)]
PAYLOAD_TYPES = [bytes, bytearray, memoryview]


@pytest.mark.parametrize(("opcode", "n"), CASES)
@pytest.mark.parametrize("kind", PAYLOAD_TYPES, ids=lambda k: k.__name__)
def test_same_bytes_as_serialize_frame(opcode: int, n: int, kind: type) -> None:
    payload = kind(bytes(range(256)) * (n // 256) + bytes(n % 256))
    out = serialize_final_frame(opcode, payload)
    assert type(out) is bytes
    assert out == serialize_frame(opcode, payload)
    parser = FrameParser(require_mask=False, max_size=None)
    parser.feed(out)
    frame = parser.next_frame()
    assert frame is not None
    assert (frame.opcode, frame.payload, frame.fin, frame.rsv1) == (opcode, bytes(payload), True, False)


# (method, data, fin, expected wire): a server without compression.
SERVER_SENDS = [
    ("send_text", "é", True, b"\x81\x02\xc3\xa9"),
    ("send_text", b"ok", True, b"\x81\x02ok"),
    ("send_binary", b"", True, b"\x82\x00"),
    ("send_binary", bytes(200), True, b"\x82\x7e\x00\xc8" + bytes(200)),
    ("send_binary", b"ab", False, b"\x02\x02ab"),
    ("send_text", "ab", False, b"\x01\x02ab"),
]


@pytest.mark.parametrize(("method", "data", "fin", "wire"), SERVER_SENDS)
def test_server_messages_on_the_wire(method: str, data: str | bytes, fin: bool, wire: bytes) -> None:
    connection = Connection(Side.SERVER)
    getattr(connection, method)(data, fin=fin)
    assert connection.data_to_send() == [wire]
    assert connection.encode_message(OP_BINARY, b"ab") == b"\x82\x02ab"


BIG = bytes(range(256)) * 16  # SPLIT_PAYLOAD_AT bytes

# (method, data, expected items of data_to_send): from SPLIT_PAYLOAD_AT bytes
# on, a bytes payload is queued after its header, not copied into the frame.
SPLIT_SENDS = [
    ("send_binary", BIG, [b"\x82\x7e\x10\x00", BIG]),
    ("send_text", "a" * 4096, [b"\x81\x7e\x10\x00", b"a" * 4096]),
    ("send_binary", BIG[:-1], [b"\x82\x7e\x0f\xff" + BIG[:-1]]),
    ("send_binary", bytearray(BIG), [b"\x82\x7e\x10\x00" + BIG]),
    ("send_text", bytearray(b"a" * 4096), [b"\x81\x7e\x10\x00" + b"a" * 4096]),
    ("send_binary", BIG * 17, [b"\x82\x7f" + (4096 * 17).to_bytes(8, "big"), BIG * 17]),
]


@pytest.mark.parametrize(("method", "data", "items"), SPLIT_SENDS)
def test_big_payloads_are_not_copied(method: str, data: str | bytes, items: list[bytes]) -> None:
    assert len(BIG) == SPLIT_PAYLOAD_AT
    connection = Connection(Side.SERVER)
    getattr(connection, method)(data)
    out = connection.data_to_send()
    assert out == items
    payload = data.encode() if isinstance(data, str) else bytes(data)
    assert b"".join(out) == serialize_frame(OP_TEXT if method == "send_text" else OP_BINARY, payload)
    if len(out) == 2 and type(data) is bytes:
        assert out[1] is data  # the caller's object itself
