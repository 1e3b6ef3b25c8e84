"""Frames: RFC 6455 section 5.7 examples, close payloads, incremental parsing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws import speedups
from shardws.exceptions import InvalidUTF8, LocalProtocolError, PayloadTooBig, RemoteProtocolError
from shardws.protocol.frames import (
    CTRL_OPCODES,
    DATA_OPCODES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Frame,
    FrameParser,
    check_close_code,
    parse_close,
    serialize_close,
    serialize_frame,
)
from tests.protocol.wire import MASK, raw

HELLO_MASKED = bytes([0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])

# RFC 6455 section 5.7: (name, wire bytes, frame, mask key)
RFC_EXAMPLES = [
    ("unmasked text", b"\x81\x05Hello", Frame(OP_TEXT, b"Hello"), None),
    ("masked text", b"\x81\x85" + HELLO_MASKED, Frame(OP_TEXT, b"Hello"), MASK),
    ("fragment 1 'Hel'", b"\x01\x03Hel", Frame(OP_TEXT, b"Hel", fin=False), None),
    ("fragment 2 'lo'", b"\x80\x02lo", Frame(OP_CONT, b"lo"), None),
    ("unmasked ping", b"\x89\x05Hello", Frame(OP_PING, b"Hello"), None),
    ("masked pong", b"\x8a\x85" + HELLO_MASKED, Frame(OP_PONG, b"Hello"), MASK),
    ("256 bytes binary", b"\x82\x7e\x01\x00" + bytes(256), Frame(OP_BINARY, bytes(256)), None),
    (
        "64 KiB binary",
        b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" + bytes(65536),
        Frame(OP_BINARY, bytes(65536)),
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "wire", "frame", "mask"), RFC_EXAMPLES, ids=[c[0] for c in RFC_EXAMPLES]
)
def test_rfc_examples(name: str, wire: bytes, frame: Frame, mask: bytes | None) -> None:
    out = serialize_frame(
        frame.opcode, frame.payload, fin=frame.fin, rsv1=frame.rsv1, mask_key=mask
    )
    assert type(out) is bytes
    assert out == wire
    for step in (len(wire), 1, 7):  # all at once, byte by byte, odd chunks
        parser = FrameParser(require_mask=mask is not None, max_size=None)
        got = []
        for i in range(0, len(wire), step):
            parser.feed(wire[i : i + step])
            while (parsed := parser.next_frame()) is not None:
                got.append(parsed)
        assert got == [frame]
        assert parser.buffered == 0


@pytest.fixture(params=["batch", "one by one"])
def batching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with speedups.scan_frames, and with every frame decoded by the parser itself."""
    if request.param == "one by one":
        monkeypatch.setattr(speedups, "scan_frames", lambda buf, pos, *args: ([], pos))
        monkeypatch.setattr(speedups, "scan_messages", lambda buf, pos, *args: ([], pos))
    return str(request.param)


@pytest.mark.parametrize(
    ("name", "wire", "frame", "mask"), RFC_EXAMPLES, ids=[c[0] for c in RFC_EXAMPLES]
)
def test_rfc_examples_one_by_one(
    name: str, wire: bytes, frame: Frame, mask: bytes | None, batching: str
) -> None:
    """Each example, masked and not, twice in one buffer."""
    for key in (None, MASK):
        one = serialize_frame(frame.opcode, frame.payload, fin=frame.fin, mask_key=key)
        parser = FrameParser(require_mask=key is not None, max_size=None)
        parser.feed(one + one)
        assert [parser.next_frame(), parser.next_frame(), parser.next_frame()] == [
            frame,
            frame,
            None,
        ]


def test_partial_frame(batching: str) -> None:
    """partial_frame/partial_payload describe the frame still arriving."""
    payload = bytes(range(200))
    for masked in (True, False):
        wire = raw(0x81, payload, mask=MASK if masked else None)
        header = 8 if masked else 4
        parser = FrameParser(require_mask=masked, max_size=None)
        parser.feed(raw(0x82, b"x", mask=MASK if masked else None))
        parser.feed(wire[:3])
        assert parser.next_frame() == Frame(OP_BINARY, b"x")
        assert parser.next_frame() is None
        assert parser.partial_frame() is None  # header incomplete
        parser.feed(wire[3 : header + 7])
        assert parser.next_frame() is None
        frame_id = 7 if masked else 3  # after the first frame
        assert parser.partial_frame() == (frame_id, OP_TEXT, False, 7)
        for skip in range(8):
            assert parser.partial_payload(skip) == payload[skip:7]
        parser.feed(wire[header + 7 :])
        assert parser.next_frame() == Frame(OP_TEXT, payload)


