"""permessage-deflate (RFC 7692): shardws/protocol/deflate.py.

Table-driven: RFC 7692 section 7.2.3 examples, negotiation offers, invalid
configurations, decompression bombs, corrupt input, lazy zlib state and the
compressor pool; hypothesis round trips over every parameter combination with
random fragmentation and compressors evicted between messages.
"""

from __future__ import annotations

import random
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws.exceptions import (
    DuplicateParameter,
    InvalidParameterName,
    InvalidParameterValue,
    NegotiationError,
    PayloadTooBig,
    RemoteProtocolError,
)
from shardws.protocol.deflate import (
    MAX_LIVE_CONTEXTS,
    ContextPool,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)

TAIL = b"\x00\x00\xff\xff"
H = bytes.fromhex


def pmd(
    remote_nct: bool = False,
    local_nct: bool = False,
    remote_bits: int = 15,
    local_bits: int = 15,
    compress_settings: dict[str, int] | None = None,
    pool: ContextPool | None = None,
) -> PerMessageDeflate:
    return PerMessageDeflate(
        remote_nct, local_nct, remote_bits, local_bits, compress_settings, pool
    )


def receive(ext: PerMessageDeflate, frames: list[bytes], max_size: int | None = None) -> bytes:
    """Feed one message's frame payloads as Connection does, return the message.

    Each call gets what is left of ``max_size`` for the message.
    """
    parts: list[bytes] = []
    produced = 0
    for i, frame in enumerate(frames):
        remaining = None if max_size is None else max_size - produced
        part = ext.decompress(frame, i == len(frames) - 1, remaining)
        assert remaining is None or len(part) <= remaining
        parts.append(part)
        produced += len(part)
    return b"".join(parts)


# ------------------------------------------------------- RFC 7692 7.2.3


# (id, remote_no_context_takeover, messages as lists of frame payloads (hex), expected messages)
RFC_DECODE_CASES = [
    ("7.2.3.1 one block", False, [["f248cdc9c90700"]], [b"Hello"]),
    ("7.2.3.1 fragmented", False, [["f248cd", "c9c90700"]], [b"Hello"]),
    ("7.2.3.2 shared window", False, [["f248cdc9c90700"], ["f200110000"]], [b"Hello"] * 2),
    (
        "7.2.3.2 no context takeover",
        True,
        [["f248cdc9c90700"], ["f248cdc9c90700"]],
        [b"Hello"] * 2,
    ),
    ("7.2.3.3 stored block", False, [["000500faff48656c6c6f00"]], [b"Hello"]),
    ("7.2.3.4 BFINAL set", False, [["f348cdc9c9070000"]], [b"Hello"]),
    (
        "7.2.3.4 BFINAL then a new message",
        False,
        [["f348cdc9c9070000"], ["f248cdc9c90700"]],
        [b"Hello"] * 2,
    ),
    ("7.2.3.4 BFINAL across frames", False, [["f348cdc9c90700", "00", ""]], [b"Hello"]),
    # After a BFINAL block the next stream starts on the same LZ77 window
    # (section 7.2.2: the "sliding window used to process the last
    # compressed message"), within a message and across messages.
    (
        "BFINAL, then a reference into the previous message",
        False,
        [["f348cdc9c9070000"], ["f200110000"]],
        [b"Hello"] * 2,
    ),
    ("BFINAL, then a reference across it", False, [["f348cdc9c90700f200110000"]], [b"Hello" * 2]),
    (
        "BFINAL, then a reference across it in the next frame",
        True,
        [["f348cdc9c90700", "f200110000"]],
        [b"Hello" * 2],
    ),
    ("7.2.3.5 two blocks", False, [["f24805000000ffffcac9c90700"]], [b"Hello"]),
    ("7.2.3.6 empty last fragment", False, [["f248cdc9c907000000ffff", "00"]], [b"Hello"]),
    ("empty message", False, [["00"]], [b""]),
    ("empty message, window 8", False, [["00"]], [b""]),
]


@pytest.mark.parametrize(
    ("remote_nct", "messages", "expected"),
    [case[1:] for case in RFC_DECODE_CASES],
    ids=[case[0] for case in RFC_DECODE_CASES],
)
@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "max_size exact"])
def test_rfc_decode(
    remote_nct: bool, messages: list[list[str]], expected: list[bytes], bounded: bool
) -> None:
    ext = pmd(remote_nct=remote_nct)
    got = [
        receive(ext, [H(f) for f in frames], len(want) if bounded else None)
        for frames, want in zip(messages, expected, strict=True)
    ]
    assert got == expected


# (id, local_no_context_takeover, messages as lists of fragments, expected payloads (hex))
RFC_ENCODE_CASES = [
    ("7.2.3.1 one block", False, [[b"Hello"]], [["f248cdc9c90700"]]),
    (
        "7.2.3.2 shared window",
        False,
        [[b"Hello"], [b"Hello"]],
        [["f248cdc9c90700"], ["f200110000"]],
    ),
    (
        "7.2.3.2 server_no_context_takeover",
        True,
        [[b"Hello"], [b"Hello"]],
        [["f248cdc9c90700"], ["f248cdc9c90700"]],
    ),
    ("7.2.3.6 empty last fragment", False, [[b"Hello", b""]], [["f248cdc9c907000000ffff", "00"]]),
    ("empty message", True, [[b""]], [["00"]]),
]


