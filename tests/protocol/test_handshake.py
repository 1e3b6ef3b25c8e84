"""The opening handshake (shardws/protocol/handshake.py)."""

from __future__ import annotations

import base64
import pathlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.protocol import State as WebsocketsState
from websockets.uri import parse_uri
from websockets.utils import accept_key as websockets_accept_key

import shardws
from shardws.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidOrigin,
    InvalidUpgrade,
    InvalidVersion,
    LocalProtocolError,
    NegotiationError,
    SecurityError,
)
from shardws.protocol.handshake import (
    GUID,
    accept,
    accept_key,
    check_request,
    default_server_header,
    error_response,
    reject,
)
from shardws.protocol.headers import Headers
from shardws.protocol.http11 import Request, RequestParser

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
BASE = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    *extra: tuple[str, str], drop: tuple[str, ...] = (), method: str = "GET"
) -> Request:
    pairs = [(k, v) for k, v in BASE if k not in drop]
    return Request("/chat", Headers(pairs + list(extra)), method)


# --------------------------------------------------------------- accept key


def test_rfc_6455_section_1_3_vector():
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(min_size=16, max_size=16))
def test_accept_key_matches_websockets(raw):
    key = base64.b64encode(raw).decode()
    assert accept_key(key) == websockets_accept_key(key)


# ------------------------------------------------------------ check_request

