"""Request, Response and the incremental RequestParser (shardws/protocol/http11.py)."""

from __future__ import annotations

import http

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws.exceptions import InvalidMessage, InvalidState, SecurityError
from shardws.protocol.headers import Headers
from shardws.protocol.http11 import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_LINE,
    Request,
    RequestParser,
    Response,
)

REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Latin: caf\xe9\r\n"
    b"\r\n"
)
EARLY_FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"


def parse(data: bytes, **caps: int) -> Request:
    parser = RequestParser(**caps)
    request = parser.feed(data)
    assert request is not None
    return request


# ---------------------------------------------------------------- Request


def test_parse_request():
    parser = RequestParser()
    request = parser.feed(REQUEST + EARLY_FRAME)
    assert request == Request(
        "/chat?room=1",
        Headers(
            [
                ("Host", "server.example.com"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Origin", "http://example.com"),
                ("Sec-WebSocket-Protocol", "chat, superchat"),
                ("Sec-WebSocket-Version", "13"),
                ("X-Latin", "caf\xe9"),
            ]
        ),
        "GET",
        "HTTP/1.1",
    )
    assert parser.remaining == EARLY_FRAME and parser.finished
    assert request.serialize() == REQUEST


ACCEPTED_REQUESTS = [
    ("ows around value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t v \t\r\n\r\n", "X-A", "v"),
    ("empty value", b"GET / HTTP/1.1\r\nHost: h\r\nX-A:\r\n\r\n", "X-A", ""),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", "Host", "h"),
    (
        "content-length 0",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "Content-Length",
        "0",
    ),
    ("absolute-form", b"GET ws://h/x HTTP/1.1\r\nHost: h\r\n\r\n", "Host", "h"),
    ("obs-text", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \x80\xff\r\n\r\n", "X-A", "\x80\xff"),
    ("colon in value", b"GET / HTTP/1.1\r\nHost: h:80\r\n\r\n", "Host", "h:80"),
    ("other method", b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", "Host", "h"),
]


@pytest.mark.parametrize(
    ("data", "name", "value"),
    [c[1:] for c in ACCEPTED_REQUESTS],
    ids=[c[0] for c in ACCEPTED_REQUESTS],
)
def test_accepted_requests(data, name, value):
    assert parse(data).headers[name] == value


def test_memoryview_and_bytearray_input():
    parser = RequestParser()
    assert parser.feed(memoryview(REQUEST[:10])) is None
    assert parser.feed(bytearray(REQUEST[10:])) is not None


def test_feed_after_finish_or_failure_is_invalid_state():
    parser = RequestParser()
    parser.feed(REQUEST)
    with pytest.raises(InvalidState):
        parser.feed(b"more")
    parser = RequestParser()
    with pytest.raises(InvalidMessage):
        parser.feed(b"GET / HTTP/1.1\n")
    assert parser.finished
    with pytest.raises(InvalidState):
        parser.feed(b"\r\n")


def test_nothing_before_the_blank_line():
    parser = RequestParser()
    assert parser.feed(b"") is None
    assert parser.feed(REQUEST[:-2]) is None
    assert parser.remaining == b"" and not parser.finished
    assert parser.feed(REQUEST[-2:]) is not None


def test_one_byte_at_a_time():
    parser = RequestParser()
    data = REQUEST + EARLY_FRAME
    results = [parser.feed(data[i : i + 1]) for i in range(len(REQUEST))]
    assert results[:-1] == [None] * (len(REQUEST) - 1)
    assert results[-1] == parse(REQUEST)


@given(st.lists(st.integers(min_value=0, max_value=len(REQUEST) + len(EARLY_FRAME)), max_size=12))
def test_any_split_gives_the_same_request(cuts):
    data = REQUEST + EARLY_FRAME
    bounds = [0, *sorted(cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    parser = RequestParser()
    request = None
    fed = 0
    for chunk in chunks:
        fed += len(chunk)
        request = parser.feed(chunk)
        if request is not None:
            break
    assert request == parse(REQUEST)
    assert parser.remaining == data[len(REQUEST) : fed]


# ------------------------------------------------------- caps and linearity


def head_with(n_headers: int, value_len: int, target_len: int = 1) -> bytes:
    line = b"GET /" + b"a" * (target_len - 1) + b" HTTP/1.1\r\nHost: h\r\n"
    return (
        line + b"".join(b"X-%d: %s\r\n" % (i, b"v" * value_len) for i in range(n_headers)) + b"\r\n"
    )


def test_large_head_fed_one_byte_at_a_time_scans_each_byte_once():
    # 127 headers of ~500 bytes: a ~64 KiB head, under every cap.
    head = head_with(MAX_HEADERS - 1, 500)
    assert 60_000 < len(head) <= MAX_HEAD
    parser = RequestParser()
    view = memoryview(head)
    for i in range(len(head) - 1):
        assert parser.feed(view[i : i + 1]) is None
    assert parser.feed(view[-1:]) is not None
    # Linear: every byte is examined once while looking for line ends,
    # however the head was split (a rescan would make this ~len(head)**2 / 2).
    assert parser.bytes_scanned == len(head)


def test_scan_stops_at_the_cap_without_reading_further():
    parser = RequestParser()
    with pytest.raises(SecurityError) as info:
        parser.feed(b"GET /" + b"a" * 1_000_000)
    assert info.value.status == 414
    assert parser.bytes_scanned <= MAX_LINE + 2


def header_line(n: int) -> bytes:
    # One header line of exactly n bytes (CRLF excluded).
    return b"X-A: " + b"v" * (n - 5) + b"\r\n"


# (id, head, caps, expected status or None when accepted)
CAP_CASES = [
    (
        "request line at cap",
        b"GET /" + b"a" * (MAX_LINE - 14) + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        {},
        None,
    ),
    (
        "request line over cap",
        b"GET /" + b"a" * (MAX_LINE - 13) + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        {},
        414,
    ),
    (
        "header line at cap",
        b"GET / HTTP/1.1\r\nHost: h\r\n" + header_line(MAX_LINE) + b"\r\n",
        {},
        None,
    ),
    (
        "header line over cap",
        b"GET / HTTP/1.1\r\nHost: h\r\n" + header_line(MAX_LINE + 1) + b"\r\n",
        {},
        431,
    ),
    ("headers at cap", head_with(MAX_HEADERS - 1, 1), {}, None),
    ("headers over cap", head_with(MAX_HEADERS, 1), {}, 431),
    (
        "custom line cap",
        b"GET / HTTP/1.1\r\nHost: h\r\n" + header_line(101) + b"\r\n",
        {"max_line": 100},
        431,
    ),
    ("custom header cap", head_with(3, 1), {"max_headers": 3}, 431),
    ("custom head cap", head_with(3, 1), {"max_head": len(head_with(3, 1)) - 1}, 431),
    ("head exactly at custom cap", head_with(3, 1), {"max_head": len(head_with(3, 1))}, None),
    ("head over cap", head_with(MAX_HEADERS - 1, 600), {}, 431),
]


@pytest.mark.parametrize(
    ("head", "caps", "status"), [c[1:] for c in CAP_CASES], ids=[c[0] for c in CAP_CASES]
)
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 7], ids=["whole", "1000", "7"])
def test_caps(head, caps, status, chunk):
    parser = RequestParser(**caps)
    result = None
    try:
        for i in range(0, len(head), chunk):
            result = parser.feed(head[i : i + chunk])
    except SecurityError as exc:
        assert exc.status == status
    else:
        assert status is None and result is not None


def test_content_length_with_many_digits_is_400_not_a_crash():
    with pytest.raises(InvalidMessage) as info:
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
    assert info.value.status == 400


# --------------------------------------------------------------- Response

RESPONSE_FORMS = [
    (
        "body third",
        lambda: Response(403, "Forbidden", b"Invalid API key"),
        Headers(),
        b"Invalid API key",
    ),
    ("str body", lambda: Response(403, "Forbidden", "caf\xe9"), Headers(), "caf\xe9".encode()),
    ("bytearray body", lambda: Response(200, "OK", bytearray(b"x")), Headers(), b"x"),
    ("memoryview body", lambda: Response(200, "OK", memoryview(b"x")), Headers(), b"x"),
    (
        "body + headers kw",
        lambda: Response(403, "Forbidden", b"x", headers={"X-A": "1"}),
        Headers({"X-A": "1"}),
        b"x",
    ),
    (
        "websockets order",
        lambda: Response(403, "Forbidden", Headers({"X-A": "1"}), b"x"),
        Headers({"X-A": "1"}),
        b"x",
    ),
    ("mapping third", lambda: Response(403, "Forbidden", {"X-A": "1"}), Headers({"X-A": "1"}), b""),
    (
        "pairs third",
        lambda: Response(403, "Forbidden", [("X-A", "1")], "x"),
        Headers({"X-A": "1"}),
        b"x",
    ),
    ("empty pairs third", lambda: Response(403, "Forbidden", []), Headers(), b""),
    ("body keyword", lambda: Response(403, "Forbidden", body=b"x"), Headers(), b"x"),
    ("status only", lambda: Response(404), Headers(), b""),
]


@pytest.mark.parametrize(
    ("make", "headers", "body"), [c[1:] for c in RESPONSE_FORMS], ids=[c[0] for c in RESPONSE_FORMS]
)
def test_response_forms(make, headers, body):
    response = make()
    assert (response.headers, response.body) == (headers, body)
    assert isinstance(response.headers, Headers) and isinstance(response.body, bytes)


def test_response_copies_given_headers():
    given_headers = Headers({"X-A": "1"})
    response = Response(403, "Forbidden", given_headers)
    response.headers["X-B"] = "2"
    assert "X-B" not in given_headers


@pytest.mark.parametrize(
    "make",
    [
        lambda: Response(403, "Forbidden", b"x", b"y"),
        lambda: Response(403, "Forbidden", Headers(), headers=Headers()),
    ],
)
def test_response_given_twice(make):
    with pytest.raises(TypeError):
        make()


REASONS = [
    (Response(404), "Not Found"),
    (Response(http.HTTPStatus.FORBIDDEN), "Forbidden"),
    (Response(599), ""),
]


@pytest.mark.parametrize(("response", "reason"), REASONS)
def test_default_reason_phrase(response, reason):
    assert response.reason_phrase == reason and type(response.status_code) is int


def test_response_repr_and_equality():
    response = Response(403, "Forbidden", b"x")
    assert repr(response) == "Response(403, 'Forbidden', Headers([]), b'x')"
    assert response == Response(403, "Forbidden", Headers(), b"x")
    assert response != Response(403, "Forbidden", b"y")
    assert response.__eq__(object()) is NotImplemented
    with pytest.raises(TypeError):
        hash(response)


SERIALIZED = [
    (
        "body",
        Response(403, "Forbidden", b"nope"),
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope",
    ),
    ("no body", Response(404), b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    (
        "own content-length",
        Response(200, "OK", b"ab", headers={"Content-Length": "2"}),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab",
    ),
    (
        "101",
        Response(101, "Switching Protocols", {"Upgrade": "websocket"}),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ),
    ("204", Response(204), b"HTTP/1.1 204 No Content\r\n\r\n"),
    (
        "latin-1 reason",
        Response(400, "Mauvaise requ\xeate"),
        b"HTTP/1.1 400 Mauvaise requ\xeate\r\nContent-Length: 0\r\n\r\n",
    ),
]


@pytest.mark.parametrize(
    ("response", "wire"), [c[1:] for c in SERIALIZED], ids=[c[0] for c in SERIALIZED]
)
def test_serialize(response, wire):
    headers_before = response.headers.copy()
    assert response.serialize() == wire
    assert response.headers == headers_before  # serialize() does not mutate


BAD_RESPONSES = [
    ("status 99", Response(99, "x")),
    ("status 1000", Response(1000, "x")),
    ("crlf in reason", Response(403, "Forbidden\r\nX-Evil: 1")),
    ("crlf in header value", Response(403, "Forbidden", {"X-A": "1\r\nX-Evil: 1"})),
    ("bad header name", Response(403, "Forbidden", {"X A": "1"})),
    ("body on 101", Response(101, "Switching Protocols", b"x")),
    ("content-length on 101", Response(101, headers={"Content-Length": "0"})),
    ("transfer-encoding on 101", Response(101, headers={"Transfer-Encoding": "chunked"})),
    ("crlf in a 101 header", Response(101, headers={"Upgrade": "websocket\r\nX-Evil: 1"})),
    ("content-length on 204", Response(204, headers={"Content-Length": "0"})),
    ("wrong content-length", Response(200, "OK", b"ab", headers={"Content-Length": "3"})),
    ("two content-lengths", Response(200, "OK", b"", headers=[("Content-Length", "0")] * 2)),
    ("transfer-encoding", Response(200, "OK", b"", headers={"Transfer-Encoding": "chunked"})),
]


@pytest.mark.parametrize(
    "response", [c[1] for c in BAD_RESPONSES], ids=[c[0] for c in BAD_RESPONSES]
)
def test_serialize_refuses(response):
    with pytest.raises(ValueError):
        response.serialize()


@settings(max_examples=50)
@given(st.text(max_size=20), st.text(max_size=20))
def test_serialized_head_never_holds_an_injected_line(name, value):
    response = Response(403, "Forbidden", [(name, value)], b"x")
    try:
        wire = response.serialize()
    except ValueError:
        return
    head = wire[: wire.index(b"\r\n\r\n")]
    assert head.count(b"\n") == 2 and head.count(b"\r") == 2
