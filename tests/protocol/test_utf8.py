"""UTF-8 validation: whole texts, fragment by fragment, fail-fast on the first bad prefix."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardws.exceptions import InvalidUTF8
from shardws.protocol.utf8 import IncrementalUTF8Decoder, decode

KOSME = "κόσμε".encode()

# (name, bytes, valid?)
CASES = [
    ("empty", b"", True),
    ("ascii", b"Hello", True),
    ("greek", KOSME, True),
    ("max code point U+10FFFF", b"\xf4\x8f\xbf\xbf", True),
    ("U+FFFF", b"\xef\xbf\xbf", True),
    ("lone continuation", b"\x80", False),
    ("overlong 2-byte", b"\xc0\x80", False),
    ("overlong 3-byte", b"\xe0\x80\xaf", False),
    ("overlong 4-byte", b"\xf0\x80\x80\xaf", False),
    ("surrogate D800", b"\xed\xa0\x80", False),
    ("surrogate DFFF", b"\xed\xbf\xbf", False),
    ("above U+10FFFF", b"\xf4\x90\x80\x80", False),
    ("F5 lead", b"\xf5\x80\x80\x80", False),
    ("FF", b"\xff", False),
    ("truncated 2-byte", b"\xce", False),
    ("truncated 4-byte", b"\xf0\x90\x80", False),
    ("valid then invalid", KOSME + b"\xed\xa0\x80edited", False),
]


@pytest.mark.parametrize(("name", "data", "valid"), CASES, ids=[c[0] for c in CASES])
def test_decode_whole_and_split(name: str, data: bytes, valid: bool) -> None:
    """decode() and the incremental decoder (at every split point) agree with the codec."""
    splits = [[data]] + [[data[:i], data[i:]] for i in range(1, len(data))]
    for parts in [[data]] + splits:
        decoder = IncrementalUTF8Decoder()
        if valid:
            text = "".join(decoder.decode(p) for p in parts[:-1]) + decoder.decode(parts[-1], True)
            assert text == data.decode() == decode(data)
        else:
            with pytest.raises(InvalidUTF8) as info:
                for p in parts[:-1]:
                    decoder.decode(p)
                decoder.decode(parts[-1], True)
            assert info.value.close_code == 1007
    if not valid:
        with pytest.raises(InvalidUTF8):
            decode(bytearray(data))


def _is_valid_prefix(data: bytes) -> bool:
    """Reference: can ``data`` be continued into valid UTF-8?"""
    tails = [
        bytes(t) for n in range(4) for t in itertools.product((0x80, 0x90, 0xA0, 0xBF), repeat=n)
    ]
    for tail in tails:
        try:
            (data + tail).decode()
        except UnicodeDecodeError:
            continue
        return True
    return False


def test_fail_fast_on_every_invalid_short_prefix() -> None:
    """Every lead byte followed by one continuation-range byte: the decoder raises
    exactly when the prefix cannot start valid UTF-8 (Autobahn 6.4 behaviour)."""
    checked = 0
    for lead in range(0xC0, 0x100):
        for second in range(0x80, 0xC0):
            prefix = bytes((lead, second))
            decoder = IncrementalUTF8Decoder()
            try:
                decoder.decode(KOSME + prefix)
                failed = False
            except InvalidUTF8:
                failed = True
            assert failed == (not _is_valid_prefix(prefix)), prefix
            checked += 1
    assert checked == 64 * 64


def test_fail_fast_across_fragments() -> None:
    """The surrogate lead ED is buffered, the next fragment A0 makes it invalid: raise now."""
    decoder = IncrementalUTF8Decoder()
    assert decoder.decode(KOSME + b"\xed") == "κόσμε"
    with pytest.raises(InvalidUTF8):
        decoder.decode(b"\xa0")
    # the decoder was reset: it can be reused
    assert decoder.decode(b"ok", True) == "ok"


def test_reset_forgets_partial_sequence() -> None:
    decoder = IncrementalUTF8Decoder()
    decoder.decode(b"\xce")
    decoder.reset()
    assert decoder.decode(b"a", True) == "a"


@given(st.text(), st.lists(st.integers(min_value=0, max_value=64), max_size=8))
def test_incremental_matches_whole(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    decoder = IncrementalUTF8Decoder()
    out = "".join(decoder.decode(p) for p in parts[:-1]) + decoder.decode(parts[-1], True)
    assert out == text
