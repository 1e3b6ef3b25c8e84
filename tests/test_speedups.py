"""The C speedups and their pure-Python twins behave identically.

Every case runs against both ``shardws._speedups`` (C, imported directly so
that this file checks it even under ``SHARDWS_NO_SPEEDUPS=1``) and the
``py_*`` twins in ``shardws.speedups``, and against a naive reference.
"""

from __future__ import annotations

import array
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import shardws._speedups as c_impl  # type: ignore[import-not-found]
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws import speedups
from shardws.protocol.connection import Connection, Side, State

ROOT = Path(__file__).resolve().parent.parent

IMPLS = {
    "c": {
        "apply_mask": c_impl.apply_mask,
        "unmask_inplace": c_impl.unmask_inplace,
        "parse_header": c_impl.parse_header,
        "scan_frames": c_impl.scan_frames,
        "scan_messages": c_impl.scan_messages,
    },
    "py": {
        "apply_mask": speedups.py_apply_mask,
        "unmask_inplace": speedups.py_unmask_inplace,
        "parse_header": speedups.py_parse_header,
        "scan_frames": speedups.py_scan_frames,
        "scan_messages": speedups.py_scan_messages,
    },
}


def reference_mask(data: bytes, mask: bytes) -> bytes:
    """RFC 6455 section 5.3, octet by octet."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def outcome(func: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("raise", (exception type, message))."""
    try:
        return ("ok", func(*args))
    except Exception as exc:  # noqa: BLE001 - compared between twins
        return ("raise", (type(exc), str(exc)))


# ----------------------------------------------------------- apply_mask

