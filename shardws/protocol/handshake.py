"""The server side of the RFC 6455 opening handshake (section 4.2).

:func:`accept` checks a parsed :class:`~shardws.protocol.http11.Request`,
negotiates the subprotocol and the extensions, and builds the 101 response.
Every refusal is an :class:`~shardws.exceptions.InvalidHandshake` whose
``status`` is the HTTP status to answer; :func:`error_response` turns it into
that response. Pure functions: no I/O, no state, safe from any thread.

Statuses: 400 malformed request or header, 403 origin not allowed, 405
method other than GET, 426 not a WebSocket upgrade or an unsupported
``Sec-WebSocket-Version`` (414 / 431 / 505 come from the request parser).
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from ..exceptions import (
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
)
from .headers import (
    ExtensionHeader,
    ExtensionParameter,
    Headers,
    HeadersLike,
    build_extension_header,
    parse_extension_list,
    parse_subprotocol_list,
    parse_token_list,
    parse_upgrade_list,
)
from .http11 import Request, Response

__all__ = [
    "GUID",
    "SERVER_NAME",
    "SUPPORTED_VERSION",
    "DEFAULT",
    "ServerExtensionFactory",
    "OriginLike",
    "accept_key",
    "default_server_header",
    "check_request",
    "check_origin",
    "negotiate_extensions",
    "negotiate_subprotocol",
    "accept",
    "reject",
    "error_response",
]

# RFC 6455 section 1.3: the globally unique identifier concatenated to the key.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SERVER_NAME = "shardws"
SUPPORTED_VERSION = "13"

BROWSER_HINT = (
    "\nYou cannot access a WebSocket server directly with a browser. You need a WebSocket client.\n"
)


class _Default(enum.Enum):
    TOKEN = "default"


#: Sentinel for ``server_header``: use :func:`default_server_header`.
DEFAULT = _Default.TOKEN

OriginLike = str | re.Pattern[str] | None


class ServerExtensionFactory(Protocol):
    """What :func:`accept` needs from an extension factory (e.g. permessage-deflate)."""

    @property
    def name(self) -> str: ...

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Any],
    ) -> tuple[list[ExtensionParameter], Any]: ...


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``.

    RFC 6455 section 4.2.2: "concatenate [the key] with the Globally Unique
    Identifier [...] A SHA-1 hash (160 bits), base64-encoded [...] of this
    concatenation is then returned in the server's handshake."
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


_server_header: str | None = None


def default_server_header() -> str:
    """``"shardws/<version>"``, the default ``Server`` header."""
    global _server_header
    if _server_header is None:
        from .. import __version__  # lazy: shardws/__init__ may still be importing us

        _server_header = f"{SERVER_NAME}/{__version__}"
    return _server_header


def _values(headers: Headers, key: str) -> list[str]:
    """Every value of the header ``key`` (lowercase); the list itself: do not change it."""
    return headers._dict.get(key, _NONE)


_NONE: list[str] = []


def _single(headers: Headers, name: str) -> str | None:
    """The one value of ``name``, ``None`` if absent; 400 if it is repeated."""
    values = _values(headers, name.lower())
    if len(values) > 1:
        raise InvalidHeader(name, "multiple values")
    return values[0] if values else None


def check_request(request: Request) -> str:
    """Check that ``request`` asks for a version 13 WebSocket upgrade.

    Returns the ``Sec-WebSocket-Key``. Raises
    :class:`~shardws.exceptions.InvalidMessage` (405) for a method other than
    GET, :class:`~shardws.exceptions.InvalidUpgrade` (426) when ``Upgrade`` or
    ``Connection`` is missing, malformed or lacks the needed token,
    :class:`~shardws.exceptions.InvalidVersion` (426) when
    ``Sec-WebSocket-Version`` is missing or not 13,
    :class:`~shardws.exceptions.InvalidHeader` (400) when the key is missing,
    repeated, or not the base64 encoding of exactly 16 bytes, or when the
    version is repeated.
    """
    headers = request.headers
    # RFC 6455 section 4.1: "The method of the request MUST be GET".
    if request.method != "GET":
        raise InvalidMessage(f"unsupported HTTP method: {request.method}", 405)

    # RFC 6455 section 4.2.1: "An |Upgrade| header field containing the value
    # "websocket", treated as an ASCII case-insensitive value."
    upgrade = _values(headers, "upgrade")
    # The usual single "websocket" needs no list parsing.
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        try:
            protocols = [p for value in upgrade for p in parse_upgrade_list(value)]
        except InvalidHeaderFormat:
            protocols = []
        if "websocket" not in protocols:
            raise InvalidUpgrade("Upgrade", ", ".join(upgrade) if upgrade else None)

    # RFC 6455 section 4.2.1: "A |Connection| header field that includes the
    # token "Upgrade", treated as an ASCII case-insensitive value."
    connection = _values(headers, "connection")
    if len(connection) != 1 or connection[0].lower() != "upgrade":
        try:
            options = [t for value in connection for t in parse_token_list(value, "Connection")]
        except InvalidHeaderFormat:
            options = []
        if "upgrade" not in options:
            raise InvalidUpgrade("Connection", ", ".join(connection) if connection else None)

    # RFC 6455 section 4.2.2: "If this version does not match a version
    # understood by the server, the server MUST abort the WebSocket handshake
    # [...] and instead send an appropriate HTTP error code (such as 426
    # Upgrade Required) and a |Sec-WebSocket-Version| header field indicating
    # the version(s) the server is capable of understanding."
    version = _single(headers, "Sec-WebSocket-Version")
    if version != SUPPORTED_VERSION:
        raise InvalidVersion("Sec-WebSocket-Version", version)

    # RFC 6455 section 4.2.1: "A |Sec-WebSocket-Key| header field with a
    # base64-encoded value that, when decoded, is 16 bytes in length."
    key = _single(headers, "Sec-WebSocket-Key")
    if key is None:
        raise InvalidHeader("Sec-WebSocket-Key")
    if len(key) != 24 or not key.isascii():
        raise InvalidHeaderValue("Sec-WebSocket-Key", key)
    try:
        raw_key = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
    except binascii.Error:
        raise InvalidHeaderValue("Sec-WebSocket-Key", key) from None
    if len(raw_key) != 16:
        raise InvalidHeaderValue("Sec-WebSocket-Key", key)
    return key


def check_origin(request: Request, origins: Sequence[OriginLike] | None) -> str | None:
    """Return the request's ``Origin`` (``None`` when absent) if ``origins`` allows it.

    ``origins`` is ``None`` (any origin) or a sequence of exact strings,
    compiled patterns (full match) and ``None`` (allows a request without
    ``Origin``). Raises :class:`~shardws.exceptions.InvalidOrigin` (403), or
    :class:`~shardws.exceptions.InvalidHeader` (400) for a repeated ``Origin``.
    """
    origin = _single(request.headers, "Origin")
    if origins is None:
        return origin
    for allowed in origins:
        if allowed == origin:
            return origin
        if isinstance(allowed, re.Pattern) and origin is not None and allowed.fullmatch(origin):
            return origin
    raise InvalidOrigin(origin)


def negotiate_extensions(
    headers: Headers, factories: Sequence[ServerExtensionFactory]
) -> tuple[str | None, list[Any]]:
    """Accept extension offers from ``Sec-WebSocket-Extensions``.

    Offers are tried in the client's order (every header, every comma list
    element), each against ``factories`` of the same name in order; the
    first factory whose ``process_request_params`` returns wins, a
    :class:`~shardws.exceptions.NegotiationError` falls through to the next
    factory, then to the next offer. Only the first accepted offer of each
    extension name counts. Unknown or refused offers are ignored (RFC 6455
    section 9.1: the server only selects among what the client offered).

    Returns the response header value (``None`` if nothing was accepted) and
    the extension instances, in order. Raises
    :class:`~shardws.exceptions.InvalidHeaderFormat` (400) on a malformed
    header when ``factories`` is not empty.
    """
    values = _values(headers, "sec-websocket-extensions")
    if not values or not factories:
        return None, []
    offers = [offer for value in values for offer in parse_extension_list(value)]
    accepted: list[Any] = []
    response: list[ExtensionHeader] = []
    for name, params in offers:
        if any(name == accepted_name for accepted_name, _ in response):
            continue
        for factory in factories:
            if factory.name != name:
                continue
            try:
                response_params, extension = factory.process_request_params(params, accepted)
            except NegotiationError:
                continue
            response.append((name, response_params))
            accepted.append(extension)
            break
    return (build_extension_header(response) if response else None), accepted


def negotiate_subprotocol(
    headers: Headers,
    subprotocols: Sequence[str] | None = None,
    select_subprotocol: Callable[[list[str]], str | None] | None = None,
) -> str | None:
    """Pick the subprotocol from the client's ``Sec-WebSocket-Protocol`` offers.

    With ``select_subprotocol``, it is called with the offers (client order)
    and its answer is used; it may raise
    :class:`~shardws.exceptions.NegotiationError` to refuse (400). Without it,
    as websockets does: no ``subprotocols`` means no subprotocol whatever the
    client offers; otherwise the first of ``subprotocols`` (server order) the
    client offered, and :class:`~shardws.exceptions.NegotiationError` (400)
    when the client offered none of them.

    Raises :class:`~shardws.exceptions.LocalProtocolError` (a server bug,
    not a handshake failure) when ``select_subprotocol`` returns a value the
    client did not offer, and
    :class:`~shardws.exceptions.InvalidHeaderFormat` (400) on a malformed
    header.
    """
    values = _values(headers, "sec-websocket-protocol")
    if not values and select_subprotocol is None and not subprotocols:
        return None
    offered = [protocol for value in values for protocol in parse_subprotocol_list(value)]
    if select_subprotocol is not None:
        selected = select_subprotocol(list(offered))
        # RFC 6455 section 4.2.2: "the value chosen MUST be derived from the
        # client's handshake, specifically by selecting one of the values from
        # the |Sec-WebSocket-Protocol| field".
        if selected is not None and selected not in offered:
            raise LocalProtocolError(f"select_subprotocol returned {selected!r}, not offered")
        return selected
    if not subprotocols:
        return None
    if not offered:
        raise NegotiationError("missing subprotocol")
    offered_set = set(offered)
    for protocol in subprotocols:
        if protocol in offered_set:
            return protocol
    raise NegotiationError("invalid subprotocol; expected one of " + ", ".join(subprotocols))


def accept(
    request: Request,
    *,
    subprotocols: Sequence[str] | None = None,
    select_subprotocol: Callable[[list[str]], str | None] | None = None,
    extensions: Sequence[ServerExtensionFactory] = (),
    origins: Sequence[OriginLike] | None = None,
    server_header: str | None | Literal[_Default.TOKEN] = DEFAULT,
) -> tuple[Response, str | None, list[Any]]:
    """Check ``request`` and build the 101 Switching Protocols response.

    Returns ``(response, subprotocol or None, extension instances)``. The
    response carries ``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``,
    ``Sec-WebSocket-Extensions`` and ``Sec-WebSocket-Protocol`` when
    negotiated, and ``Server`` (``"shardws/<version>"`` by default, none when
    ``server_header`` is ``None``). The caller adds ``Date`` and extra headers.

    Checks, in order: :func:`check_request` (405, 426, 400),
    :func:`check_origin` (403), :func:`negotiate_extensions`,
    :func:`negotiate_subprotocol` (400). Raises
    :class:`~shardws.exceptions.InvalidHandshake` subclasses, and
    :class:`~shardws.exceptions.LocalProtocolError` for a bad
    ``select_subprotocol`` answer.
    """
    key = check_request(request)
    check_origin(request, origins)
    extensions_header, accepted = negotiate_extensions(request.headers, extensions)
    subprotocol = negotiate_subprotocol(request.headers, subprotocols, select_subprotocol)

    accept_value = accept_key(key)
    pairs = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_value),
    ]
    index = {
        "upgrade": ["websocket"],
        "connection": ["Upgrade"],
        "sec-websocket-accept": [accept_value],
    }
    if extensions_header is not None:
        pairs.append(("Sec-WebSocket-Extensions", extensions_header))
        index["sec-websocket-extensions"] = [extensions_header]
    # RFC 6455 section 4.2.2: "If the server does not wish to agree to one of
    # the suggested subprotocols, it MUST NOT send back a
    # |Sec-WebSocket-Protocol| header field in its response."
    if subprotocol is not None:
        pairs.append(("Sec-WebSocket-Protocol", subprotocol))
        index["sec-websocket-protocol"] = [subprotocol]
    if server_header is DEFAULT:
        server_header = default_server_header()
    if server_header is not None:
        pairs.append(("Server", server_header))
        index["server"] = [server_header]
    response = Response._make(101, "Switching Protocols", Headers._from_index(pairs, index))
    return response, subprotocol, accepted


def reject(
    status: int,
    text: str,
    headers: HeadersLike | None = None,
    *,
    server_header: str | None = None,
) -> Response:
    """A plain-text error response ending the connection.

    ``text`` is the UTF-8 body with ``Content-Type: text/plain;
    charset=utf-8``; ``Connection: close`` is added unless ``headers`` has a
    ``Connection`` header; ``Content-Length`` is added by
    :meth:`Response.serialize`. ``server_header`` adds a ``Server`` header.
    """
    response_headers = Headers(headers) if headers is not None else Headers()
    if "Connection" not in response_headers:
        response_headers["Connection"] = "close"
    if "Content-Type" not in response_headers:
        response_headers["Content-Type"] = "text/plain; charset=utf-8"
    if server_header is not None:
        response_headers["Server"] = server_header
    return Response(status, "", text, headers=response_headers)


def error_response(exc: InvalidHandshake, *, server_header: str | None = None) -> Response:
    """The response answering a failed handshake, with status ``exc.status``.

    426 responses carry ``Upgrade: websocket``, ``Sec-WebSocket-Version: 13``
    and ``Connection: Upgrade, close`` (RFC 9110 section 7.8: "A sender of
    Upgrade MUST also send an "Upgrade" connection option in the Connection
    header field"); 405 responses carry ``Allow: GET`` (RFC 9110 section
    15.5.6: "The origin server MUST generate an Allow header field in a 405
    response"). Every error response closes the connection.
    """
    status = exc.status
    text = f"Failed to open a WebSocket connection: {exc}.\n"
    headers = Headers()
    if status == 426:
        # RFC 9110 section 15.5.22: "The server MUST send an Upgrade header
        # field in a 426 response to indicate the required protocol(s)".
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade, close"
        headers["Sec-WebSocket-Version"] = SUPPORTED_VERSION
        if isinstance(exc, InvalidUpgrade):
            text += BROWSER_HINT
    elif status == 405:
        headers["Allow"] = "GET"
    return reject(status, text, headers, server_header=server_header)
