"""Bad handshake requests: raw bytes in, the HTTP status the server answers.

Each case goes through the whole server path: RequestParser.feed (whole, and
one byte at a time), then accept(), then error_response(). One assert path.
"""

from __future__ import annotations

import pytest

from shardws.exceptions import InvalidHandshake
from shardws.protocol.handshake import accept, error_response
from shardws.protocol.http11 import RequestParser

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
LINE = b"GET /chat HTTP/1.1\r\n"
HOST = b"Host: server.example.com\r\n"
UPGRADE = b"Upgrade: websocket\r\n"
CONNECTION = b"Connection: Upgrade\r\n"
KEY_LINE = b"Sec-WebSocket-Key: " + KEY + b"\r\n"
VERSION = b"Sec-WebSocket-Version: 13\r\n"
WS_HEADERS = UPGRADE + CONNECTION + KEY_LINE + VERSION


def req(line: bytes = LINE, headers: bytes = HOST + WS_HEADERS) -> bytes:
    return line + headers + b"\r\n"


ORIGINS = ["https://ok.example"]

# (id, raw request, expected status, accept() keyword arguments)
BAD_REQUESTS = [
    # request line
    ("bare LF line ends", req().replace(b"\r\n", b"\n"), 400, {}),
    ("bare LF on one header", req(headers=HOST + b"X-A: 1\n" + WS_HEADERS), 400, {}),
    ("bare CR in a header", req(headers=HOST + b"X-A: 1\r2\r\n" + WS_HEADERS), 400, {}),
    ("request line with two spaces", req(b"GET  /chat HTTP/1.1\r\n"), 400, {}),
    ("request line without version", req(b"GET /chat\r\n"), 400, {}),
    ("request line with extra part", req(b"GET /chat HTTP/1.1 x\r\n"), 400, {}),
    ("tab separated request line", req(b"GET\t/chat\tHTTP/1.1\r\n"), 400, {}),
    ("method not a token", req(b"G(T /chat HTTP/1.1\r\n"), 400, {}),
    ("target not origin-form", req(b"GET chat HTTP/1.1\r\n"), 400, {}),
    ("non-ascii target", req(b"GET /caf\xc3\xa9 HTTP/1.1\r\n"), 400, {}),
    ("malformed version", req(b"GET /chat HTTP/1.x\r\n"), 400, {}),
    ("lower-case version", req(b"GET /chat http/1.1\r\n"), 400, {}),
    ("two-digit minor version", req(b"GET /chat HTTP/1.10\r\n"), 400, {}),
    ("HTTP/1.0", req(b"GET /chat HTTP/1.0\r\n"), 505, {}),
    ("HTTP/2.0", req(b"GET /chat HTTP/2.0\r\n"), 505, {}),
    ("POST", req(b"POST /chat HTTP/1.1\r\n"), 405, {}),
    ("HEAD", req(b"HEAD /chat HTTP/1.1\r\n"), 405, {}),
    ("request line too long", req(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n"), 414, {}),
    # header syntax
    ("obs-fold", req(headers=HOST + b"X-A: 1\r\n  continued\r\n" + WS_HEADERS), 400, {}),
    ("whitespace before first header", req(headers=b" " + HOST + WS_HEADERS), 400, {}),
    ("space before colon", req(headers=b"Host : h\r\n" + WS_HEADERS), 400, {}),
    ("space inside name", req(headers=HOST + b"X A: 1\r\n" + WS_HEADERS), 400, {}),
    ("no colon", req(headers=HOST + b"X-A 1\r\n" + WS_HEADERS), 400, {}),
    ("a token and no colon", req(headers=HOST + b"X-A\r\n" + WS_HEADERS), 400, {}),
    ("a known name and no colon", req(headers=HOST + b"Origin\r\n" + WS_HEADERS), 400, {}),
    ("empty name", req(headers=HOST + b": 1\r\n" + WS_HEADERS), 400, {}),
    ("NUL in value", req(headers=HOST + b"X-A: 1\x002\r\n" + WS_HEADERS), 400, {}),
    ("DEL in value", req(headers=HOST + b"X-A: 1\x7f\r\n" + WS_HEADERS), 400, {}),
    (
        "header line too long",
        req(headers=HOST + b"X-A: " + b"v" * 9000 + b"\r\n" + WS_HEADERS),
        431,
        {},
    ),
    ("too many headers", req(headers=HOST + b"X-A: 1\r\n" * 130 + WS_HEADERS), 431, {}),
    (
        "head too big",
        req(headers=HOST + (b"X-A: " + b"v" * 8000 + b"\r\n") * 9 + WS_HEADERS),
        431,
        {},
    ),
    # HTTP semantics
    ("no Host", req(headers=WS_HEADERS), 400, {}),
    ("two Host", req(headers=HOST + HOST + WS_HEADERS), 400, {}),
    ("body", req(headers=HOST + b"Content-Length: 5\r\n" + WS_HEADERS), 400, {}),
    ("bad Content-Length", req(headers=HOST + b"Content-Length: -0\r\n" + WS_HEADERS), 400, {}),
    ("chunked body", req(headers=HOST + b"Transfer-Encoding: chunked\r\n" + WS_HEADERS), 400, {}),
    # WebSocket upgrade
    ("no Upgrade", req(headers=HOST + CONNECTION + KEY_LINE + VERSION), 426, {}),
    (
        "Upgrade h2c",
        req(headers=HOST + b"Upgrade: h2c\r\n" + CONNECTION + KEY_LINE + VERSION),
        426,
        {},
    ),
    ("no Connection", req(headers=HOST + UPGRADE + KEY_LINE + VERSION), 426, {}),
    (
        "Connection close",
        req(headers=HOST + UPGRADE + b"Connection: close\r\n" + KEY_LINE + VERSION),
        426,
        {},
    ),
    ("no version", req(headers=HOST + UPGRADE + CONNECTION + KEY_LINE), 426, {}),
    (
        "version 8",
        req(headers=HOST + UPGRADE + CONNECTION + KEY_LINE + b"Sec-WebSocket-Version: 8\r\n"),
        426,
        {},
    ),
    ("no key", req(headers=HOST + UPGRADE + CONNECTION + VERSION), 400, {}),
    ("two keys", req(headers=HOST + WS_HEADERS + KEY_LINE), 400, {}),
    (
        "short key",
        req(headers=HOST + UPGRADE + CONNECTION + b"Sec-WebSocket-Key: AAAA\r\n" + VERSION),
        400,
        {},
    ),
    (
        "key padded with spaces inside",
        req(
            headers=HOST
            + UPGRADE
            + CONNECTION
            + b"Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ=\r\n"
            + VERSION
        ),
        400,
        {},
    ),
    (
        "key decoding to 18 bytes",
        req(
            headers=HOST
            + UPGRADE
            + CONNECTION
            + b"Sec-WebSocket-Key: "
            + b"A" * 24
            + b"\r\n"
            + VERSION
        ),
        400,
        {},
    ),
    (
        "origin not allowed",
        req(headers=HOST + WS_HEADERS + b"Origin: https://evil.example\r\n"),
        403,
        {"origins": ORIGINS},
    ),
    ("origin missing", req(), 403, {"origins": ORIGINS}),
    (
        "subprotocol required",
        req(),
        400,
        {"subprotocols": ["chat"]},
    ),
    (
        "malformed subprotocol",
        req(headers=HOST + WS_HEADERS + b"Sec-WebSocket-Protocol: a b\r\n"),
        400,
        {"subprotocols": ["chat"]},
    ),
]


def status_of(data: bytes, chunk: int, kwargs: dict[str, object]) -> int:
    parser = RequestParser()
    try:
        for i in range(0, len(data), chunk):
            request = parser.feed(data[i : i + chunk])
            if request is not None:
                response, _, _ = accept(request, **kwargs)
                return response.status_code
        raise AssertionError("the parser wants more bytes")  # pragma: no cover
    except InvalidHandshake as exc:
        response = error_response(exc)
        wire = response.serialize()
        assert wire.startswith(b"HTTP/1.1 %d " % response.status_code)
        assert response.headers["Connection"] in ("close", "Upgrade, close")
        return response.status_code


def test_the_table_is_big_enough_and_valid_requests_pass():
    assert len(BAD_REQUESTS) >= 25
    assert status_of(req(), 1 << 20, {}) == 101
    assert (
        status_of(
            req(headers=HOST + WS_HEADERS + b"Origin: https://ok.example\r\n"),
            1,
            {"origins": ORIGINS},
        )
        == 101
    )


@pytest.mark.parametrize(
    ("data", "status", "kwargs"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
@pytest.mark.parametrize("chunk", [1 << 20, 1], ids=["whole", "bytewise"])
def test_bad_request(data, status, kwargs, chunk):
    assert status_of(data, chunk, kwargs) == status


def parser_outcome(data: bytes, chunk: int) -> tuple[object, ...]:
    """What RequestParser makes of ``data`` fed in ``chunk``-byte pieces."""
    parser = RequestParser()
    try:
        for i in range(0, len(data), chunk):
            request = parser.feed(data[i : i + chunk])
            if request is not None:
                after = parser.remaining + data[i + chunk :]  # bytes after the head
                return ("request", request, after, parser.bytes_scanned)
    except InvalidHandshake as exc:
        return ("error", type(exc), exc.status, str(exc))
    return ("incomplete",)


@pytest.mark.parametrize(
    "data",
    [c[1] for c in BAD_REQUESTS] + [req(), req() + b"\x81\x80early"],
    ids=[c[0] for c in BAD_REQUESTS] + ["valid", "valid with early bytes"],
)
def test_whole_head_and_bytewise_parse_agree(data):
    # A head that arrives whole takes a one-pass fast path: it must reach the
    # same request, or the same error (type, status, message), as bytewise.
    assert parser_outcome(data, 1 << 20) == parser_outcome(data, 1)