MASK_CASES = [
    # (data, mask, expected)
    (b"", b"abcd", b""),
    # RFC 6455 section 5.7: "A single-frame masked text message" ("Hello").
    (b"Hello", bytes.fromhex("37fa213d"), bytes.fromhex("7f9f4d5158")),
    (b"\x00" * 9, b"\x01\x02\x03\x04", b"\x01\x02\x03\x04" * 2 + b"\x01"),
    (b"\xff" * 4, b"\xff\xff\xff\xff", b"\x00" * 4),
    (bytes(range(256)) * 300, b"\x00\x00\x00\x00", bytes(range(256)) * 300),
    (b"\xaa" * (65536 + 3), b"\x0f\xf0\x0f\xf0", b"\xa5\x5a" * 32769 + b"\xa5"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("data", "mask", "expected"), MASK_CASES)
def test_apply_mask_vectors(impl: str, data: bytes, mask: bytes, expected: bytes) -> None:
    apply_mask = IMPLS[impl]["apply_mask"]
    for container in (bytes, bytearray, memoryview):
        result = apply_mask(container(data), mask)
        assert type(result) is bytes
        assert result == expected


lengths = st.one_of(st.integers(0, 70), st.integers(71, 4200), st.sampled_from([65535, 65536, 70001]))


@settings(max_examples=150, deadline=None)
@given(
    length=lengths,
    seed=st.binary(min_size=1, max_size=64),
    mask=st.binary(min_size=4, max_size=4),
    skip=st.integers(0, 15),
)
def test_apply_mask_twins(length: int, seed: bytes, mask: bytes, skip: int) -> None:
    raw = (seed * (length // len(seed) + 2))[: length + skip]
    data = memoryview(raw)[skip:]  # unaligned start
    expected = reference_mask(bytes(data), mask) if length <= 4200 else None
    c_result = c_impl.apply_mask(data, mask)
    py_result = speedups.py_apply_mask(data, mask)
    assert c_result == py_result
    assert len(c_result) == len(data)
    if expected is not None:
        assert c_result == expected
    # masking twice is the identity
    assert c_impl.apply_mask(c_result, bytearray(mask)) == bytes(data)


def test_apply_mask_raw_bytes_of_any_format() -> None:
    """Non-byte formats are masked as their raw memory, like bytes(view)."""
    ints = array.array("i", range(100))
    grid = memoryview(bytes(range(48))).cast("B", (6, 8))
    for obj in (ints, grid):
        expected = reference_mask(bytes(memoryview(obj)), b"wxyz")
        for impl in IMPLS.values():
            assert impl["apply_mask"](obj, b"wxyz") == expected
            assert impl["apply_mask"](b"abcdefgh", memoryview(b"wxyz").cast("B", (2, 2))) == (
                reference_mask(b"abcdefgh", b"wxyz")
            )


# -------------------------------------------------------- unmask_inplace


@settings(max_examples=150, deadline=None)
@given(
    data=st.one_of(st.binary(max_size=70), st.binary(min_size=71, max_size=3000)),
    mask=st.binary(min_size=4, max_size=4),
    offset_frac=st.floats(0, 1),
    skip=st.integers(0, 7),
    as_view=st.booleans(),
)
def test_unmask_inplace_twins(
    data: bytes, mask: bytes, offset_frac: float, skip: int, as_view: bool
) -> None:
    offset = int(len(data) * offset_frac)
    expected = data[:offset] + reference_mask(data[offset:], mask)
    results = []
    for impl in IMPLS.values():
        backing = bytearray(b"\xee" * skip + data)
        target: bytearray | memoryview = memoryview(backing)[skip:] if as_view else backing[skip:]
        assert impl["unmask_inplace"](target, mask, offset) is None
        result = bytes(target)
        assert backing[:skip] == b"\xee" * skip  # nothing outside the view is touched
        results.append(result)
    assert results[0] == results[1] == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_unmask_inplace_default_offset_and_large(impl: str) -> None:
    data = bytes(range(256)) * 600  # above the GIL-release threshold
    buf = bytearray(data)
    IMPLS[impl]["unmask_inplace"](buf, b"\x01\x02\x03\x04")
    assert buf == reference_mask(data, b"\x01\x02\x03\x04")
    grid = bytearray(range(24))
    IMPLS[impl]["unmask_inplace"](memoryview(grid).cast("B", (4, 6)), b"abcd", 5)
    assert grid == bytes(range(5)) + reference_mask(bytes(range(5, 24)), b"abcd")


# --------------------------------------------------------- parse_header

HEADER_CASES = [
    # (wire bytes, expected tuple)
    (b"\x81\x05", (True, False, False, False, 1, False, 5, 2, None)),
    (b"\x01\x85abcd", (False, False, False, False, 1, True, 5, 6, b"abcd")),
    (b"\xf2\x7d", (True, True, True, True, 2, False, 125, 2, None)),
    (b"\x88\x7e\x00\x7e", (True, False, False, False, 8, False, 126, 4, None)),
    (b"\x82\xfe\xff\xffWXYZ", (True, False, False, False, 2, True, 65535, 8, b"WXYZ")),
    (b"\x82\x7f" + (2**32).to_bytes(8, "big"), (True, False, False, False, 2, False, 2**32, 10, None)),
    (b"\x4f\xff" + b"\xff" * 8 + b"mask", (False, True, False, False, 15, True, 2**64 - 1, 14, b"mask")),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("wire", "expected"), HEADER_CASES)
def test_parse_header_vectors(impl: str, wire: bytes, expected: tuple[Any, ...]) -> None:
    parse_header = IMPLS[impl]["parse_header"]
    for prefix in (b"", b"junk"):
        for container in (bytes, bytearray, memoryview):
            buf = container(prefix + wire + b"payload")
            assert parse_header(buf, len(prefix)) == expected
            # every truncation of the header is incomplete
            for cut in range(len(prefix), len(prefix) + expected[7]):
                assert parse_header(container(prefix + wire)[:cut], len(prefix)) is None


@settings(max_examples=300, deadline=None)
@given(buf=st.binary(max_size=24), offset_frac=st.floats(0, 1), as_view=st.booleans())
def test_parse_header_twins(buf: bytes, offset_frac: float, as_view: bool) -> None:
    offset = int(len(buf) * offset_frac)
    arg: bytes | memoryview = memoryview(b"z" + buf)[1:] if as_view else buf
    assert c_impl.parse_header(arg, offset) == speedups.py_parse_header(arg, offset)


# ---------------------------------------------------------- scan_frames

KNOWN_OPCODES = {0x0, 0x1, 0x2, 0x8, 0x9, 0xA}


def reference_scan(
    buf: bytes, pos: int, require_mask: bool, max_size: int | None, rsv1_allowed: bool
) -> tuple[list[tuple[int, bytes, bool, bool]], int]:
    """scan_frames written plainly from its contract, on top of parse_header."""
    frames = []
    while (header := speedups.py_parse_header(buf, pos)) is not None:
        fin, rsv1, rsv2, rsv3, opcode, masked, length, header_length, key = header
        control = opcode >= 0x8
        valid = (
            opcode in KNOWN_OPCODES
            and not rsv2
            and not rsv3
            and (not rsv1 or (rsv1_allowed and opcode in (0x1, 0x2)))
            and (fin or not control)
            and masked == require_mask
            # control frames: 7-bit length field only ("125 bytes or less",
            # and "the minimal number of bytes MUST be used")
            and (header_length == (6 if masked else 2) or not control)
            and length < 2**63
            and (control or max_size is None or length <= max_size)
        )
        if not valid or pos + header_length + length > len(buf):
            break
        payload = buf[pos + header_length : pos + header_length + length]
        if key is not None:
            payload = speedups.py_apply_mask(payload, key)  # checked against reference_mask
        frames.append((opcode, payload, fin, rsv1))
        pos += header_length + length
        if not fin or opcode == 0x8:
            break
    return frames, pos


def encode_frame(b0: int, masked: bool, payload: bytes, width: int, declared: int | None) -> bytes:
    """One frame; width 7/16/64 picks the length field (non-minimal allowed)."""
    length = len(payload) if declared is None else declared
    mask_bit = 0x80 if masked else 0
    if width == 7 and length < 126:
        head = bytes((b0, mask_bit | length))
    elif width in (7, 16) and length < 65536:
        head = bytes((b0, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((b0, mask_bit | 127)) + length.to_bytes(8, "big")
    if masked:
        key = bytes((b0, 0x5A, len(payload) & 0xFF, 0xC3))
        return head + key + speedups.py_apply_mask(payload, key)
    return head + payload


likely_first_bytes = st.one_of(
    st.sampled_from([0x81, 0x82, 0x01, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0xC2, 0x41, 0xC0]),
    st.integers(0, 255),
)
frame_specs = st.tuples(
    likely_first_bytes,
    st.booleans(),  # masked
    st.one_of(
        st.binary(max_size=130),
        st.builds(lambda n, byte: byte * n, st.integers(65530, 65540), st.binary(min_size=1, max_size=1)),
    ),
    st.sampled_from([7, 7, 7, 16, 64]),
    st.one_of(st.none(), st.none(), st.none(), st.sampled_from([2**63, 2**63 + 5, 2**40, 1])),
)


@settings(max_examples=400, deadline=None)
@given(
    specs=st.lists(frame_specs, max_size=6),
    cut=st.floats(0, 1.2),
    junk=st.binary(max_size=3),
    require_mask=st.booleans(),
    max_size=st.sampled_from([None, 0, 1, 10, 125, 126, 65535, 2**70, -1, -(2**70)]),
    rsv1_allowed=st.booleans(),
    as_view=st.booleans(),
)
def test_scan_frames_twins(
    specs: list[tuple[int, bool, bytes, int, int | None]],
    cut: float,
    junk: bytes,
    require_mask: bool,
    max_size: int | None,
    rsv1_allowed: bool,
    as_view: bool,
) -> None:
    wire = junk + b"".join(encode_frame(*spec) for spec in specs)
    wire = wire[: max(len(junk), int(len(wire) * cut))]
    expected = reference_scan(wire, len(junk), require_mask, max_size, rsv1_allowed)
    arg: bytes | bytearray | memoryview = memoryview(wire) if as_view else bytearray(wire)
    for impl in IMPLS.values():
        frames, end = impl["scan_frames"](arg, len(junk), require_mask, max_size, rsv1_allowed)
        assert (frames, end) == expected
        assert all(type(frame[1]) is bytes for frame in frames)


SCAN_CASES = [
    # (wire, require_mask, max_size, rsv1_allowed, expected opcodes, expected end)
    (b"\x82\x80abcd" * 3, True, None, False, [2, 2, 2], 18),
    (b"\x82\x80abcd\x82\x00", True, None, False, [2], 6),  # unmasked frame on a server
    (b"\x82\x00\x82\x80abcd", False, None, False, [2], 2),  # masked frame on a client
    (b"\x02\x00\x80\x00\x82\x00", False, None, False, [2], 2),  # stops after FIN clear
    (b"\x88\x00\x82\x00", False, None, False, [8], 2),  # stops after close
    (b"\x89\x00\x8a\x00\x82\x00", False, None, False, [9, 10, 2], 6),  # ping, pong go on
    (b"\x82\x05hello\x82\x06hello!", False, 5, False, [2], 7),  # over max_size
    (b"\x89\x05hello", False, 0, False, [9], 7),  # max_size is for data frames
    (b"\x82\x05hello", False, -1, False, [], 0),
    (b"\x82\x05hel", False, None, False, [], 0),  # incomplete
    (b"\xc1\x00\x82\x00", False, None, True, [1, 2], 4),
    (b"\xc1\x00", False, None, False, [], 0),  # RSV1 without an extension
    (b"\xc0\x00", False, None, True, [], 0),  # RSV1 on a continuation
    (b"\xc9\x00", False, None, True, [], 0),  # RSV1 on a ping
    (b"\xa2\x00", False, None, True, [], 0),  # RSV2
    (b"\x92\x00", False, None, True, [], 0),  # RSV3
    (b"\x83\x00", False, None, False, [], 0),  # reserved opcode
    (b"\x8b\x00", False, None, False, [], 0),  # reserved control opcode
    (b"\x09\x00", False, None, False, [], 0),  # fragmented ping
    (b"\x89\x7e\x00\x7e" + b"x" * 126, False, None, False, [], 0),  # control > 125
    (b"\x82\x7f" + (2**63).to_bytes(8, "big"), False, None, False, [], 0),  # length MSB
    (b"\x88\x7e\x00\x00", False, None, False, [], 0),  # control, non-minimal length
    (b"\x82\x7e\x00\x01x", False, None, False, [2], 5),  # data: non-minimal is tolerated
    (b"\x82\x7e\x00", False, None, False, [], 0),  # incomplete 16-bit length
    (b"\x82\x7f\x00\x00\x00\x00\x00\x00\x00", False, None, False, [], 0),  # incomplete 64-bit
    (b"", True, None, False, [], 0),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("wire", "require_mask", "max_size", "rsv1_allowed", "opcodes", "end"), SCAN_CASES
)
def test_scan_frames_cases(
    impl: str,
    wire: bytes,
    require_mask: bool,
    max_size: int | None,
    rsv1_allowed: bool,
    opcodes: list[int],
    end: int,
) -> None:
    frames, stop = IMPLS[impl]["scan_frames"](wire, 0, require_mask, max_size, rsv1_allowed)
    assert ([frame[0] for frame in frames], stop) == (opcodes, end)
    assert (frames, stop) == reference_scan(wire, 0, require_mask, max_size, rsv1_allowed)


# -------------------------------------------------------- scan_messages


def reference_messages(
    buf: bytes, pos: int, require_mask: bool, max_size: int | None
) -> tuple[list[str | bytes], int]:
    """scan_messages from its contract: the leading frames of reference_scan that are whole messages."""
    messages: list[str | bytes] = []
    while True:
        frames, end = reference_scan(buf, pos, require_mask, max_size, False)
        if not frames:
            break
        opcode, payload, fin, _ = frames[0]
        if not fin or opcode not in (0x1, 0x2):
            break
        if opcode == 0x1:
            try:
                messages.append(payload.decode())
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        header = speedups.py_parse_header(buf, pos)
        assert header is not None
        pos += header[7] + header[6]
    return messages, pos


@settings(max_examples=400, deadline=None)
@given(
    specs=st.lists(frame_specs, max_size=6),
    cut=st.floats(0, 1.2),
    junk=st.binary(max_size=3),
    require_mask=st.booleans(),
    max_size=st.sampled_from([None, 0, 1, 10, 125, 126, 65535, 2**70, -1, -(2**70)]),
    as_view=st.booleans(),
)
def test_scan_messages_twins(
    specs: list[tuple[int, bool, bytes, int, int | None]],
    cut: float,
    junk: bytes,
    require_mask: bool,
    max_size: int | None,
    as_view: bool,
) -> None:
    wire = junk + b"".join(encode_frame(*spec) for spec in specs)
    wire = wire[: max(len(junk), int(len(wire) * cut))]
    expected = reference_messages(wire, len(junk), require_mask, max_size)
    arg: bytes | bytearray | memoryview = memoryview(wire) if as_view else bytearray(wire)
    for impl in IMPLS.values():
        assert impl["scan_messages"](arg, len(junk), require_mask, max_size) == expected


TEXT_500 = "é" * 250  # 500 bytes: unmasked on the C stack
TEXT_600 = "é" * 300  # 600 bytes: unmasked in a temporary bytes object

MESSAGE_CASES = [
    # (wire, require_mask, max_size, expected messages, expected end)
    (encode_frame(0x81, True, b"hi", 7, None) * 2, True, None, ["hi", "hi"], 16),
    (encode_frame(0x82, True, b"hi", 7, None) + b"\x89\x80abcd", True, None, [b"hi"], 8),
    (encode_frame(0x81, False, b"hi", 7, None), False, None, ["hi"], 4),
    (encode_frame(0x81, True, TEXT_500.encode(), 16, None), True, None, [TEXT_500], 508),
    (encode_frame(0x81, True, TEXT_600.encode(), 16, None), True, None, [TEXT_600], 608),
    (encode_frame(0x81, True, b"\xed\xa0\x80", 7, None), True, None, [], 0),  # surrogate
    (encode_frame(0x81, True, b"a" * 600 + b"\xff", 16, None), True, None, [], 0),
    (encode_frame(0x81, False, b"\xc3", 7, None), False, None, [], 0),  # cut code point
    (encode_frame(0x82, True, b"x" * 70000, 64, None), True, None, [b"x" * 70000], 70014),
    (encode_frame(0x82, True, b"x" * 70000, 64, None), True, 69999, [], 0),
    (encode_frame(0x01, True, b"hi", 7, None), True, None, [], 0),  # FIN clear
    (encode_frame(0xC1, True, b"hi", 7, None), True, None, [], 0),  # compressed
    (encode_frame(0x80, True, b"hi", 7, None), True, None, [], 0),  # continuation
    (encode_frame(0x82, False, b"hi", 7, None), True, None, [], 0),  # not masked
    (encode_frame(0x82, True, b"hi", 7, None)[:-1], True, None, [], 0),  # incomplete
    (b"\x82\x7f" + (2**63).to_bytes(8, "big"), False, None, [], 0),  # length MSB
    (b"\x82", False, None, [], 0),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("wire", "require_mask", "max_size", "messages", "end"), MESSAGE_CASES)
def test_scan_messages_cases(
    impl: str,
    wire: bytes,
    require_mask: bool,
    max_size: int | None,
    messages: list[str | bytes],
    end: int,
) -> None:
    got = IMPLS[impl]["scan_messages"](wire, 0, require_mask, max_size)
    assert got == (messages, end)
    assert got == reference_messages(wire, 0, require_mask, max_size)


# ------------------------------------- frame parser: batch == one by one


def no_scan(buf: Any, offset: int, *args: Any) -> tuple[list[Any], int]:
    """A scan_frames that decodes nothing: the parser decodes frame by frame."""
    return [], offset


def drive_connection(
    wire: bytes, chunk: int, max_size: int | None, scan: bool
) -> tuple[list[Any], str | None, list[bytes], str]:
    """Feed ``wire`` to a server Connection; what the application would see."""
    with pytest.MonkeyPatch.context() as patch:
        if not scan:
            patch.setattr(speedups, "scan_frames", no_scan)
            patch.setattr(speedups, "scan_messages", no_scan)
        connection = Connection(Side.SERVER, max_size=max_size, state=State.OPEN)
        events: list[Any] = []
        for start in range(0, len(wire), chunk):
            events.extend(connection.receive_data(wire[start : start + chunk]))
    failure = connection.failure
    return (
        events,
        None if failure is None else f"{type(failure).__name__}: {failure}",
        connection.data_to_send(),
        connection.state.name,
    )


message_frames = st.tuples(
    st.sampled_from([0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC2, 0x83]),
    st.just(True),  # masked, as a client must
    st.one_of(st.sampled_from([b"", b"hi", b"\x03\xe8bye", "é".encode()]), st.binary(max_size=300)),
    st.sampled_from([7, 7, 7, 16, 64]),
    st.one_of(st.none(), st.none(), st.none(), st.none(), st.sampled_from([2**63, 2**40])),
)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(message_frames, max_size=8),
    chunk=st.sampled_from([1, 3, 7, 64, 65536]),
    max_size=st.sampled_from([None, 0, 2, 100, 300, 2**20]),
)
def test_connection_same_with_and_without_scan(
    specs: list[tuple[int, bool, bytes, int, int | None]], chunk: int, max_size: int | None
) -> None:
    """The batch decoder changes nothing a Connection reports, error or not."""
    wire = b"".join(encode_frame(*spec) for spec in specs)
    assert drive_connection(wire, chunk, max_size, scan=True) == drive_connection(
        wire, chunk, max_size, scan=False
    )


# ----------------------------------------------------------- bad input

readonly = memoryview(bytearray(b"abcdefgh")).toreadonly()
strided = memoryview(bytearray(b"abcdefgh"))[::2]
released = memoryview(b"abcd")
released.release()

BAD_INPUTS = [
    # (function, args): C and pure raise the same type with the same message
    ("apply_mask", ("text", b"abcd")),
    ("apply_mask", (None, b"abcd")),
    ("apply_mask", (strided, b"abcd")),
    ("apply_mask", (released, b"abcd")),
    ("apply_mask", (b"data", b"abc")),
    ("apply_mask", (b"data", b"abcde")),
    ("apply_mask", (b"data", "abcd")),
    ("apply_mask", (b"data", 1234)),
    ("apply_mask", (b"data", memoryview(b"abcdefgh")[::2])),
    ("apply_mask", ("text", b"abc")),  # data is checked before the mask
    ("unmask_inplace", (b"bytes are read-only", b"abcd")),
    ("unmask_inplace", (readonly, b"abcd")),
    ("unmask_inplace", (strided, b"abcd")),
    ("unmask_inplace", ([1, 2, 3], b"abcd")),
    ("unmask_inplace", (bytearray(8), b"ab")),
    ("unmask_inplace", (bytearray(8), b"abcd", -1)),
    ("unmask_inplace", (bytearray(8), b"abcd", 9)),
    ("unmask_inplace", (bytearray(8), b"abcd", 2**70)),
    ("unmask_inplace", (bytearray(8), b"abcd", -(2**70))),
    ("unmask_inplace", (bytearray(8), b"abcd", "1")),
    ("unmask_inplace", (bytearray(8), b"abcd", 1.0)),
    ("unmask_inplace", (bytearray(8), b"ab", 99)),  # mask before offset
    ("parse_header", ("\x81\x00", 0)),
    ("parse_header", (b"\x81\x00", -1)),
    ("parse_header", (b"\x81\x00", 3)),
    ("parse_header", (b"\x81\x00", None)),
    ("parse_header", (strided, 0)),
    ("scan_frames", ("text", 0, True, None, False)),
    ("scan_frames", (strided, 0, True, None, False)),
    ("scan_frames", (b"\x82\x00", 3, True, None, False)),
    ("scan_frames", (b"\x82\x00", -1, True, None, False)),
    ("scan_frames", (b"\x82\x00", 0, True, "10", False)),
    ("scan_frames", (b"\x82\x00", 0, True, 1.5, False)),
    ("scan_frames", (b"\x82\x00", "0", True, None, False)),
    ("scan_messages", ("text", 0, True, None)),
    ("scan_messages", (strided, 0, True, None)),
    ("scan_messages", (b"\x82\x00", 3, True, None)),
    ("scan_messages", (b"\x82\x00", 0, True, "10")),
    ("scan_messages", (b"\x82\x00", 0, True, 1.5)),
]


@pytest.mark.parametrize(("func", "args"), BAD_INPUTS)
def test_bad_input_same_exception(func: str, args: tuple[Any, ...]) -> None:
    c_outcome = outcome(IMPLS["c"][func], *args)
    py_outcome = outcome(IMPLS["py"][func], *args)
    assert c_outcome[0] == "raise"
    assert c_outcome == py_outcome


WRONG_ARITY = [
    ("apply_mask", (b"data",)),
    ("apply_mask", (b"data", b"abcd", 0)),
    ("unmask_inplace", (bytearray(4),)),
    ("unmask_inplace", (bytearray(4), b"abcd", 0, 0)),
    ("parse_header", (b"\x81\x00",)),
    ("parse_header", (b"\x81\x00", 0, 0)),
    ("scan_frames", (b"\x82\x00", 0, True, None)),
    ("scan_frames", (b"\x82\x00", 0, True, None, False, 0)),
    ("scan_messages", (b"\x82\x00", 0, True)),
    ("scan_messages", (b"\x82\x00", 0, True, None, False)),
]


@pytest.mark.parametrize(("func", "args"), WRONG_ARITY)
def test_wrong_arity_is_type_error(func: str, args: tuple[Any, ...]) -> None:
    for impl in IMPLS.values():
        with pytest.raises(TypeError):
            impl[func](*args)


@pytest.mark.parametrize("func", ["apply_mask", "parse_header"])
def test_keywords_are_refused_alike(func: str) -> None:
    """Arguments are positional-only in both twins."""
    for impl in IMPLS.values():
        with pytest.raises(TypeError):
            impl[func](b"\x81\x00", **{"mask" if func == "apply_mask" else "offset": 0})


# ------------------------------------------------------- module binding

PROBE = textwrap.dedent(
    """
    import json, sys, warnings
    {setup}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import shardws
        import shardws.speedups as s
        import shardws.speedups
    print(json.dumps({{
        "c": s.C_SPEEDUPS,
        "impl": s.MASK_IMPL,
        "pure_bound": [
            s.apply_mask is s.py_apply_mask,
            s.unmask_inplace is s.py_unmask_inplace,
            s.parse_header is s.py_parse_header,
        ],
        "warnings": [
            [w.category.__name__, str(w.message)] for w in caught if "speedups" in str(w.message)
        ],
        "works": s.apply_mask(b"Hello", bytes.fromhex("37fa213d")).hex(),
    }}))
    """
)

BLOCK_EXTENSION = "sys.modules['shardws._speedups'] = None  # import raises ImportError"

BINDING_CASES = [
    # (SHARDWS_NO_SPEEDUPS, setup code, C bound?, expected warning categories)
    (None, "", True, []),
    ("0", "", True, []),
    ("1", "", False, []),
    ("yes", "", False, []),
    (None, BLOCK_EXTENSION, False, ["RuntimeWarning"]),
    ("1", BLOCK_EXTENSION, False, []),  # forced fallback: no warning
]


@pytest.mark.parametrize(("env_value", "setup", "c_bound", "warned"), BINDING_CASES)
def test_module_binding(env_value: str | None, setup: str, c_bound: bool, warned: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHARDWS_NO_SPEEDUPS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if env_value is not None:
        env["SHARDWS_NO_SPEEDUPS"] = env_value
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert report["c"] is c_bound
    assert report["pure_bound"] == [not c_bound] * 3
    assert (report["impl"] == "python") is not c_bound
    assert [category for category, _ in report["warnings"]] == warned
    if warned:
        assert "pure-Python fallback" in report["warnings"][0][1]
    assert report["works"] == "7f9f4d5158"


def test_failed_compile_still_builds(tmp_path: Path) -> None:
    """setup.py build_ext with a broken compiler exits 0 and says it fell back."""
    env = dict(os.environ, CC="/bin/false")
    proc = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            str(tmp_path / "lib"),
            "--build-temp",
            str(tmp_path / "tmp"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "installing the pure-Python fallback" in proc.stderr
    assert not list(tmp_path.rglob("_speedups*.so"))
