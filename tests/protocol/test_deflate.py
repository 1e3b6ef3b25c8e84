"""permessage-deflate (RFC 7692): shardws/protocol/deflate.py.

Table-driven: RFC 7692 section 7.2.3 examples, negotiation offers, invalid
configurations, decompression bombs, corrupt input; hypothesis round trips
over every parameter combination with random fragmentation.
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
) -> PerMessageDeflate:
    return PerMessageDeflate(remote_nct, local_nct, remote_bits, local_bits, compress_settings)


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
@pytest.mark.parametrize("max_length", [None, 5])
def test_rfc_decode(
    remote_nct: bool, messages: list[list[str]], expected: list[bytes], max_length: int | None
) -> None:
    ext = pmd(remote_nct=remote_nct)
    got = [receive(ext, [H(f) for f in frames], max_length) for frames in messages]
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
    # After a BFINAL block the window is not carried over: a reference into
    # it fails loudly instead of yielding wrong data (docs/compression.md).
    ("reference across BFINAL", 15, [["f348cdc9c9070000"], ["f200110000"]]),
    ("reference across BFINAL, one frame", 15, [["f348cdc9c9070000", "f200110000"]]),
]


@pytest.mark.parametrize(
    ("bits", "messages"), [c[1:] for c in CORRUPT_CASES], ids=[c[0] for c in CORRUPT_CASES]
)
def test_corrupt_data_fails_with_1002(bits: int, messages: list[list[str]]) -> None:
    ext = pmd(remote_bits=bits)
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


@pytest.mark.parametrize(
    ("nct", "max_bytes_per_connection"),
    [(True, 1024), (False, 64 * 1024)],
    ids=["no takeover", "takeover"],
)
def test_zlib_state_dropped_without_context_takeover(
    nct: bool, max_bytes_per_connection: int
) -> None:
    """No context takeover: nothing of zlib is kept between messages."""
    count = 50
    message = bytes(range(256)) * 16
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        exts = [pmd(nct, nct, 12, 12, {"memLevel": 5}) for _ in range(count)]
        for ext in exts:
            payload = ext.compress(message)
            peer = pmd(local_nct=nct, local_bits=12)
            assert receive(ext, [peer.compress(message)]) == message
            assert payload
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert held < max_bytes_per_connection
    if not nct:
        assert held > 16 * 1024  # the windows really are kept


# ----------------------------------------------------------- round trips


@st.composite
def conversations(
    draw: st.DrawFn,
) -> tuple[PerMessageDeflate, PerMessageDeflate, list[list[bytes]], int]:
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
    sender = pmd(local_nct=sender_nct, local_bits=bits, compress_settings=settings_)
    receiver = pmd(remote_nct=receiver_nct, remote_bits=draw(st.integers(bits, 15)))
    alphabet = st.binary(min_size=0, max_size=64)
    pieces = st.lists(st.tuples(alphabet, st.integers(1, 40)), max_size=8)
    messages = []
    for _ in range(draw(st.integers(1, 5))):
        message = b"".join(p * n for p, n in draw(pieces))
        cuts = sorted(draw(st.lists(st.integers(0, len(message)), max_size=4)))
        bounds = [0, *cuts, len(message)]
        messages.append([message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    return sender, receiver, messages, draw(st.integers(0, 2**32 - 1))


def _resplit(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """Split a compressed message into random wire frames (possibly empty)."""
    cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(0, 4)))
    bounds = [0, *cuts, len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        yield data[a:b]


@settings(max_examples=150, deadline=None)
@given(conversations())
def test_round_trip(
    conversation: tuple[PerMessageDeflate, PerMessageDeflate, list[list[bytes]], int],
) -> None:
    sender, receiver, messages, seed = conversation
    rng = random.Random(seed)
    reference = zlib.decompressobj(wbits=-sender.local_max_window_bits)
    for fragments in messages:
        message = b"".join(fragments)
        payloads = [sender.compress(f, i == len(fragments) - 1) for i, f in enumerate(fragments)]
        compressed = b"".join(payloads)
        # The wire fragmentation is independent of how the sender flushed.
        frames = list(_resplit(compressed, rng))
        assert receive(receiver, frames, len(message)) == message
        # An independent inflater agrees (one stream when the sender keeps its context).
        if sender.local_no_context_takeover:
            reference = zlib.decompressobj(wbits=-sender.local_max_window_bits)
        assert reference.decompress(compressed + TAIL) == message
