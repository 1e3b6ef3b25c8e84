"""Headers container and header list syntax (shardws/protocol/headers.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardws.exceptions import InvalidHeaderFormat
from shardws.protocol.headers import (
    TCHAR,
    Headers,
    MultipleValuesError,
    build_extension_header,
    build_token_list,
    check_header,
    is_field_value,
    is_token,
    parse_extension_list,
    parse_subprotocol_list,
    parse_token_list,
    parse_upgrade_list,
)

PAIRS = [("Host", "example.com"), ("X-Multi", "a"), ("x-multi", "b")]

# ------------------------------------------------------------ construction

CONSTRUCTIONS = [
    ("pairs", lambda: Headers(PAIRS), PAIRS),
    ("Headers", lambda: Headers(Headers(PAIRS)), PAIRS),
    (
        "mapping",
        lambda: Headers({"Host": "example.com", "X-A": "1"}),
        [("Host", "example.com"), ("X-A", "1")],
    ),
    ("kwargs", lambda: Headers(Host="example.com"), [("Host", "example.com")]),
    ("pairs+kwargs", lambda: Headers([("A", "1")], B="2"), [("A", "1"), ("B", "2")]),
    ("empty", lambda: Headers(), []),
    ("generator", lambda: Headers((k, v) for k, v in PAIRS), PAIRS),
]


@pytest.mark.parametrize(
    ("make", "raw"), [c[1:] for c in CONSTRUCTIONS], ids=[c[0] for c in CONSTRUCTIONS]
)
def test_construction_forms(make, raw):
    assert list(make().raw_items()) == raw


def test_update_forms_append():
    headers = Headers(A="1")
    headers.update(Headers([("a", "2")]))
    headers.update({"A": "3"})
    headers.update([("A", "4")], A="5")
    assert headers.get_all("a") == ["1", "2", "3", "4", "5"]


def test_update_rejects_two_positionals():
    with pytest.raises(TypeError):
        Headers([("A", "1")], [("B", "2")])


# --------------------------------------------------------------- access


def test_case_insensitive_single_and_multiple_values():
    headers = Headers(PAIRS)
    assert headers["HOST"] == headers["host"] == headers.get("Host") == "example.com"
    assert "hOsT" in headers and 42 not in headers
    assert headers.get_all("X-MULTI") == ["a", "b"]
    assert headers.get_all("absent") == []
    assert headers.get("absent", "dflt") == "dflt"
    assert sorted(headers) == ["host", "x-multi"] and len(headers) == 2


@pytest.mark.parametrize("lookup", [lambda h: h["x-multi"], lambda h: h.get("X-Multi")])
def test_multiple_values_error(lookup):
    with pytest.raises(MultipleValuesError) as info:
        lookup(Headers(PAIRS))
    assert not isinstance(info.value, KeyError) and isinstance(info.value, LookupError)
    assert str(info.value) in ("'x-multi'", "'X-Multi'")


def test_multiple_values_error_str_with_several_args():
    assert str(MultipleValuesError("a", "b")) == "('a', 'b')"


def test_missing_key_error():
    with pytest.raises(KeyError):
        Headers()["nope"]


def test_get_all_returns_a_copy():
    headers = Headers(A="1")
    headers.get_all("A").append("2")
    assert headers.get_all("A") == ["1"]


def test_delete_removes_every_value():
    headers = Headers(PAIRS)
    del headers["X-MULTI"]
    assert list(headers.raw_items()) == [("Host", "example.com")]
    with pytest.raises(KeyError):
        del headers["X-Multi"]


def test_copy_is_independent():
    headers = Headers(PAIRS)
    copy = headers.copy()
    copy["X-Multi"] = "c"
    copy["New"] = "1"
    assert headers.get_all("x-multi") == ["a", "b"] and "New" not in headers
    assert copy.get_all("x-multi") == ["a", "b", "c"]


def test_equality_clear_repr_hash():
    assert Headers(PAIRS) == Headers(PAIRS)
    assert Headers(A="1") != Headers(A="2")
    assert Headers(A="1").__eq__({"A": "1"}) is NotImplemented
    headers = Headers(PAIRS)
    headers.clear()
    assert headers == Headers() and list(headers.raw_items()) == []
    assert repr(Headers(A="1")) == "Headers([('A', '1')])"
    with pytest.raises(TypeError):
        hash(Headers())


def test_str_and_serialize():
    headers = Headers([("Host", "h"), ("X-Latin", "caf\xe9")])
    assert str(headers) == "Host: h\r\nX-Latin: caf\xe9\r\n\r\n"
    assert headers.serialize() == b"Host: h\r\nX-Latin: caf\xe9\r\n\r\n"
    assert Headers().serialize() == b"\r\n"


INJECTIONS = [
    ("crlf in value", "X-A", "v\r\nSet-Cookie: x=1"),
    ("lf in value", "X-A", "v\nx"),
    ("cr in value", "X-A", "v\rx"),
    ("nul in value", "X-A", "v\x00"),
    ("del in value", "X-A", "v\x7f"),
    ("ctl in value", "X-A", "v\x01"),
    ("non latin-1 value", "X-A", "\u20ac"),
    ("crlf in name", "X-A\r\nX-B", "v"),
    ("space in name", "X A", "v"),
    ("colon in name", "X:A", "v"),
    ("empty name", "", "v"),
    ("non-ascii name", "X-\xe9", "v"),
    ("non-str value", "X-A", 1),
]


@pytest.mark.parametrize(
    ("name", "value"), [c[1:] for c in INJECTIONS], ids=[c[0] for c in INJECTIONS]
)
def test_serialize_refuses_injection(name, value):
    headers = Headers()
    headers[name] = value
    with pytest.raises(ValueError):
        headers.serialize()
    with pytest.raises(ValueError):
        check_header(name, value)
    # Among valid headers, before or after it, the bad one is still found.
    for around in (Headers([("Host", "h"), (name, value)]), Headers([(name, value), ("X-B", "b")])):
        with pytest.raises(ValueError):
            around.serialize()


def test_serialize_refuses_a_non_str_name():
    headers = Headers([("Host", "h")])
    headers._list.append((b"X-A", "v"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        headers.serialize()


SAFE_HEADERS = [
    ("X-A", "v", b"X-A: v\r\n"),
    ("".join(sorted(TCHAR)), "x", "".join(sorted(TCHAR)).encode() + b": x\r\n"),
    ("X-Tab", "a\tb", b"X-Tab: a\tb\r\n"),
    ("X-Latin", "caf\xe9 \xff", b"X-Latin: caf\xe9 \xff\r\n"),
    ("X-Empty", "", b"X-Empty: \r\n"),
]


@pytest.mark.parametrize(("name", "value", "line"), SAFE_HEADERS)
def test_check_header_and_serialize_accept_safe_headers(name, value, line):
    assert check_header(name, value) is None
    headers = Headers([("Host", "h"), (name, value)])
    assert headers.serialize() == b"Host: h\r\n" + line + b"\r\n"


# ------------------------------------------------------- character classes

TOKENS = [
    ("websocket", True),
    (b"websocket", True),
    ("".join(sorted(TCHAR)), True),
    ("", False),
    (b"", False),
    ("a b", False),
    ("a/b", False),
    ("a,b", False),
    ('"a"', False),
    ("caf\xe9", False),
    (b"caf\xe9", False),
]


@pytest.mark.parametrize(("value", "expected"), TOKENS)
def test_is_token(value, expected):
    assert is_token(value) is expected


FIELD_VALUES = [
    ("", True),
    ("a b\tc", True),
    ("caf\xe9", True),
    (b"caf\xe9", True),
    ("a\r", False),
    (b"a\n", False),
    ("\x00", False),
    ("\x7f", False),
    ("\u20ac", False),
]


@pytest.mark.parametrize(("value", "expected"), FIELD_VALUES)
def test_is_field_value(value, expected):
    assert is_field_value(value) is expected


# ------------------------------------------------------------ token lists

TOKEN_LISTS = [
    (parse_token_list, "Upgrade", ["upgrade"]),
    (parse_token_list, "keep-alive, Upgrade", ["keep-alive", "upgrade"]),
    (parse_token_list, " ,\tkeep-alive ,, Upgrade ,", ["keep-alive", "upgrade"]),
    (parse_token_list, "", []),
    (parse_upgrade_list, "WebSocket", ["websocket"]),
    (parse_upgrade_list, "websocket, h2c", ["websocket", "h2c"]),
    (parse_upgrade_list, "HTTP/2.0, websocket", ["http/2.0", "websocket"]),
    (parse_subprotocol_list, "Chat, superchat", ["Chat", "superchat"]),
    (parse_subprotocol_list, "v1.json.api,, v2", ["v1.json.api", "v2"]),
]


@pytest.mark.parametrize(("parse", "value", "expected"), TOKEN_LISTS)
def test_token_lists(parse, value, expected):
    assert parse(value) == expected


BAD_TOKEN_LISTS = [
    (parse_token_list, "Upgrade;", 0),
    (parse_token_list, "keep-alive, up grade", 12),
    (parse_upgrade_list, "websocket/", 0),
    (parse_upgrade_list, "h2c, /2", 5),
    (parse_upgrade_list, "web socket", 0),
    (parse_subprotocol_list, "chat, a/b", 6),
]


@pytest.mark.parametrize(("parse", "value", "pos"), BAD_TOKEN_LISTS)
def test_token_list_errors(parse, value, pos):
    with pytest.raises(InvalidHeaderFormat) as info:
        parse(value)
    assert f"at {pos} in" in str(info.value)
    assert info.value.status == 400


def test_build_token_list():
    assert build_token_list(["a", "b"]) == "a, b"
    with pytest.raises(ValueError):
        build_token_list(["a b"])


# -------------------------------------------------------- extension lists

EXTENSION_LISTS = [
    ("permessage-deflate", [("permessage-deflate", [])]),
    (
        "permessage-deflate; client_max_window_bits",
        [("permessage-deflate", [("client_max_window_bits", None)])],
    ),
    (
        'permessage-deflate ; client_max_window_bits = "10" ;server_no_context_takeover',
        [
            (
                "permessage-deflate",
                [("client_max_window_bits", "10"), ("server_no_context_takeover", None)],
            )
        ],
    ),
    (
        "permessage-deflate; server_max_window_bits=10, permessage-deflate",
        [("permessage-deflate", [("server_max_window_bits", "10")]), ("permessage-deflate", [])],
    ),
    ('x-ext; p="a\\bc"', [("x-ext", [("p", "abc")])]),
    (" , a ,, b;c=d ,", [("a", []), ("b", [("c", "d")])]),
    ("", []),
]


@pytest.mark.parametrize(("value", "expected"), EXTENSION_LISTS)
def test_parse_extension_list(value, expected):
    assert parse_extension_list(value) == expected


BAD_EXTENSION_LISTS = [
    ("; p", "expected token"),
    ("a; ", "expected token"),
    ("a; p=", "expected token"),
    ("a b", "expected comma"),
    ("a; p=1 2", "expected comma"),
    ('a; p="1', "unterminated quoted string"),
    ('a; p="1\\', "unterminated quoted string"),
    ('a; p="a b"', "invalid quoted parameter value"),
    ('a; p=""', "invalid quoted parameter value"),
    ('a; p="a\x00"', "invalid character in quoted string"),
    ('a; p="\\\x7f"', "invalid character in quoted string"),
    ("a; p==1", "expected token"),
]


@pytest.mark.parametrize(("value", "error"), BAD_EXTENSION_LISTS)
def test_parse_extension_list_errors(value, error):
    with pytest.raises(InvalidHeaderFormat) as info:
        parse_extension_list(value)
    assert error in str(info.value)


BUILT_EXTENSIONS = [
    ([], ""),
    ([("permessage-deflate", [])], "permessage-deflate"),
    (
        [
            (
                "permessage-deflate",
                [("server_no_context_takeover", None), ("client_max_window_bits", "12")],
            )
        ],
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=12",
    ),
    ([("a", []), ("b", [("c", "d")])], "a, b; c=d"),
]


@pytest.mark.parametrize(("extensions", "expected"), BUILT_EXTENSIONS)
def test_build_extension_header(extensions, expected):
    assert build_extension_header(extensions) == expected
    assert parse_extension_list(expected) == extensions


@pytest.mark.parametrize(
    "extensions",
    [[("a b", [])], [("a", [("p q", None)])], [("a", [("p", "1 2")])], [("a", [("p", "")])]],
)
def test_build_extension_header_refuses_non_tokens(extensions):
    with pytest.raises(ValueError):
        build_extension_header(extensions)


tokens = st.text(alphabet=sorted(TCHAR), min_size=1, max_size=8)
extension_lists = st.lists(
    st.tuples(tokens, st.lists(st.tuples(tokens, st.none() | tokens), max_size=3)),
    max_size=3,
)


@given(extension_lists)
def test_extension_header_round_trip(extensions):
    assert parse_extension_list(build_extension_header(extensions)) == extensions


@given(st.text(alphabet=' \t,;="\\ab1\x00\xe9', max_size=30))
def test_parse_extension_list_never_crashes(value):
    try:
        parsed = parse_extension_list(value)
    except InvalidHeaderFormat:
        return
    for name, params in parsed:
        assert is_token(name) and all(is_token(p) and (v is None or is_token(v)) for p, v in params)
