"""Exceptions raised by shardws.

One root, :class:`WebSocketException`. The names follow the websockets
library so that ``except websockets.ConnectionClosed`` keeps working with
``import shardws as websockets``.

Two families are kept apart:

* **remote violations** -- the peer broke RFC 6455 / RFC 7692 or sent a bad
  handshake: :class:`RemoteProtocolError` (and its subclasses
  :class:`InvalidUTF8`, :class:`PayloadTooBig`), :class:`InvalidHandshake`
  and its subclasses. Each protocol error carries the close code the
  connection fails with; each handshake error carries the HTTP status the
  server answers with.
* **local misuse** -- the application called the API wrongly:
  :class:`LocalProtocolError` (e.g. an invalid close code passed to
  ``close()``), :class:`InvalidState`, :class:`ConcurrencyError`. These also
  derive from the matching built-in (``ValueError``, ``AssertionError`` as
  in websockets, ``RuntimeError``) so generic handlers catch them.

:class:`ProtocolError` is the common base of both protocol families, as in
websockets, where ``close(code=999)`` raises ``ProtocolError``.
"""

from __future__ import annotations

__all__ = [
    "WebSocketException",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidHandshake",
    "InvalidMessage",
    "SecurityError",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidOrigin",
    "InvalidUpgrade",
    "InvalidVersion",
    "InvalidStatus",
    "NegotiationError",
    "DuplicateParameter",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidURI",
    "ProtocolError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "InvalidUTF8",
    "PayloadTooBig",
    "InvalidState",
    "ConcurrencyError",
]


class WebSocketException(Exception):
    """Root of every exception shardws raises on purpose."""


# --------------------------------------------------------------- closing


class ConnectionClosed(WebSocketException):
    """Raised when using a connection that is closed or closing.

    ``rcvd`` and ``sent`` are the close frames received and sent
    (:class:`shardws.protocol.frames.Close` or ``None``); ``rcvd_then_sent``
    tells which came first when both exist.
    """

    def __init__(self, rcvd: object | None, sent: object | None, rcvd_then_sent: bool | None = None) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.rcvd_then_sent = rcvd_then_sent
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            return "no close frame received or sent"
        if self.rcvd is None:
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        if self.rcvd_then_sent:
            return f"received {self.rcvd}; then sent {self.sent}"
        return f"sent {self.sent}; then received {self.rcvd}"

    @property
    def code(self) -> int:
        """Close code received, 1006 when none arrived (deprecated alias)."""
        return getattr(self.rcvd, "code", 1006)

    @property
    def reason(self) -> str:
        """Close reason received, "" when none arrived (deprecated alias)."""
        return getattr(self.rcvd, "reason", "")


class ConnectionClosedOK(ConnectionClosed):
    """Connection closed normally: both sides exchanged 1000 or 1001 (or no code)."""


class ConnectionClosedError(ConnectionClosed):
    """Connection closed abnormally: an error code, or no closing handshake."""


# ------------------------------------------------------------- handshake


class InvalidHandshake(WebSocketException):
    """The opening handshake failed. ``status`` is the HTTP status answered."""

    status: int = 400


class SecurityError(InvalidHandshake):
    """The request exceeded a hard limit (line length, header count, size)."""

    def __init__(self, message: str, status: int = 431) -> None:
        super().__init__(message)
        self.status = status


class InvalidMessage(InvalidHandshake):
    """The HTTP request is malformed (not parseable as HTTP/1.1)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class InvalidHeader(InvalidHandshake):
    """A header is missing or has a wrong value."""

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = name
        self.value = value
        if value is None:
            msg = f"missing {name} header"
        elif value == "":
            msg = f"empty {name} header"
        else:
            msg = f"invalid {name} header: {value}"
        super().__init__(msg)


class InvalidHeaderFormat(InvalidHeader):
    """A header value could not be parsed."""

    def __init__(self, name: str, error: str, header: str, pos: int) -> None:
        super().__init__(name, f"{error} at {pos} in {header}")


class InvalidHeaderValue(InvalidHeader):
    """A header value is semantically wrong."""


class InvalidOrigin(InvalidHeader):
    """The Origin header is not allowed (answered 403)."""

    status = 403

    def __init__(self, origin: str | None) -> None:
        super().__init__("Origin", origin)


class InvalidUpgrade(InvalidHeader):
    """The Upgrade or Connection header does not ask for WebSocket.

    Answered 426 Upgrade Required, per RFC 6455 section 4.2.2 / RFC 9110.
    """

    status = 426


class InvalidVersion(InvalidHeader):
    """Sec-WebSocket-Version is not 13 (answered 426 with the supported version)."""

    status = 426


class InvalidStatus(InvalidHandshake):
    """A handshake response had a status other than 101 (client side)."""

    def __init__(self, response: object) -> None:
        self.response = response
        super().__init__(f"server rejected WebSocket connection: HTTP {getattr(response, 'status_code', '?')}")


class NegotiationError(InvalidHandshake):
    """Extension or subprotocol negotiation failed."""


class DuplicateParameter(NegotiationError):
    """An extension parameter appears twice."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"duplicate parameter: {name}")


class InvalidParameterName(NegotiationError):
    """An extension parameter name is unknown."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"invalid parameter name: {name}")


class InvalidParameterValue(NegotiationError):
    """An extension parameter value is invalid."""

    def __init__(self, name: str, value: str | None) -> None:
        self.name = name
        self.value = value
        super().__init__(f"invalid value for parameter {name}: {value}")


class InvalidURI(WebSocketException):
    """A WebSocket URI is not valid."""

    def __init__(self, uri: str, msg: str) -> None:
        self.uri = uri
        self.msg = msg
        super().__init__(f"{uri} isn't a valid URI: {msg}")


# -------------------------------------------------------------- protocol


class ProtocolError(WebSocketException):
    """Base of protocol errors, remote (:class:`RemoteProtocolError`) or local."""


class RemoteProtocolError(ProtocolError):
    """The peer violated RFC 6455 / RFC 7692.

    The connection fails with :attr:`close_code` (1002 unless a subclass says
    otherwise).
    """

    close_code: int = 1002


class InvalidUTF8(RemoteProtocolError):
    """A text message or close reason is not valid UTF-8 (close code 1007)."""

    close_code = 1007


class PayloadTooBig(RemoteProtocolError):
    """A frame or message exceeds max_size (close code 1009)."""

    close_code = 1009


class LocalProtocolError(ProtocolError, ValueError):
    """The application misused the API, e.g. an invalid close code or an oversized ping."""


class InvalidState(WebSocketException, AssertionError):
    """An operation is not allowed in the connection's current state."""


class ConcurrencyError(WebSocketException, RuntimeError):
    """Two coroutines called recv() (or sent fragments) concurrently."""