VALID_VARIANTS = [
    ("plain", ()),
    ("connection list", (("Connection", "keep-alive, Upgrade"),)),
    ("upgrade any case", (("Upgrade", "WebSocket"),)),
    ("upgrade list", (("Upgrade", "websocket, h2c"),)),
    ("upgrade with versioned protocol", (("Upgrade", "HTTP/2.0, websocket"),)),
    ("connection lower case", (("Connection", "upgrade"),)),
    ("connection split over headers", (("Connection", "keep-alive"), ("Connection", "Upgrade"))),
    ("key with padding chars", (("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),)),
    ("key with + and /", (("Sec-WebSocket-Key", "+/+/+/+/+/+/+/+/+/+/+w=="),)),
]


@pytest.mark.parametrize(
    "replace", [c[1] for c in VALID_VARIANTS], ids=[c[0] for c in VALID_VARIANTS]
)
def test_check_request_accepts(replace):
    names = {name for name, _ in replace}
    request = make_request(*replace, drop=tuple(names))
    assert check_request(request) == request.headers["Sec-WebSocket-Key"]


# (id, replacement headers, dropped headers, method, exception class, status)
REFUSED = [
    ("POST", (), (), "POST", InvalidMessage, 405),
    ("get lower case", (), (), "get", InvalidMessage, 405),
    ("no Upgrade", (), ("Upgrade",), "GET", InvalidUpgrade, 426),
    ("Upgrade h2c", (("Upgrade", "h2c"),), ("Upgrade",), "GET", InvalidUpgrade, 426),
    ("Upgrade malformed", (("Upgrade", "websocket;"),), ("Upgrade",), "GET", InvalidUpgrade, 426),
    ("no Connection", (), ("Connection",), "GET", InvalidUpgrade, 426),
    (
        "Connection keep-alive",
        (("Connection", "keep-alive"),),
        ("Connection",),
        "GET",
        InvalidUpgrade,
        426,
    ),
    (
        "Connection malformed",
        (("Connection", "Upgrade;x"),),
        ("Connection",),
        "GET",
        InvalidUpgrade,
        426,
    ),
    ("no version", (), ("Sec-WebSocket-Version",), "GET", InvalidVersion, 426),
    (
        "version 8",
        (("Sec-WebSocket-Version", "8"),),
        ("Sec-WebSocket-Version",),
        "GET",
        InvalidVersion,
        426,
    ),
    (
        "version list",
        (("Sec-WebSocket-Version", "13, 8"),),
        ("Sec-WebSocket-Version",),
        "GET",
        InvalidVersion,
        426,
    ),
    ("two versions", (("Sec-WebSocket-Version", "13"),), (), "GET", InvalidHeader, 400),
    ("no key", (), ("Sec-WebSocket-Key",), "GET", InvalidHeader, 400),
    ("two keys", (("Sec-WebSocket-Key", KEY),), (), "GET", InvalidHeader, 400),
    (
        "empty key",
        (("Sec-WebSocket-Key", ""),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key 15 bytes",
        (("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key 17 bytes",
        (("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key 18 bytes",
        (("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAAA"),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key not base64",
        (("Sec-WebSocket-Key", "!AAAAAAAAAAAAAAAAAAAAA=="),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key inner space",
        (("Sec-WebSocket-Key", "AAAAAAAAAAA AAAAAAAAAA=="),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key bad padding",
        (("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAA==="),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
    (
        "key non-ascii",
        (("Sec-WebSocket-Key", "\xe9AAAAAAAAAAAAAAAAAAAAA=="),),
        ("Sec-WebSocket-Key",),
        "GET",
        InvalidHeaderValue,
        400,
    ),
]


@pytest.mark.parametrize(
    ("replace", "drop", "method", "error", "status"),
    [c[1:] for c in REFUSED],
    ids=[c[0] for c in REFUSED],
)
def test_check_request_refuses(replace, drop, method, error, status):
    with pytest.raises(error) as info:
        check_request(make_request(*replace, drop=drop, method=method))
    assert type(info.value) is error and info.value.status == status


# ------------------------------------------------------------------ accept


def test_accept_response():
    response, subprotocol, extensions = accept(make_request())
    assert (response.status_code, response.reason_phrase) == (101, "Switching Protocols")
    assert list(response.headers.raw_items()) == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ("Server", f"shardws/{shardws.__version__}"),
    ]
    assert (subprotocol, extensions) == (None, [])
    assert response.serialize().startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Content-Length" not in response.serialize()


@pytest.mark.parametrize(("server_header", "expected"), [(None, []), ("X/1", ["X/1"])])
def test_accept_server_header(server_header, expected):
    response, _, _ = accept(make_request(), server_header=server_header)
    assert response.headers.get_all("Server") == expected
    assert default_server_header() == f"shardws/{shardws.__version__}"


# (id, offers headers, subprotocols, select_subprotocol, expected subprotocol or exception)
SUBPROTOCOLS = [
    ("server order wins", ["chat, superchat"], ["superchat", "chat"], None, "superchat"),
    ("server order wins 2", ["superchat, chat"], ["chat", "superchat"], None, "chat"),
    ("several headers", ["a", "superchat"], ["superchat"], None, "superchat"),
    ("server has none", ["chat"], None, None, None),
    ("server empty list", ["chat"], [], None, None),
    ("client offers none", [], ["chat"], None, NegotiationError),
    ("no common one", ["x, y"], ["chat"], None, NegotiationError),
    ("case-sensitive", ["Chat"], ["chat"], None, NegotiationError),
    ("malformed offer", ["a b"], ["chat"], None, InvalidHeaderFormat),
    ("select picks last", ["a, b"], ["a"], lambda offered: offered[-1], "b"),
    ("select returns None", ["a"], ["a"], lambda offered: None, None),
    ("select returns not offered", ["a"], None, lambda offered: "z", LocalProtocolError),
    (
        "select refuses",
        ["a"],
        None,
        lambda offered: (_ for _ in ()).throw(NegotiationError("no")),
        NegotiationError,
    ),
]


@pytest.mark.parametrize(
    ("offers", "subprotocols", "select", "expected"),
    [c[1:] for c in SUBPROTOCOLS],
    ids=[c[0] for c in SUBPROTOCOLS],
)
def test_subprotocol_negotiation(offers, subprotocols, select, expected):
    request = make_request(*(("Sec-WebSocket-Protocol", value) for value in offers))
    if isinstance(expected, type):
        with pytest.raises(expected):
            accept(request, subprotocols=subprotocols, select_subprotocol=select)
        return
    response, subprotocol, _ = accept(request, subprotocols=subprotocols, select_subprotocol=select)
    assert subprotocol == expected
    assert response.headers.get_all("Sec-WebSocket-Protocol") == (
        [] if expected is None else [expected]
    )


def test_select_subprotocol_gets_the_offers_in_client_order():
    seen = []
    accept(
        make_request(("Sec-WebSocket-Protocol", "b, a"), ("Sec-WebSocket-Protocol", "c")),
        select_subprotocol=lambda offered: seen.append(offered),
    )
    assert seen == [["b", "a", "c"]]


class Factory:
    """A fake extension factory: accepts offers whose params satisfy ``accepts``."""

    def __init__(self, name, tag, accepts=lambda params: True):
        self.name = name
        self.tag = tag
        self.accepts = accepts
        self.calls = []

    def process_request_params(self, params, accepted_extensions):
        self.calls.append((list(params), list(accepted_extensions)))
        if not self.accepts(params):
            raise NegotiationError("refused")
        return [(p, v) for p, v in params if p != "drop"], (self.tag, tuple(params))


def no_params(params):
    return not params


# (id, offer header values, factories, expected response header, expected instances)
EXTENSIONS = [
    ("nothing offered", [], [Factory("x", "X")], None, []),
    ("no factories", ["x"], [], None, []),
    ("malformed ignored without factories", ["x; ;"], [], None, []),
    ("accepted", ["x"], [Factory("x", "X")], "x", [("X", ())]),
    ("unknown ignored", ["y, x; a=1"], [Factory("x", "X")], "x; a=1", [("X", (("a", "1"),))]),
    (
        "first offer fails, next offer wins",
        ["x; a=1, x"],
        [Factory("x", "X", no_params)],
        "x",
        [("X", ())],
    ),
    (
        "first factory fails, next factory wins",
        ["x; a=1"],
        [Factory("x", "X1", no_params), Factory("x", "X2")],
        "x; a=1",
        [("X2", (("a", "1"),))],
    ),
    (
        "only first acceptable offer per name",
        ["x; a=1", "x"],
        [Factory("x", "X")],
        "x; a=1",
        [("X", (("a", "1"),))],
    ),
    (
        "several extensions in client order",
        ["y, x; drop"],
        [Factory("x", "X"), Factory("y", "Y")],
        "y, x",
        [("Y", ()), ("X", (("drop", None),))],
    ),
    ("all refused", ["x; a=1"], [Factory("x", "X", no_params)], None, []),
]


@pytest.mark.parametrize(
    ("offers", "factories", "header", "instances"),
    [c[1:] for c in EXTENSIONS],
    ids=[c[0] for c in EXTENSIONS],
)
def test_extension_negotiation(offers, factories, header, instances):
    request = make_request(*(("Sec-WebSocket-Extensions", value) for value in offers))
    response, _, extensions = accept(request, extensions=factories)
    assert response.headers.get_all("Sec-WebSocket-Extensions") == (
        [] if header is None else [header]
    )
    assert extensions == instances


def test_factories_see_previously_accepted_extensions():
    x, y = Factory("x", "X"), Factory("y", "Y")
    accept(make_request(("Sec-WebSocket-Extensions", "x, y")), extensions=[x, y])
    assert x.calls == [([], [])] and y.calls == [([], [("X", ())])]


def test_malformed_extension_header_is_400_with_factories():
    with pytest.raises(InvalidHeaderFormat) as info:
        accept(make_request(("Sec-WebSocket-Extensions", "x; ;")), extensions=[Factory("x", "X")])
    assert info.value.status == 400


# (id, Origin headers, origins allowed, expected: True accepted / exception class)
ORIGINS = [
    ("any origin", ["https://evil.example"], None, True),
    ("no origin, any", [], None, True),
    ("listed", ["https://ok.example"], ["https://ok.example"], True),
    ("not listed", ["https://evil.example"], ["https://ok.example"], InvalidOrigin),
    ("missing, not allowed", [], ["https://ok.example"], InvalidOrigin),
    ("missing, None allowed", [], ["https://ok.example", None], True),
    ("pattern", ["https://a.ok.example"], [re.compile(r"https://[a-z]+\.ok\.example")], True),
    (
        "pattern partial match refused",
        ["https://a.ok.example.evil"],
        [re.compile(r"https://[a-z]+\.ok\.example")],
        InvalidOrigin,
    ),
    ("pattern, missing", [], [re.compile(r".*")], InvalidOrigin),
    ("empty list", ["https://ok.example"], [], InvalidOrigin),
    (
        "two origins",
        ["https://ok.example", "https://ok.example"],
        ["https://ok.example"],
        InvalidHeader,
    ),
]


@pytest.mark.parametrize(
    ("values", "origins", "expected"), [c[1:] for c in ORIGINS], ids=[c[0] for c in ORIGINS]
)
def test_origin_check(values, origins, expected):
    request = make_request(*(("Origin", value) for value in values))
    if expected is True:
        assert accept(request, origins=origins)[0].status_code == 101
        return
    with pytest.raises(expected) as info:
        accept(request, origins=origins)
    assert type(info.value) is expected
    assert info.value.status == (403 if expected is InvalidOrigin else 400)


# ---------------------------------------------------------- error responses


def test_reject():
    response = reject(403, "Forbidden\n")
    assert response.status_code == 403 and response.reason_phrase == "Forbidden"
    assert response.headers == Headers(
        {"Connection": "close", "Content-Type": "text/plain; charset=utf-8"}
    )
    assert response.body == b"Forbidden\n"
    assert response.serialize() == (
        b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\r\nForbidden\n"
    )


def test_reject_keeps_given_headers_and_adds_server():
    response = reject(
        503, "caf\xe9", {"Content-Type": "text/html", "Connection": "close"}, server_header="S"
    )
    assert response.headers.get_all("Content-Type") == ["text/html"]
    assert response.headers.get_all("Connection") == ["close"]
    assert response.headers["Server"] == "S" and response.body == "caf\xe9".encode()


# (id, exception, status, headers that must be present)
ERRORS = [
    (
        "upgrade",
        InvalidUpgrade("Upgrade"),
        426,
        {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
    ),
    (
        "version",
        InvalidVersion("Sec-WebSocket-Version", "8"),
        426,
        {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
    ),
    (
        "method",
        InvalidMessage("unsupported HTTP method: POST", 405),
        405,
        {"Allow": "GET", "Connection": "close"},
    ),
    ("origin", InvalidOrigin("https://evil.example"), 403, {"Connection": "close"}),
    ("key", InvalidHeaderValue("Sec-WebSocket-Key", "x"), 400, {"Connection": "close"}),
    (
        "line too long",
        SecurityError("request line exceeds 8192 bytes", 414),
        414,
        {"Connection": "close"},
    ),
    (
        "head too big",
        SecurityError("request head exceeds 65536 bytes"),
        431,
        {"Connection": "close"},
    ),
    (
        "version 1.0",
        InvalidMessage("unsupported HTTP version: HTTP/1.0", 505),
        505,
        {"Connection": "close"},
    ),
    ("negotiation", NegotiationError("missing subprotocol"), 400, {"Connection": "close"}),
]


@pytest.mark.parametrize(
    ("exc", "status", "headers"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_error_response(exc, status, headers):
    response = error_response(exc)
    assert response.status_code == status
    for name, value in headers.items():
        assert response.headers[name] == value
    assert str(exc) in response.body.decode()
    wire = response.serialize()
    assert wire.startswith(b"HTTP/1.1 %d " % status) and wire.endswith(response.body)


def test_426_keeps_the_upgrade_connection_option_and_closes():
    response = error_response(InvalidUpgrade("Connection", "keep-alive"))
    assert response.headers["Connection"] == "Upgrade, close"
    assert b"WebSocket client" in response.body
    assert b"WebSocket client" not in error_response(InvalidVersion("Sec-WebSocket-Version")).body


def test_error_response_server_header():
    assert error_response(InvalidHandshake("x"), server_header="S").headers["Server"] == "S"
    assert "Server" not in error_response(InvalidHandshake("x")).headers


# ------------------------------------------------ end to end with websockets


@pytest.mark.parametrize(
    ("client_subprotocols", "expected"), [(None, None), (["chat", "superchat"], "superchat")]
)
def test_websockets_client_accepts_our_response(client_subprotocols, expected):
    client = ClientProtocol(parse_uri("ws://localhost/path"), subprotocols=client_subprotocols)
    client.send_request(client.connect())
    parser = RequestParser()
    requests = [parser.feed(data) for data in client.data_to_send()]
    request = next(r for r in requests if r is not None)
    response, subprotocol, _ = accept(
        request, subprotocols=["superchat", "chat"] if expected else None
    )
    client.receive_data(response.serialize())
    assert client.handshake_exc is None and client.state is WebsocketsState.OPEN
    assert client.subprotocol == subprotocol == expected


def test_protocol_modules_import_no_io():
    root = pathlib.Path(shardws.__file__).parent / "protocol"
    for name in ("headers.py", "http11.py", "handshake.py"):
        source = (root / name).read_text()
        for module in ("asyncio", "socket", "os", "time", "threading"):
            assert not re.search(rf"^\s*(import|from) {module}\b", source, re.MULTILINE), (
                name,
                module,
            )
