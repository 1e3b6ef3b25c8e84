"""speedups.parse_head: the C function and its pure twin agree, and the
RequestParser fast path built on it answers exactly like the line parser.

The C module is imported directly, so this file checks it even under
``SHARDWS_NO_SPEEDUPS=1``.
"""

from __future__ import annotations

from typing import Any

import pytest
import shardws._speedups as c_impl  # type: ignore[import-not-found]
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws import speedups
from shardws.protocol import http11
from shardws.protocol.headers import FORBIDDEN_VALUE_BYTES, TCHAR_BYTES
from shardws.protocol.http11 import _KNOWN_NAMES, _KNOWN_VALUES, RequestParser

IMPLS = {"c": c_impl.parse_head, "py": speedups.py_parse_head}

REQUEST = (
    b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nX-Custom:  a b\t\r\n\r\n"
)
LIMITS = (65536, 128, 8192)


def outcome(func: Any, *args: Any) -> tuple[str, Any]:
    """("ok", result) or ("raise", (exception type, message))."""
    try:
        return ("ok", func(*args))
    except Exception as exc:  # noqa: BLE001 - compared between twins
        return ("raise", (type(exc), str(exc)))


def both(*args: Any) -> tuple[str, Any]:
    """The common outcome of the two implementations (asserted equal)."""
    c, py = (outcome(func, *args) for func in IMPLS.values())
    assert c == py
    return c


def test_tables_match_the_protocol_constants() -> None:
    assert bytes(sorted(speedups._HEAD_TCHAR)) == TCHAR_BYTES
    assert speedups._HEAD_CTL == FORBIDDEN_VALUE_BYTES
    assert speedups._HEAD_TARGET_FORBIDDEN == http11._TARGET_FORBIDDEN


def test_usual_request() -> None:
    kind, result = both(REQUEST + b"early", *LIMITS, _KNOWN_NAMES, _KNOWN_VALUES)
    assert kind == "ok"
    end, request_line, pairs, index = result
    assert REQUEST[end:] == b"\r\n\r\n"
    assert request_line == ("GET", "/chat?x=1", "HTTP/1.1")
    assert pairs[0] == ("Host", "example.com")
    assert pairs[-1] == ("X-Custom", "a b")  # OWS stripped, case kept
    assert index["x-custom"] == ["a b"]
    assert index["upgrade"] == ["websocket"]
    # Known values are the table's own strings.
    assert index["upgrade"][0] is _KNOWN_VALUES[b" websocket"]


def test_repeated_header_and_unknown_tables() -> None:
    data = b"GET / HTTP/1.1\r\nA: 1\r\na: 2\r\nB:\r\n\r\n"
    kind, result = both(data, *LIMITS, {}, {})
    assert kind == "ok"
    assert result[2] == [("A", "1"), ("a", "2"), ("B", "")]
    assert result[3] == {"a": ["1", "2"], "b": [""]}