def test_opcode_sets() -> None:
    assert sorted(DATA_OPCODES) == [0, 1, 2]
    assert sorted(CTRL_OPCODES) == [8, 9, 10]


def test_serialize_accepts_buffers() -> None:
    for payload in (bytearray(b"abc"), memoryview(b"abc")):
        assert serialize_frame(OP_BINARY, payload) == b"\x82\x03abc"
        assert serialize_frame(OP_BINARY, payload, mask_key=MASK) == raw(0x82, b"abc")
    assert serialize_frame(OP_TEXT, b"x", fin=False, rsv1=True) == b"\x41\x01x"


# (name, frame bytes, parser kwargs, exception, message part)
PARSER_ERRORS = [
    (
        "masked frame to a client",
        raw(0x81, b"a"),
        {"require_mask": False},
        RemoteProtocolError,
        "incorrect masking",
    ),
    (
        "unmasked frame to a server",
        raw(0x81, b"a", mask=None),
        {},
        RemoteProtocolError,
        "not masked",
    ),
    ("RSV1 without extension", raw(0xC1, b"a"), {}, RemoteProtocolError, "RSV1"),
    ("RSV2", raw(0xA1, b"a"), {"rsv1_allowed": True}, RemoteProtocolError, "RSV2"),
    (
        "RSV1 on continuation",
        raw(0xC0, b"a"),
        {"rsv1_allowed": True},
        RemoteProtocolError,
        "continuation",
    ),
    ("opcode 3", raw(0x83), {}, RemoteProtocolError, "opcode 0x3"),
    ("fragmented ping", raw(0x09), {}, RemoteProtocolError, "fragmented control"),
    ("long ping", raw(0x89, length=126), {}, RemoteProtocolError, "control frame too long"),
    ("length MSB", raw(0x82, length=2**63), {}, RemoteProtocolError, "most significant bit"),
    ("too big", raw(0x82, length=11), {"max_size": 10}, PayloadTooBig, "11 bytes"),
]


@pytest.mark.parametrize(
    ("name", "wire", "kwargs", "exc", "text"), PARSER_ERRORS, ids=[c[0] for c in PARSER_ERRORS]
)
def test_parser_errors(
    name: str, wire: bytes, kwargs: dict[str, object], exc: type[Exception], text: str
) -> None:
    options: dict[str, object] = {"require_mask": True, "max_size": None, **kwargs}
    parser = FrameParser(**options)  # type: ignore[arg-type]
    parser.feed(wire)
    with pytest.raises(exc, match=text):
        parser.next_frame()


def test_control_frames_ignore_max_size() -> None:
    """max_size bounds data frames; control frames are bounded by 125 bytes."""
    parser = FrameParser(require_mask=True, max_size=2)
    parser.feed(raw(0x89, b"12345") + raw(0x82, b"123"))
    assert parser.next_frame() == Frame(OP_PING, b"12345")
    with pytest.raises(PayloadTooBig):
        parser.next_frame()


def test_header_needs_more_bytes() -> None:
    """Incomplete 16-bit and 64-bit headers and payloads return None, then parse."""
    for wire in (raw(0x82, bytes(200)), raw(0x82, bytes(70000)), raw(0x82, bytes(200), mask=None)):
        parser = FrameParser(require_mask=wire[1] & 0x80 != 0, max_size=None)
        for size in (1, 3, 9, len(wire) - 1):
            parser.feed(wire[:size] if size == 1 else wire[parser.buffered : size])
            assert parser.next_frame() is None
        parser.feed(wire[-1:])
        frame = parser.next_frame()
        assert frame is not None
        assert frame.payload == bytes(len(frame.payload)) and len(frame.payload) in (200, 70000)


