"""HTTP header fields: the :class:`Headers` container and list-syntax helpers.

:class:`Headers` behaves like ``websockets.datastructures.Headers``: names are
case-insensitive, a name may carry several values, ``h[name] = value``
appends, ``h[name]`` raises :class:`MultipleValuesError` when the name has
several values. Values are ``str`` holding ISO-8859-1 text (bytes 0x80-0xFF
map one to one), so they round-trip with the wire.

The parsers here (``parse_token_list``, ``parse_subprotocol_list``,
``parse_extension_list``) are hand-written left-to-right scanners: each one
looks at every character a bounded number of times (linear time, no
backtracking regular expression ever sees client input). Their input is
already capped by :class:`shardws.protocol.http11.RequestParser`.

Nothing here is thread-safe; a :class:`Headers` belongs to one connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping

from ..exceptions import InvalidHeaderFormat

__all__ = [
    "Headers",
    "HeadersLike",
    "MultipleValuesError",
    "ExtensionParameter",
    "ExtensionHeader",
    "is_token",
    "is_field_value",
    "check_header",
    "parse_token_list",
    "parse_upgrade_list",
    "parse_subprotocol_list",
    "parse_extension_list",
    "build_extension_header",
    "build_token_list",
]

# RFC 9110 section 5.6.2:
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
TCHAR_BYTES = bytes(sorted(ord(c) for c in TCHAR))

# RFC 9110 section 5.5: field-value characters are VCHAR / obs-text / SP / HTAB.
# These are the forbidden ones: every CTL except HTAB, and DEL.
FORBIDDEN_VALUE_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
_FORBIDDEN_VALUE_STR = frozenset(chr(b) for b in FORBIDDEN_VALUE_BYTES)

OWS = " \t"

ExtensionParameter = tuple[str, str | None]
ExtensionHeader = tuple[str, list[ExtensionParameter]]


def is_token(value: str | bytes) -> bool:
    """True when ``value`` is a non-empty RFC 9110 token (``1*tchar``)."""
    if isinstance(value, str):
        if not value.isascii():
            return False
        value = value.encode("ascii")
    return bool(value) and not value.translate(None, TCHAR_BYTES)


def is_field_value(value: str | bytes) -> bool:
    """True when ``value`` holds no CTL but HTAB (no CR, LF, NUL, DEL).

    For ``str``, every character must also be ISO-8859-1 (below U+0100), as it
    is sent as one byte.
    """
    if isinstance(value, bytes):
        return len(value.translate(None, FORBIDDEN_VALUE_BYTES)) == len(value)
    try:
        raw = value.encode("iso-8859-1")
    except UnicodeEncodeError:
        return False
    return len(raw.translate(None, FORBIDDEN_VALUE_BYTES)) == len(raw)


def check_header(name: str, value: str) -> None:
    """Raise ``ValueError`` unless ``name: value`` is safe to put on the wire.

    This is the guard against header injection through user-supplied
    headers: a name must be a token, a value must hold no CR, LF, NUL or
    other CTL (RFC 9110 section 5.5: "Field values containing CR, LF, or NUL
    characters are invalid and dangerous").
    """
    if not isinstance(name, str) or not is_token(name):
        raise ValueError(f"invalid header name: {name!r}")
    if not isinstance(value, str) or not is_field_value(value):
        raise ValueError(f"invalid value for header {name}: {value!r}")


class MultipleValuesError(LookupError):
    """Raised by ``Headers[name]`` when the header has several values.

    A :class:`LookupError` but not a :class:`KeyError` (as in websockets), so
    ``headers.get(name)`` raises it too rather than hiding a duplicated header.
    """

    def __str__(self) -> str:
        # Same logic as KeyError's str(): repr of a single argument.
        if len(self.args) == 1:
            return repr(self.args[0])
        return super().__str__()


class Headers(MutableMapping[str, str]):
    """Case-insensitive, multi-valued HTTP headers (websockets compatible).

    * ``h[name]``: the single value; :class:`KeyError` if none,
      :class:`MultipleValuesError` if several.
    * ``h[name] = value``: **appends** a value.
    * ``del h[name]``: removes every value of that name.
    * :meth:`get_all`: every value of a name, in order.
    * :meth:`raw_items`: every ``(name, value)`` pair as inserted, original case.
    * ``str(h)``: the ``"Name: value\\r\\n"`` block ended by ``"\\r\\n"``
      (not validated); :meth:`serialize` validates and encodes it.

    The constructor and :meth:`update` take a :class:`Headers` (every value
    kept), a mapping, an iterable of ``(name, value)`` pairs, and keyword
    arguments.
    """

    __slots__ = ("_dict", "_list")

    def __init__(self, *args: HeadersLike, **kwargs: str) -> None:
        self._dict: dict[str, list[str]] = {}
        self._list: list[tuple[str, str]] = []
        if args or kwargs:
            self.update(*args, **kwargs)

    @classmethod
    def _from_index(cls, pairs: list[tuple[str, str]], index: dict[str, list[str]]) -> Headers:
        """Headers from ``pairs`` and their index (lowercase name -> values), both kept."""
        headers = cls.__new__(cls)
        headers._dict = index
        headers._list = pairs
        return headers

    def __str__(self) -> str:
        return "".join([f"{name}: {value}\r\n" for name, value in self._list]) + "\r\n"

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self._list!r})"

    def copy(self) -> Headers:
        """A shallow copy: later changes to either one do not affect the other."""
        copy = self.__class__()
        copy._dict = {name: values.copy() for name, values in self._dict.items()}
        copy._list = self._list.copy()
        return copy

    def serialize(self) -> bytes:
        """The wire form of :meth:`__str__`, ISO-8859-1 encoded.

        Raises ``ValueError`` when a name is not a token or a value holds a
        CR, LF, NUL, another CTL, or a character above U+00FF: no header
        injection can leave through here.
        """
        pairs = self._list
        if not pairs:
            return b"\r\n"
        # Every name and value checked at once (one pass in C over each
        # kind); on anything wrong, check_header finds the culprit and raises.
        try:
            names = [name for name, _ in pairs]
            joined = "".join(names)
            raw = ("\r\n".join(map(": ".join, pairs)) + "\r\n\r\n").encode("iso-8859-1")
            # The only CTLs are the line ends: 2 per line.
            valid = (
                joined.isascii()
                and not joined.encode("ascii").translate(None, TCHAR_BYTES)
                and "" not in names
                and len(raw.translate(None, FORBIDDEN_VALUE_BYTES)) == len(raw) - 2 * len(pairs) - 2
            )
        except (TypeError, UnicodeEncodeError):
            valid = False
        if not valid:
            for name, value in pairs:  # pragma: no branch (one of them raises)
                check_header(name, value)
        return raw

    # Collection methods

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    # MutableMapping methods

    def __getitem__(self, key: str) -> str:
        values = self._dict[key.lower()]
        if len(values) == 1:
            return values[0]
        raise MultipleValuesError(key)

    def __setitem__(self, key: str, value: str) -> None:
        self._dict.setdefault(key.lower(), []).append(value)
        self._list.append((key, value))

    def __delitem__(self, key: str) -> None:
        key_lower = key.lower()
        del self._dict[key_lower]
        self._list = [(k, v) for k, v in self._list if k.lower() != key_lower]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._dict == other._dict

    __hash__ = None  # type: ignore[assignment]

    def clear(self) -> None:
        """Remove every header."""
        self._dict = {}
        self._list = []

    def update(self, *args: HeadersLike, **kwargs: str) -> None:  # type: ignore[override]
        """Append the headers of each argument, then the keyword arguments.

        A :class:`Headers` argument contributes every value it holds.
        """
        if len(args) > 1:
            raise TypeError(f"update expected at most 1 positional argument, got {len(args)}")
        for arg in args:
            if isinstance(arg, Headers):
                pairs: Iterable[tuple[str, str]] = list(arg.raw_items())
            elif isinstance(arg, Mapping):
                pairs = [(key, arg[key]) for key in arg]
            else:
                pairs = arg
            for key, value in pairs:
                self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    # Methods for multiple values

    def get_all(self, key: str) -> list[str]:
        """Every value of header ``key`` in order (a new, possibly empty list)."""
        return list(self._dict.get(key.lower(), ()))

    def raw_items(self) -> Iterator[tuple[str, str]]:
        """Every ``(name, value)`` pair in insertion order, names as given."""
        return iter(self._list)


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


# ------------------------------------------------------------ list syntax
#
# RFC 9110 section 5.6.1: "#element" lists are comma separated with optional
# whitespace; "a recipient MUST parse and ignore a reasonable number of empty
# list elements".


def _split_list(value: str) -> list[tuple[str, int]]:
    """Split a ``#element`` list into its stripped, non-empty elements with positions."""
    elements: list[tuple[str, int]] = []
    start = 0
    for part in value.split(","):
        stripped = part.strip(OWS)
        if stripped:
            elements.append((stripped, start + len(part) - len(part.lstrip(OWS))))
        start += len(part) + 1
    return elements


def _split_tokens(value: str, name: str) -> list[str]:
    """The elements of a ``1#token`` list, case kept; InvalidHeaderFormat on a non-token."""
    tokens = []
    for element, pos in _split_list(value):
        if not is_token(element):
            raise InvalidHeaderFormat(name, "expected token", value, pos)
        tokens.append(element)
    return tokens


def parse_token_list(value: str, name: str = "header") -> list[str]:
    """Parse a ``1#token`` list (``Connection``) into lowercased tokens.

    ``"keep-alive, Upgrade"`` gives ``["keep-alive", "upgrade"]``. Raises
    :class:`~shardws.exceptions.InvalidHeaderFormat` (400) on an element that
    is not a token; empty elements are ignored.
    """
    return [token.lower() for token in _split_tokens(value, name)]


def parse_upgrade_list(value: str, name: str = "Upgrade") -> list[str]:
    """Parse an ``Upgrade`` list (``1#protocol``) into lowercased protocols.

    RFC 9110 section 7.8: ``protocol = protocol-name ["/" protocol-version]``
    with both parts tokens, e.g. ``"websocket, HTTP/2.0"``. Raises
    :class:`~shardws.exceptions.InvalidHeaderFormat` on a malformed element.
    """
    protocols = []
    for element, pos in _split_list(value):
        protocol_name, slash, version = element.partition("/")
        if not is_token(protocol_name) or (slash and not is_token(version)):
            raise InvalidHeaderFormat(name, "expected protocol", value, pos)
        protocols.append(element.lower())
    return protocols


def parse_subprotocol_list(value: str, name: str = "Sec-WebSocket-Protocol") -> list[str]:
    """Parse a ``Sec-WebSocket-Protocol`` list; case is kept (subprotocols are
    compared exactly). Raises :class:`~shardws.exceptions.InvalidHeaderFormat`.
    """
    return _split_tokens(value, name)


def build_token_list(tokens: Iterable[str]) -> str:
    """Join tokens into a list header value; ``ValueError`` on a non-token."""
    tokens = list(tokens)
    for token in tokens:
        if not is_token(token):
            raise ValueError(f"invalid token: {token!r}")
    return ", ".join(tokens)


# --------------------------------------------------- extension list syntax
#
# RFC 6455 section 9.1:
#   Sec-WebSocket-Extensions = extension-list
#   extension-list = 1#extension
#   extension = extension-token *( ";" extension-param )
#   extension-param = token [ "=" (token | quoted-string) ]
#   "When using the quoted-string syntax variant, the value after
#   quoted-string unescaping MUST conform to the 'token' ABNF."


class _Scanner:
    """A cursor over one header value; every method advances, never backs up."""

    __slots__ = ("text", "pos", "name")

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.pos = 0
        self.name = name

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in OWS:
            pos += 1
        self.pos = pos

    def error(self, what: str) -> InvalidHeaderFormat:
        return InvalidHeaderFormat(self.name, what, self.text, self.pos)

    def token(self) -> str:
        text, start = self.text, self.pos
        pos = start
        while pos < len(text) and text[pos] in TCHAR:
            pos += 1
        if pos == start:
            raise self.error("expected token")
        self.pos = pos
        return text[start:pos]

    def quoted_string(self) -> str:
        # quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
        # qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
        # quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
        text = self.text
        pos = self.pos + 1  # after the opening DQUOTE
        chars: list[str] = []
        while True:
            if pos >= len(text):
                self.pos = pos
                raise self.error("unterminated quoted string")
            char = text[pos]
            if char == '"':
                self.pos = pos + 1
                return "".join(chars)
            if char == "\\":
                pos += 1
                if pos >= len(text):
                    self.pos = pos
                    raise self.error("unterminated quoted string")
                char = text[pos]
            if char in _FORBIDDEN_VALUE_STR:
                self.pos = pos
                raise self.error("invalid character in quoted string")
            chars.append(char)
            pos += 1


def parse_extension_list(
    value: str, name: str = "Sec-WebSocket-Extensions"
) -> list[ExtensionHeader]:
    """Parse a ``Sec-WebSocket-Extensions`` value.

    Returns ``[(extension name, [(param name, value or None), ...]), ...]`` in
    the order given. Empty list elements are ignored. Raises
    :class:`~shardws.exceptions.InvalidHeaderFormat` (400) on a syntax error.
    """
    scanner = _Scanner(value, name)
    extensions: list[ExtensionHeader] = []
    while True:
        scanner.skip_ows()
        char = scanner.peek()
        if char == "":
            return extensions
        if char == ",":  # empty list element
            scanner.pos += 1
            continue
        extension = scanner.token()
        params: list[ExtensionParameter] = []
        scanner.skip_ows()
        while scanner.peek() == ";":
            scanner.pos += 1
            scanner.skip_ows()
            param = scanner.token()
            param_value: str | None = None
            scanner.skip_ows()
            if scanner.peek() == "=":
                scanner.pos += 1
                scanner.skip_ows()
                if scanner.peek() == '"':
                    start = scanner.pos
                    param_value = scanner.quoted_string()
                    if not is_token(param_value):
                        scanner.pos = start
                        raise scanner.error("invalid quoted parameter value")
                else:
                    param_value = scanner.token()
                scanner.skip_ows()
            params.append((param, param_value))
        extensions.append((extension, params))
        if scanner.peek() not in (",", ""):
            raise scanner.error("expected comma")


def build_extension_header(extensions: Iterable[ExtensionHeader]) -> str:
    """Serialize ``[(name, [(param, value or None), ...]), ...]``.

    ``[("permessage-deflate", [("server_no_context_takeover", None)])]`` gives
    ``"permessage-deflate; server_no_context_takeover"``. Raises
    ``ValueError`` on a name or value that is not a token (RFC 6455 section
    9.1), so nothing here is ever quoted.
    """
    items = []
    for extension, params in extensions:
        parts = [extension]
        if not is_token(extension):
            raise ValueError(f"invalid extension name: {extension!r}")
        for param, param_value in params:
            if not is_token(param):
                raise ValueError(f"invalid extension parameter name: {param!r}")
            if param_value is None:
                parts.append(param)
            elif is_token(param_value):
                parts.append(f"{param}={param_value}")
            else:
                # RFC 6455 section 9.1: a value "MUST conform to the 'token' ABNF".
                raise ValueError(f"invalid extension parameter value: {param_value!r}")
        items.append("; ".join(parts))
    return ", ".join(items)