# Heads the fast path leaves to the line parser (None), with why.
UNUSUAL = [
    (b"GET / HTTP/1.1\r\nHost: a\r\n", LIMITS, "incomplete"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", (20, 128, 8192), "over max_head"),
    (b"GET / HTTP/1.1\r\nHost: a\r\nB: c\r\n\r\n", (65536, 1, 8192), "over max_headers"),
    (b"GET / HTTP/1.1\r\nHost: aaaaaaaaa\r\n\r\n", (65536, 128, 14), "line over max_line"),
    (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", LIMITS, "bare CR"),
    (b"GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n", LIMITS, "bare LF"),
    (b"GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n", LIMITS, "NUL"),
    (b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", LIMITS, "DEL"),
    (b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", LIMITS, "CR before CRLF"),
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "two spaces"),
    (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", LIMITS, "trailing space"),
    (b"GET /\r\nHost: a\r\n\r\n", LIMITS, "two parts"),
    (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "method not a token"),
    (b" / HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "empty method"),
    (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "relative target"),
    (b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "non-ASCII target"),
    (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", LIMITS, "CTL in target"),
    (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", LIMITS, "HTTP/1.0"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", LIMITS, "HTTP/2.0"),
    (b"GET / http/1.1\r\nHost: a\r\n\r\n", LIMITS, "lowercase version"),
    (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", LIMITS, "space before colon"),
    (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", LIMITS, "leading space"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n", LIMITS, "obs-fold"),
    (b"GET / HTTP/1.1\r\n: a\r\n\r\n", LIMITS, "empty name"),
    (b"GET / HTTP/1.1\r\nHost\r\n\r\n", LIMITS, "known name, no colon"),
    (b"GET / HTTP/1.1\r\nX-Y\r\n\r\n", LIMITS, "no colon"),
    (b"\r\n\r\n", LIMITS, "empty request line"),
    (b"\r\n\r", LIMITS, "too short"),
    (REQUEST, (-1, 128, 8192), "negative max_head"),
    (REQUEST, (65536, -1, 8192), "negative max_headers"),
    (REQUEST, (65536, 128, -1), "negative max_line"),
]


@pytest.mark.parametrize(("data", "limits", "why"), UNUSUAL, ids=[u[2] for u in UNUSUAL])
def test_unusual_heads_are_left_to_the_line_parser(
    data: bytes, limits: tuple[int, int, int], why: str
) -> None:
    assert both(data, *limits, _KNOWN_NAMES, _KNOWN_VALUES) == ("ok", None)


# Limits exactly reached still parse.
EXACT = [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", (27, 1, 14)),
    (b"GET http://a/b HTTP/1.1\r\nHost: a\r\n\r\n", (65536, 1, 23)),
    (b"GET / HTTP/1.1\r\n\r\n", (65536, 0, 8192)),  # no header line at all
]


@pytest.mark.parametrize(("data", "limits"), EXACT)
def test_limits_reached_exactly(data: bytes, limits: tuple[int, int, int]) -> None:
    kind, result = both(data, *limits, _KNOWN_NAMES, _KNOWN_VALUES)
    assert kind == "ok" and result is not None
    assert result[0] == len(data) - 4


class Index(int):
    pass


# Bad arguments: same exception, same message.
BAD_ARGS: list[tuple[Any, ...]] = [
    (bytearray(REQUEST), *LIMITS, {}, {}),
    (memoryview(REQUEST), *LIMITS, {}, {}),
    ("text", *LIMITS, {}, {}),
    (REQUEST, "1", 128, 8192, {}, {}),
    (REQUEST, 65536, 1.5, 8192, {}, {}),
    (REQUEST, 65536, 128, None, {}, {}),
    (REQUEST, *LIMITS, [], {}),
    (REQUEST, *LIMITS, {}, None),
    (REQUEST, *LIMITS, {b"Host": ("Host",)}, {}),
    (REQUEST, *LIMITS, {b"Host": ["Host", "host"]}, {}),
    (REQUEST, *LIMITS, {b"Host": ("Host", b"host")}, {}),
    (REQUEST, *LIMITS, {b"Host": ()}, {}),
    (REQUEST, *LIMITS, {}, {b" example.com": b"example.com"}),
    (REQUEST, *LIMITS, {}, {b" example.com": 0}),
]


@pytest.mark.parametrize("args", BAD_ARGS)
def test_bad_arguments(args: tuple[Any, ...]) -> None:
    kind, (exc_type, _) = both(*args)
    assert kind == "raise" and exc_type is TypeError


GOOD_ARGS: list[tuple[Any, ...]] = [
    (REQUEST, Index(65536), True, 2**100, {}, {}),  # index-like, huge limits
    (REQUEST, *LIMITS, {b"Host": None}, {b" example.com": None}),  # None: not in the table
    (REQUEST, *LIMITS, {b"Nothing": 1}, {b"nothing": 2}),  # bad entries never used
]


@pytest.mark.parametrize("args", GOOD_ARGS)
def test_arguments_accepted(args: tuple[Any, ...]) -> None:
    kind, result = both(*args)
    assert kind == "ok"
    assert (result is None) == (args[2] is True)  # max_headers 1: too many lines


def test_wrong_argument_count() -> None:
    for func in IMPLS.values():
        with pytest.raises(TypeError):
            func(REQUEST, *LIMITS, {})


# Random heads: pieces that exercise every check, glued in any order.
PIECES = [
    b"GET", b" ", b"/", b"/a?b=c", b"http://x/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n",
    b"\r", b"\n", b"\t", b":", b": ", b"Host", b"host", b"Upgrade", b" websocket",
    b"Sec-WebSocket-Version", b" 13", b"X-A", b"v a l", b"\x00", b"\x7f", b"\xe9",
    b"@", b"\r\n\r\n",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=30),
    st.integers(-2, 200),
    st.integers(-1, 6),
    st.integers(-1, 60),
)
def test_random_heads_agree(
    pieces: list[bytes], max_head: int, max_headers: int, max_line: int
) -> None:
    data = b"".join(pieces)
    both(data, max_head, max_headers, max_line, _KNOWN_NAMES, _KNOWN_VALUES)
    both(b"GET / HTTP/1.1\r\n" + data + b"\r\n\r\n", 65536, 128, 8192, _KNOWN_NAMES, {})


def parse(data: bytes, split: bool) -> tuple[str, Any]:
    """RequestParser's answer: whole (fast path first) or a byte first (line parser only)."""
    parser = RequestParser(max_line=60, max_headers=6, max_head=400)
    try:
        if split:
            assert parser.feed(data[:1]) is None
            request = parser.feed(data[1:])
        else:
            request = parser.feed(data)
    except Exception as exc:  # noqa: BLE001 - compared between the paths
        return ("raise", (type(exc), str(exc)))
    if request is None:
        return ("ok", None)
    headers = list(request.headers.raw_items())
    return ("ok", (request.method, request.path, request.protocol, headers, parser.remaining))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_fast_path_answers_like_the_line_parser(pieces: list[bytes]) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(pieces) + b"\r\n\r\nrest"
    assert parse(data, split=False) == parse(data, split=True)


@pytest.mark.parametrize(("data", "limits", "why"), UNUSUAL, ids=[u[2] for u in UNUSUAL])
def test_unusual_heads_answer_like_the_line_parser(
    data: bytes, limits: tuple[int, int, int], why: str
) -> None:
    assert parse(data, split=False) == parse(data, split=True)


def test_bound_to_c_when_the_speedups_load() -> None:
    """A build from before parse_head would keep the twin: the binding tells."""
    expected = c_impl.parse_head if speedups.C_SPEEDUPS else speedups.py_parse_head
    assert speedups.parse_head is expected
    assert http11.parse_head is expected