@pytest.mark.parametrize(
    ("local_nct", "messages", "expected"),
    [case[1:] for case in RFC_ENCODE_CASES],
    ids=[case[0] for case in RFC_ENCODE_CASES],
)
def test_rfc_encode(
    local_nct: bool, messages: list[list[bytes]], expected: list[list[str]]
) -> None:
    ext = pmd(local_nct=local_nct)
    got = [
        [ext.compress(frag, i == len(frags) - 1).hex() for i, frag in enumerate(frags)]
        for frags in messages
    ]
    assert got == expected


# ----------------------------------------------------------- corruption


def deflate_bits(fields: list[tuple[int, int]]) -> bytes:
    """Pack (value, width) DEFLATE fields; width < 0: a Huffman code (MSB first)."""
    acc = n = 0
    for value, width in fields:
        if width < 0:
            width = -width
            value = int(format(value, f"0{width}b")[::-1], 2)
        acc |= value << n
        n += width
    return acc.to_bytes((n + 7) // 8, "little")


def _raw(data: bytes, wbits: int = 15, level: int = 9) -> bytes:
    """Raw DEFLATE of one message, sync-flushed, tail removed (what a peer sends)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


# (id, remote window bits, messages as lists of frame payloads (hex)); the last message is corrupt
CORRUPT_CASES = [
    ("reserved block type", 15, [["ff"]]),
    # BFINAL, fixed Huffman, length 258 at distance 1, end of block.
    (
        "distance before any output",
        15,
        [[deflate_bits([(1, 1), (1, 2), (0b11000101, -8), (0, -5), (0, -7)]).hex()]],
    ),
    ("bad stored length", 15, [["0005000000"]]),
    ("garbage after BFINAL", 15, [["f348cdc9c90700ff"]]),
    ("bad stored block after BFINAL", 15, [["f348cdc9c9070000", "f200110000"]]),
    # client_no_context_takeover agreed: the window is empty at each message.
    ("reference into the previous message", None, [["f248cdc9c90700"], ["f200110000"]]),
    ("reference across BFINAL", None, [["f348cdc9c9070000"], ["f200110000"]]),
]


@pytest.mark.parametrize(
    ("bits", "messages"), [c[1:] for c in CORRUPT_CASES], ids=[c[0] for c in CORRUPT_CASES]
)
def test_corrupt_data_fails_with_1002(bits: int | None, messages: list[list[str]]) -> None:
    """bits None: 15 bits and client_no_context_takeover."""
    ext = pmd(remote_bits=bits or 15, remote_nct=bits is None)
    for frames in messages[:-1]:
        receive(ext, [H(f) for f in frames])
    with pytest.raises(RemoteProtocolError) as info:
        receive(ext, [H(f) for f in messages[-1]])
    assert type(info.value) is RemoteProtocolError
    assert info.value.close_code == 1002


@pytest.mark.parametrize("frame_size", [1, 7, 1000])
def test_window_8_inflates_a_zlib_window_9_stream(frame_size: int) -> None:
    """A client told client_max_window_bits=8 deflates with 9 bits (zlib's minimum).

    zlib's deflate only emits distances up to 2**wbits - 262, i.e. 250 with
    9 bits, so a 256-byte window inflates it, even fed in small frames.
    """
    data = bytes(range(100)) * 5 + bytes(range(256)) * 3
    compressed = _raw(data, wbits=9)
    assert receive(pmd(remote_bits=8), _chunks(compressed, frame_size)) == data


# ------------------------------------------------------ bounded inflation


class SpyDecoder:
    """Wraps a zlib decompressor; records every max_length asked and output size."""

    calls: list[tuple[int, int]]  # (max_length argument, len(output))

    def __init__(self, real: Any, calls: list[tuple[int, int]]) -> None:
        self._real = real
        self.calls = calls

    def decompress(self, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = self._real.decompress(data, max_length)
        self.calls.append((max_length, len(out)))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def zlib_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = zlib.decompressobj

    def spy(*args: Any, **kwargs: Any) -> SpyDecoder:
        return SpyDecoder(real(*args, **kwargs), calls)

    monkeypatch.setattr(zlib, "decompressobj", spy)
    return calls


# A frame whose last 258 output bytes only appear once the tail is appended:
# a fixed-Huffman block, five 9-bit literals 0xc8, then length code 285 (258
# bytes) ending exactly on an octet boundary; its 5-bit distance code
# (distance 1) comes from the zero bits of 0x00 0x00 0xff 0xff.
TAIL_ONLY = deflate_bits(
    [(0, 1), (1, 2)] + [(0b110010000 + 0xC8 - 144, -9)] * 5 + [(0b11000101, -8)]
)
TAIL_ONLY_MESSAGE = b"\xc8" * 263

BOMB = _raw(bytes(1_000_000))  # 1 MB of zeros in under 1 KiB


def _chunks(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)] or [b""]


# (id, frames of one message, max_length, expected message or None for PayloadTooBig)
LIMIT_CASES = [
    ("bomb 1 KiB -> 1 MB", [BOMB], 65536, None),
    ("bomb, limit 0", [BOMB], 0, None),
    ("bomb in 100-byte frames", _chunks(BOMB, 100), 65536, None),
    ("bomb, unbounded", [BOMB], None, bytes(1_000_000)),
    ("bomb, exactly at the limit", [BOMB], 1_000_000, bytes(1_000_000)),
    ("bomb, one byte over", [BOMB], 999_999, None),
    ("tail flush exactly at the limit", [TAIL_ONLY], 263, TAIL_ONLY_MESSAGE),
    ("tail flush one byte over", [TAIL_ONLY], 262, None),
    ("tail flush in its own frame, at the limit", [TAIL_ONLY, b""], 263, TAIL_ONLY_MESSAGE),
    ("tail flush in its own frame, over", [TAIL_ONLY, b""], 262, None),
    ("small message at the limit", [H("f248cdc9c90700")], 5, b"Hello"),
    ("small message over", [H("f248cdc9c90700")], 4, None),
    ("empty message, limit 0", [H("00")], 0, b""),
    ("BFINAL at the limit", [H("f348cdc9c9070000")], 5, b"Hello"),
    ("BFINAL then more data over", [H("f348cdc9c90700") + _raw(b"World")], 9, None),
    (
        "BFINAL then more data at the limit",
        [H("f348cdc9c90700") + _raw(b"World")],
        10,
        b"HelloWorld",
    ),
]


@pytest.mark.parametrize(
    ("frames", "max_length", "expected"),
    [c[1:] for c in LIMIT_CASES],
    ids=[c[0] for c in LIMIT_CASES],
)
def test_inflation_is_bounded(
    zlib_calls: list[tuple[int, int]],
    frames: list[bytes],
    max_length: int | None,
    expected: bytes | None,
) -> None:
    assert len(BOMB) < 1024
    ext = pmd()
    if expected is None:
        with pytest.raises(PayloadTooBig) as info:
            receive(ext, frames, max_length)  # asserts no call returns too much
        assert info.value.close_code == 1009
    else:
        assert receive(ext, frames, max_length) == expected
    for asked, produced in zlib_calls:
        if max_length is None:
            assert asked == 0
        else:
            # 0 would mean "unbounded" to zlib: never asked.
            assert 1 <= asked <= max_length + 1
            assert produced <= asked
    # What zlib produced for the whole message, refused part included.
    if max_length is not None:
        assert sum(produced for _, produced in zlib_calls) <= max_length + 1


def test_limit_spans_the_frames_of_one_message_only() -> None:
    sender, receiver = pmd(), pmd()
    message = bytes(range(256)) * 8  # 2048 bytes, 4 frames of 512

    def frames() -> list[bytes]:
        sent = [sender.compress(chunk, False) for chunk in _chunks(message, 512)]
        return [*sent, sender.compress(b"", True)]

    # The whole message fits, again and again: the count restarts at fin.
    for _ in range(3):
        assert receive(receiver, frames(), len(message)) == message
    # Each frame fits, the message does not.
    with pytest.raises(PayloadTooBig):
        receive(receiver, frames(), len(message) - 1)


# ---------------------------------------------------------- negotiation

P = list[tuple[str, str | None]]
F = dict[str, Any]
DEFAULTS: F = {
    "server_max_window_bits": 12,
    "client_max_window_bits": 12,
    "compress_settings": {"memLevel": 5},
}

# (id, factory kwargs, offer, expected response or exception class,
#  expected (remote_nct, local_nct, remote_bits, local_bits))
NEGOTIATION_CASES: list[
    tuple[str, F, P, P | type[Exception], tuple[bool, bool, int, int] | None]
] = [
    ("bare offer", {}, [], [], (False, False, 15, 15)),
    (
        "bare offer, defaults",
        DEFAULTS,
        [],
        [("server_max_window_bits", "12")],
        (False, False, 15, 12),
    ),
    (
        "browser offer, defaults",
        DEFAULTS,
        [("client_max_window_bits", None)],
        [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
        (False, False, 12, 12),
    ),
    (
        "browser offer, no config",
        {},
        [("client_max_window_bits", None)],
        [],
        (False, False, 15, 15),
    ),
    (
        "client limits itself",
        {},
        [("client_max_window_bits", "10")],
        [("client_max_window_bits", "10")],
        (False, False, 10, 15),
    ),
    (
        "client limit below config",
        DEFAULTS,
        [("client_max_window_bits", "9")],
        [("server_max_window_bits", "12"), ("client_max_window_bits", "9")],
        (False, False, 9, 12),
    ),
    (
        "client limit above config",
        DEFAULTS,
        [("client_max_window_bits", "14")],
        [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
        (False, False, 12, 12),
    ),
    (
        "client window 8",
        {"client_max_window_bits": 8},
        [("client_max_window_bits", None)],
        [("client_max_window_bits", "8")],
        (False, False, 8, 15),
    ),
    (
        "server window requested",
        {},
        [("server_max_window_bits", "10")],
        [("server_max_window_bits", "10")],
        (False, False, 15, 10),
    ),
    (
        "server window requested below config",
        DEFAULTS,
        [("server_max_window_bits", "10")],
        [("server_max_window_bits", "10")],
        (False, False, 15, 10),
    ),
    (
        "server window requested above config",
        DEFAULTS,
        [("server_max_window_bits", "15")],
        [("server_max_window_bits", "12")],
        (False, False, 15, 12),
    ),
    (
        "server window 8 cannot be honoured",
        {},
        [("server_max_window_bits", "8")],
        InvalidParameterValue,
        None,
    ),
    (
        "server window 8, config 9",
        {"server_max_window_bits": 9},
        [("server_max_window_bits", "8")],
        InvalidParameterValue,
        None,
    ),
    (
        "server_no_context_takeover offered",
        {},
        [("server_no_context_takeover", None)],
        [("server_no_context_takeover", None)],
        (False, True, 15, 15),
    ),
    (
        "server_no_context_takeover configured",
        {"server_no_context_takeover": True},
        [],
        [("server_no_context_takeover", None)],
        (False, True, 15, 15),
    ),
    (
        "client_no_context_takeover offered",
        {},
        [("client_no_context_takeover", None)],
        [("client_no_context_takeover", None)],
        (True, False, 15, 15),
    ),
    (
        "client_no_context_takeover configured",
        {"client_no_context_takeover": True},
        [],
        [("client_no_context_takeover", None)],
        (True, False, 15, 15),
    ),
    (
        "all four parameters",
        {},
        [
            ("server_no_context_takeover", None),
            ("client_no_context_takeover", None),
            ("server_max_window_bits", "9"),
            ("client_max_window_bits", "8"),
        ],
        [
            ("server_no_context_takeover", None),
            ("client_no_context_takeover", None),
            ("server_max_window_bits", "9"),
            ("client_max_window_bits", "8"),
        ],
        (True, True, 8, 9),
    ),
    (
        "names are case-insensitive",
        {},
        [("Server_No_Context_Takeover", None)],
        [("server_no_context_takeover", None)],
        (False, True, 15, 15),
    ),
    (
        "required client window, offered",
        {"client_max_window_bits": 10, "require_client_max_window_bits": True},
        [("client_max_window_bits", None)],
        [("client_max_window_bits", "10")],
        (False, False, 10, 15),
    ),
    (
        "required client window, missing",
        {"client_max_window_bits": 10, "require_client_max_window_bits": True},
        [],
        NegotiationError,
        None,
    ),
    ("duplicate flag", {}, [("server_no_context_takeover", None)] * 2, DuplicateParameter, None),
    (
        "duplicate window",
        {},
        [("client_max_window_bits", "9"), ("client_max_window_bits", "10")],
        DuplicateParameter,
        None,
    ),
    (
        "duplicate, other case",
        {},
        [("server_max_window_bits", "9"), ("SERVER_MAX_WINDOW_BITS", "9")],
        DuplicateParameter,
        None,
    ),
    ("unknown parameter", {}, [("x_foo", None)], InvalidParameterName, None),
    ("unknown parameter with value", {}, [("max_window_bits", "10")], InvalidParameterName, None),
    (
        "value on server_no_context_takeover",
        {},
        [("server_no_context_takeover", "1")],
        InvalidParameterValue,
        None,
    ),
    (
        "value on client_no_context_takeover",
        {},
        [("client_no_context_takeover", "")],
        InvalidParameterValue,
        None,
    ),
    (
        "server window without value",
        {},
        [("server_max_window_bits", None)],
        InvalidParameterValue,
        None,
    ),
    ("window 7", {}, [("server_max_window_bits", "7")], InvalidParameterValue, None),
    ("window 16", {}, [("client_max_window_bits", "16")], InvalidParameterValue, None),
    ("window 0", {}, [("client_max_window_bits", "0")], InvalidParameterValue, None),
    ("leading zero", {}, [("server_max_window_bits", "09")], InvalidParameterValue, None),
    ("sign", {}, [("client_max_window_bits", "+9")], InvalidParameterValue, None),
    ("spaces", {}, [("client_max_window_bits", " 9")], InvalidParameterValue, None),
    ("not a number", {}, [("client_max_window_bits", "ten")], InvalidParameterValue, None),
    ("empty value", {}, [("server_max_window_bits", "")], InvalidParameterValue, None),
    (
        "non-ASCII digit",
        {},
        [("server_max_window_bits", "\u0661\u0665")],
        InvalidParameterValue,
        None,
    ),
]


@pytest.mark.parametrize(
    ("factory_kwargs", "offer", "expected", "extension"),
    [c[1:] for c in NEGOTIATION_CASES],
    ids=[c[0] for c in NEGOTIATION_CASES],
)
def test_negotiation(
    factory_kwargs: F,
    offer: P,
    expected: P | type[Exception],
    extension: tuple[bool, bool, int, int] | None,
) -> None:
    factory = ServerPerMessageDeflateFactory(**factory_kwargs)
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            factory.process_request_params(offer, [])
        assert type(info.value) is expected
        assert isinstance(info.value, NegotiationError)
        return
    response, ext = factory.process_request_params(offer, [])
    assert response == expected
    assert (
        ext.remote_no_context_takeover,
        ext.local_no_context_takeover,
        ext.remote_max_window_bits,
        ext.local_max_window_bits,
    ) == extension
    assert ext.compress_settings == factory_kwargs.get("compress_settings", {})
    # Whatever was agreed, a client honouring the response can talk to us.
    _check_pair(ext, offer=response)


def _check_pair(server: PerMessageDeflate, offer: P) -> None:
    agreed = dict(offer)
    client = pmd(
        remote_nct="server_no_context_takeover" in agreed,
        local_nct="client_no_context_takeover" in agreed,
        remote_bits=int(agreed.get("server_max_window_bits") or 15),
        # zlib deflates with 9 at least; 9 only uses distances up to 250.
        local_bits=max(9, int(agreed.get("client_max_window_bits") or 15)),
    )
    for message in [b"Hello", b"Hello" * 50, bytes(range(256)) * 3]:
        assert receive(client, [server.compress(message)]) == message
        assert receive(server, [client.compress(message)]) == message


def test_offers_tried_in_turn() -> None:
    """The handshake's loop: the first acceptable offer wins (RFC 7692 section 5)."""
    factory = ServerPerMessageDeflateFactory(**DEFAULTS)
    offers: list[P] = [
        [("server_max_window_bits", "8")],
        [("x_unknown", None)],
        [("server_no_context_takeover", None), ("client_max_window_bits", None)],
        [],
    ]
    declined = []
    for offer in offers:
        try:
            response, ext = factory.process_request_params(offer, [])
        except NegotiationError as exc:
            declined.append(type(exc))
            continue
        break
    assert declined == [InvalidParameterValue, InvalidParameterName]
    assert response == [
        ("server_no_context_takeover", None),
        ("server_max_window_bits", "12"),
        ("client_max_window_bits", "12"),
    ]
    assert ext.share_key is not None


def test_duplicate_extension_declined() -> None:
    factory = ServerPerMessageDeflateFactory()
    _, ext = factory.process_request_params([], [])
    with pytest.raises(NegotiationError):
        factory.process_request_params([], [ext])
    # Another extension does not matter.
    factory.process_request_params([], [object()])


# (id, factory kwargs)
INVALID_FACTORY_CASES: list[tuple[str, F]] = [
    ("server window 8", {"server_max_window_bits": 8}),
    ("server window 16", {"server_max_window_bits": 16}),
    ("client window 7", {"client_max_window_bits": 7}),
    ("client window 16", {"client_max_window_bits": 16}),
    ("require without value", {"require_client_max_window_bits": True}),
    ("wbits in settings", {"compress_settings": {"wbits": 15}}),
    ("zdict in settings", {"compress_settings": {"zdict": b"x"}}),
    ("unknown setting", {"compress_settings": {"memlevel": 5}}),
    ("bad memLevel", {"compress_settings": {"memLevel": 10}}),
    ("bad level", {"compress_settings": {"level": 10}}),
    ("level -2", {"compress_settings": {"level": -2}}),
    ("level as text", {"compress_settings": {"level": "9"}}),
    ("level as float", {"compress_settings": {"level": 9.0}}),
    ("memLevel 0", {"compress_settings": {"memLevel": 0}}),
    ("strategy 5", {"compress_settings": {"strategy": 5}}),
    ("method 9", {"compress_settings": {"method": 9}}),
    ("negative pool", {"max_live_contexts": -1}),
]


@pytest.mark.parametrize(
    "kwargs", [c[1] for c in INVALID_FACTORY_CASES], ids=[c[0] for c in INVALID_FACTORY_CASES]
)
def test_invalid_factory_configuration(kwargs: F) -> None:
    with pytest.raises(ValueError):
        ServerPerMessageDeflateFactory(**kwargs)


# (id, PerMessageDeflate positional args)
INVALID_EXTENSION_CASES: list[tuple[str, tuple[Any, ...]]] = [
    ("remote 7", (False, False, 7, 15)),
    ("remote 16", (False, False, 16, 15)),
    ("local 8", (False, False, 15, 8)),
    ("local 16", (False, False, 15, 16)),
    ("wbits setting", (False, False, 15, 15, {"wbits": -9})),
]


@pytest.mark.parametrize(
    "args", [c[1] for c in INVALID_EXTENSION_CASES], ids=[c[0] for c in INVALID_EXTENSION_CASES]
)
def test_invalid_extension_arguments(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(*args)


def test_enable_server_permessage_deflate() -> None:
    (factory,) = enable_server_permessage_deflate(None)
    assert isinstance(factory, ServerPerMessageDeflateFactory)
    assert (factory.server_max_window_bits, factory.client_max_window_bits) == (12, 12)
    assert factory.compress_settings == {"memLevel": 5}
    mine = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
    assert enable_server_permessage_deflate([mine]) == [mine]
    other = object()
    extended = enable_server_permessage_deflate([other])
    assert extended[0] is other and len(extended) == 2


def test_repr() -> None:
    assert repr(pmd(True, False, 10, 11)) == (
        "PerMessageDeflate(remote_no_context_takeover=True, local_no_context_takeover=False, "
        "remote_max_window_bits=10, local_max_window_bits=11)"
    )
    assert repr(ServerPerMessageDeflateFactory(server_max_window_bits=10)).startswith(
        "ServerPerMessageDeflateFactory(server_no_context_takeover=False, "
    )
    assert repr(ServerPerMessageDeflateFactory()).endswith(", max_live_contexts=256)")
    assert repr(ContextPool(3)) == "ContextPool(size=3, live=0)"


# ------------------------------------------------------------ share_key


# (id, kwargs of two extensions, keys equal?)
SHARE_KEY_CASES: list[tuple[str, F, F, bool]] = [
    ("same settings", {"local_nct": True}, {"local_nct": True, "remote_bits": 9}, True),
    ("different window", {"local_nct": True}, {"local_nct": True, "local_bits": 12}, False),
    (
        "different level",
        {"local_nct": True},
        {"local_nct": True, "compress_settings": {"level": 1}},
        False,
    ),
    (
        "settings order",
        {"local_nct": True, "compress_settings": {"level": 1, "memLevel": 5}},
        {"local_nct": True, "compress_settings": {"memLevel": 5, "level": 1}},
        True,
    ),
]


@pytest.mark.parametrize(
    ("a", "b", "equal"), [c[1:] for c in SHARE_KEY_CASES], ids=[c[0] for c in SHARE_KEY_CASES]
)
def test_share_key(a: F, b: F, equal: bool) -> None:
    x, y = pmd(**a), pmd(**b)
    assert x.share_key is not None and y.share_key is not None
    assert (x.share_key == y.share_key) is equal
    messages = [b"Hello", b"Hello", bytes(range(256)) * 4, b""]
    out_x = [x.compress(m) for m in messages]
    out_y = [y.compress(m) for m in messages]
    if equal:
        assert out_x == out_y
    # With no context takeover every message is compressed from scratch.
    assert out_x[0] == out_x[1]


def test_no_share_key_with_context_takeover() -> None:
    assert pmd(remote_nct=True).share_key is None


# --------------------------------------------------------------- memory


# Boundary values deflateInit2() accepts, each checked against zlib itself.
VALID_SETTINGS_CASES: list[dict[str, int]] = [
    {"level": -1},
    {"level": 0},
    {"level": 9},
    {"memLevel": 1},
    {"memLevel": 9},
    {"strategy": zlib.Z_FIXED},
    {"method": zlib.DEFLATED, "strategy": zlib.Z_DEFAULT_STRATEGY},
]


@pytest.mark.parametrize("settings_", VALID_SETTINGS_CASES, ids=str)
def test_valid_compress_settings(settings_: dict[str, int]) -> None:
    factory = ServerPerMessageDeflateFactory(compress_settings=settings_)
    _, ext = factory.process_request_params([], [])
    message = b"Hello, Hello, Hello"
    assert receive(pmd(), [ext.compress(message)]) == message


# ------------------------------------------------------ lazy zlib state


@pytest.fixture
def zlib_objects(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the zlib compressors and decompressors created from now on."""
    created = {"compressobj": 0, "decompressobj": 0}
    for name in created:
        real = getattr(zlib, name)

        def counting(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            created[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(zlib, name, counting)
    return created


# (id, factory kwargs, client offer)
LAZY_CASES: list[tuple[str, F, P]] = [
    ("defaults", {}, [("client_max_window_bits", None)]),
    (
        "no context takeover",
        {},
        [("server_no_context_takeover", None), ("client_no_context_takeover", None)],
    ),
    ("15 bits, no pool", {"server_max_window_bits": 15, "max_live_contexts": None}, []),
]


@pytest.mark.parametrize(
    ("factory_kwargs", "offer"), [c[1:] for c in LAZY_CASES], ids=[c[0] for c in LAZY_CASES]
)
def test_no_zlib_object_until_the_first_message(
    zlib_objects: dict[str, int], factory_kwargs: F, offer: P
) -> None:
    """Negotiating creates nothing of zlib; each direction's first message creates its own."""
    factory = ServerPerMessageDeflateFactory(**{**DEFAULTS, **factory_kwargs})
    response, ext = factory.process_request_params(offer, [])
    assert zlib_objects == {"compressobj": 0, "decompressobj": 0}
    client = zlib.compressobj(wbits=-9)
    zlib_objects["compressobj"] = 0
    payload = (client.compress(b"Hello") + client.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert ext.decompress(payload, True, None) == b"Hello"
    assert zlib_objects == {"compressobj": 0, "decompressobj": 1}
    assert ext.compress(b"Hello")
    assert zlib_objects == {"compressobj": 1, "decompressobj": 1}
    assert response  # the offer was accepted with parameters


# --------------------------------------------------------- compressor pool


# (id, pool size, which of three connections sends (or receives) a message,
# in turn; whether each of those messages created a zlib stream)
POOL_CASES = [
    ("fits", 3, "abcabc", [1, 1, 1, 0, 0, 0]),
    ("least recently used evicted", 2, "abac" + "ab", [1, 1, 0, 1, 0, 1]),
    ("cyclic, one too many", 2, "abcabc", [1] * 6),
    ("size 1, same connection", 1, "aaab", [1, 0, 0, 1]),
    ("size 0: rebuilt every time", 0, "aaa", [1, 1, 1]),
]


@pytest.mark.parametrize(
    ("size", "uses", "created"), [c[1:] for c in POOL_CASES], ids=[c[0] for c in POOL_CASES]
)
def test_pool_keeps_the_most_recent_compressors(
    zlib_objects: dict[str, int], size: int, uses: str, created: list[int]
) -> None:
    pool = ContextPool(size)
    exts = {name: pmd(local_bits=12, pool=pool) for name in "abc"}
    peers = {name: pmd(remote_bits=12) for name in "abc"}
    got = []
    for i, name in enumerate(uses):
        before = zlib_objects["compressobj"]
        message = f"message {i} from {name}: Hello, Hello".encode()
        payload = exts[name].compress(message)
        got.append(zlib_objects["compressobj"] - before)
        # Evicted or not, the peer's one long-lived stream decodes it.
        assert receive(peers[name], [payload]) == message
    assert got == created
    assert len(pool) == min(size, len(set(uses)))


@pytest.mark.parametrize(
    ("size", "uses", "created"), [c[1:] for c in POOL_CASES], ids=[c[0] for c in POOL_CASES]
)
def test_pool_keeps_the_most_recent_decompressors(
    zlib_objects: dict[str, int], size: int, uses: str, created: list[int]
) -> None:
    pool = ContextPool(size)
    exts = {name: pmd(remote_bits=12, pool=pool) for name in "abc"}
    peers = {name: pmd(local_bits=12) for name in "abc"}  # one long-lived stream each
    payloads = [
        peers[name].compress(f"message {i} from {name}: Hello, Hello".encode())
        for i, name in enumerate(uses)
    ]
    zlib_objects["compressobj"] = 0
    got = []
    for i, (name, payload) in enumerate(zip(uses, payloads, strict=True)):
        before = zlib_objects["decompressobj"]
        assert receive(exts[name], [payload]) == f"message {i} from {name}: Hello, Hello".encode()
        got.append(zlib_objects["decompressobj"] - before)
    assert got == created


def test_pool_evicts_a_decompressor_at_the_end_of_its_message(
    zlib_objects: dict[str, int],
) -> None:
    """Evicted inside a fragmented message, a decoder stays until the message ends.

    With a pool of 0 every frame evicts the connection that it enters: the
    second frame needs the decoder's partial block, the next message
    rebuilds a decoder on the window.
    """
    ext, peer = pmd(pool=ContextPool(0)), pmd()
    message = bytes(range(256)) * 4
    # A frame boundary inside a block: the decoder holds a partial block.
    payload = peer.compress(message)
    first, second = payload[: len(payload) // 2], payload[len(payload) // 2 :]
    assert receive(ext, [first, second]) == message
    assert zlib_objects["decompressobj"] == 1
    assert receive(ext, [peer.compress(message)]) == message  # on the rebuilt window
    assert zlib_objects["decompressobj"] == 2


# (id, remote no context takeover, local no context takeover, pool entered)
POOL_DIRECTION_CASES = [
    ("takeover both ways", False, False, True),
    ("client takes over", False, True, True),
    ("server takes over", True, False, True),
    ("no takeover", True, True, False),
]


@pytest.mark.parametrize(
    ("remote_nct", "local_nct", "entered"),
    [c[1:] for c in POOL_DIRECTION_CASES],
    ids=[c[0] for c in POOL_DIRECTION_CASES],
)
def test_pool_holds_directions_with_context_takeover(
    remote_nct: bool, local_nct: bool, entered: bool
) -> None:
    pool = ContextPool(1)
    ext = pmd(remote_nct=remote_nct, local_nct=local_nct, pool=pool)
    assert receive(ext, [pmd().compress(b"Hello")]) == b"Hello"
    ext.compress(b"Hello")
    assert len(pool) == int(entered)


def test_factory_connections_share_one_pool(zlib_objects: dict[str, int]) -> None:
    factory = ServerPerMessageDeflateFactory(max_live_contexts=1)
    (_, a), (_, b) = (factory.process_request_params([], []) for _ in range(2))
    a.compress(b"Hello")
    b.compress(b"Hello")  # evicts a's compressor
    a.compress(b"Hello")
    assert zlib_objects["compressobj"] == 3
    assert ServerPerMessageDeflateFactory().max_live_contexts == MAX_LIVE_CONTEXTS


def test_evicted_in_the_middle_of_a_message() -> None:
    """A compressor rebuilt between two frames of one message continues the stream."""
    pool = ContextPool(1)
    ext, other, peer = pmd(pool=pool), pmd(pool=pool), pmd()
    first = bytes(range(256)) * 4
    frames = [ext.compress(first, False)]
    other.compress(b"evicts ext")
    frames.append(ext.compress(first[::-1] + first, True))
    assert receive(peer, frames) == first + first[::-1] + first


# --------------------------------------------------------------- memory


# (id, no context takeover (both ways), pool size, bytes held per connection: low, high)
MEMORY_CASES = [
    # Nothing of zlib between messages: the Python objects only.
    ("no takeover", True, 0, 0, 1024),
    # Both streams live (about 38 + 11 KiB), plus the two 4 KiB windows.
    ("takeover, all in the pool", False, 50, 48 * 1024, 72 * 1024),
    # Both streams live, no window kept but the last message inflated.
    ("takeover, no pool", False, None, 40 * 1024, 64 * 1024),
    # Both rebuilt from their windows: the two 4 KiB windows.
    ("takeover, pool of 0", False, 0, 8 * 1024, 10 * 1024),
]


@pytest.mark.parametrize(
    ("nct", "pool_size", "low", "high"),
    [c[1:] for c in MEMORY_CASES],
    ids=[c[0] for c in MEMORY_CASES],
)
def test_memory_held_between_messages(
    nct: bool, pool_size: int | None, low: int, high: int
) -> None:
    count = 50
    message = bytes(range(256)) * 16  # 4 KiB: fills a 12-bit window
    payload = pmd(local_nct=nct, local_bits=12).compress(message)  # a first message
    pool = None if pool_size is None else ContextPool(pool_size)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        exts = [pmd(nct, nct, 12, 12, {"memLevel": 5}, pool) for _ in range(count)]
        for ext in exts:
            assert ext.compress(bytes(range(256)) * 16)  # its own 4 KiB, as a server's are
            assert receive(ext, [payload]) == message
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert low <= held < high


# ----------------------------------------------------------- round trips


@st.composite
def conversations(
    draw: st.DrawFn,
) -> tuple[PerMessageDeflate, PerMessageDeflate, list[list[bytes]], int, PerMessageDeflate]:
    bits = draw(st.integers(9, 15))
    sender_nct = draw(st.booleans())
    # A receiver may reset its window only if the sender does ("either way"
    # is correct when the sender resets).
    receiver_nct = sender_nct and draw(st.booleans())
    settings_ = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "level": st.integers(0, 9),
                "memLevel": st.integers(1, 9),
                "strategy": st.sampled_from(
                    [
                        zlib.Z_DEFAULT_STRATEGY,
                        zlib.Z_FILTERED,
                        zlib.Z_RLE,
                        zlib.Z_HUFFMAN_ONLY,
                        zlib.Z_FIXED,
                    ]
                ),
            },
        )
    )
    # A pool of 0 or 1 with another connection in it: the sender's
    # compressor and the receiver's decompressor are rebuilt from their
    # windows between messages (a compressor also within one).
    pool_size = draw(st.sampled_from([None, 0, 1]))
    pool = None if pool_size is None else ContextPool(pool_size)
    sender = pmd(local_nct=sender_nct, local_bits=bits, compress_settings=settings_, pool=pool)
    other = pmd(pool=pool)
    receiver = pmd(remote_nct=receiver_nct, remote_bits=draw(st.integers(bits, 15)), pool=pool)
    alphabet = st.binary(min_size=0, max_size=64)
    pieces = st.lists(st.tuples(alphabet, st.integers(1, 40)), max_size=8)
    messages = []
    for _ in range(draw(st.integers(1, 5))):
        message = b"".join(p * n for p, n in draw(pieces))
        cuts = sorted(draw(st.lists(st.integers(0, len(message)), max_size=4)))
        bounds = [0, *cuts, len(message)]
        messages.append([message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    return sender, receiver, messages, draw(st.integers(0, 2**32 - 1)), other


def _resplit(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """Split a compressed message into random wire frames (possibly empty)."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 4)))
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        yield data[a:b]


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_round_trip(
    conversation: tuple[
        PerMessageDeflate, PerMessageDeflate, list[list[bytes]], int, PerMessageDeflate
    ],
) -> None:
    sender, receiver, messages, seed, other = conversation
    rng = random.Random(seed)
    reference = zlib.decompressobj(wbits=-sender.local_max_window_bits)
    for fragments in messages:
        message = b"".join(fragments)
        payloads = []
        for i, fragment in enumerate(fragments):
            if rng.random() < 0.5:
                other.compress(b"another connection of the same pool")
            payloads.append(sender.compress(fragment, i == len(fragments) - 1))
        compressed = b"".join(payloads)
        # The wire fragmentation is independent of how the sender flushed.
        frames = list(_resplit(compressed, rng))
        received = b""
        for i, frame in enumerate(frames):
            if rng.random() < 0.5:
                other.compress(b"another connection of the same pool")
            remaining = len(message) - len(received)  # max_size: the message's own size
            received += receiver.decompress(frame, i == len(frames) - 1, remaining)
        assert received == message
        # An independent inflater agrees (one stream when the sender keeps its context).
        if sender.local_no_context_takeover:
            reference = zlib.decompressobj(wbits=-sender.local_max_window_bits)
        assert reference.decompress(compressed + TAIL) == message