def test_feed_buffers_of_any_type() -> None:
    wire = raw(0x82, b"abc") * 2
    parser = FrameParser(require_mask=True, max_size=None)
    parser.feed(bytearray(wire[:4]))
    parser.feed(memoryview(wire[4:]))
    assert [parser.next_frame(), parser.next_frame(), parser.next_frame()] == [
        Frame(OP_BINARY, b"abc"),
        Frame(OP_BINARY, b"abc"),
        None,
    ]


# ------------------------------------------------------------------ close

CODE_TABLE = [
    *[
        (code, False)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    ],
    *[
        (code, True)
        for code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
    ],
    *[(code, True) for code in (3000, 3999, 4000, 4999)],
]


@pytest.mark.parametrize(("code", "valid"), CODE_TABLE)
def test_check_close_code(code: int, valid: bool) -> None:
    assert check_close_code(code) is valid
    payload = code.to_bytes(2, "big") + b"why" if code < 65536 else b""
    if valid:
        assert parse_close(payload) == Close(code, "why")
        assert serialize_close(code, "why") == payload
    else:
        with pytest.raises(RemoteProtocolError, match="invalid close code"):
            parse_close(payload)
        with pytest.raises(LocalProtocolError):
            serialize_close(code, "why")


# (payload, Close or exception)
PARSE_CLOSE = [
    (b"", Close(1005, "")),
    (b"\x03\xe8", Close(1000, "")),
    (b"\x0b\xb8", Close(3000, "")),  # no reason, a code outside the registered ones
    (b"\x03\xec", RemoteProtocolError),  # 1004, no reason
    (b"\x03\xe9" + "é".encode(), Close(1001, "é")),
    (b"\x03", RemoteProtocolError),
    (b"\x03\xe8\xff", InvalidUTF8),
    (b"\x03\xe8\xed\xa0\x80", InvalidUTF8),
]


@pytest.mark.parametrize(("payload", "expected"), PARSE_CLOSE)
def test_parse_close(payload: bytes, expected: Close | type[Exception]) -> None:
    if isinstance(expected, Close):
        assert parse_close(payload) == expected
    else:
        with pytest.raises(expected):
            parse_close(payload)


def test_serialize_close_reason_limit() -> None:
    assert len(serialize_close(1000, "x" * 123)) == 125
    with pytest.raises(LocalProtocolError, match="123"):
        serialize_close(1000, "x" * 124)
    with pytest.raises(LocalProtocolError):
        serialize_close(1000, "é" * 62)  # 124 bytes


@pytest.mark.parametrize(
    ("close", "text"),
    [
        (Close(1000, ""), "1000 (OK)"),
        (Close(1001, "bye"), "1001 (going away) bye"),
        (Close(1005, ""), "1005 (no status received [internal])"),
        (Close(3000, "x"), "3000 (registered) x"),
        (Close(4999, ""), "4999 (private use)"),
        (Close(2000, ""), "2000 (unknown)"),
    ],
)
def test_close_str(close: Close, text: str) -> None:
    assert str(close) == text


# -------------------------------------------------------------- properties

lengths = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536]).map(lambda n: b"\x5a" * n)
data_frames = st.builds(
    Frame,
    st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY]),
    st.binary(max_size=300) | lengths,
    st.booleans(),
    st.just(False),
)
control_frames = st.builds(
    Frame, st.sampled_from([OP_CLOSE, OP_PING, OP_PONG]), st.binary(max_size=125)
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(data_frames | control_frames, min_size=1, max_size=8),
    st.booleans(),
    st.binary(min_size=4, max_size=4),
    st.lists(st.integers(min_value=0), max_size=12),
)
def test_round_trip_any_split(
    frames: list[Frame], masked: bool, key: bytes, cuts: list[int]
) -> None:
    """serialize -> parse gives the same frames, however the stream is cut."""
    wire = b"".join(
        serialize_frame(
            f.opcode, f.payload, fin=f.fin, rsv1=f.rsv1, mask_key=key if masked else None
        )
        for f in frames
    )
    parser = FrameParser(require_mask=masked, max_size=None)
    got = []
    for chunk in _split(wire, cuts):
        parser.feed(chunk)
        while (frame := parser.next_frame()) is not None:
            got.append(frame)
    assert got == frames
    assert parser.buffered == 0
