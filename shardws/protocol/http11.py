"""HTTP/1.1 for the opening handshake: :class:`Request`, :class:`Response`, and
the incremental :class:`RequestParser`.

The parser is linear in the bytes it receives, whatever their split: it
remembers where it stopped looking for the end of the current line, never
looks past the caps, and checks every cap before it parses what it found.
Caps (defaults): request line and each header line 8192 bytes, 128 header
lines, 65536 bytes for the whole head.

Grammar accepted (RFC 9112 sections 2 to 5, strict where the RFC lets a
server choose):

* lines end with CRLF; a bare LF or a bare CR is rejected (400);
* ``request-line = method SP request-target SP HTTP-version``, single spaces;
* ``HTTP-version = "HTTP/" DIGIT "." DIGIT``; 1.1 and higher 1.x accepted,
  1.0 and 2+ answered 505;
* ``field-line = field-name ":" OWS field-value OWS``; obs-fold, a space
  before the colon, a name that is not a token, or a CTL (NUL, CR, LF...) in
  a value is rejected (400);
* exactly one ``Host``; no body (``Transfer-Encoding``, ``Content-Length`` other
  than 0) on an upgrade request (400).

Not thread-safe: one parser per connection.
"""

from __future__ import annotations

import http
from dataclasses import dataclass
from typing import NoReturn

from ..exceptions import InvalidMessage, InvalidState, SecurityError
from ..speedups import parse_head
from .headers import (
    FORBIDDEN_VALUE_BYTES,
    TCHAR_BYTES,
    Headers,
    HeadersLike,
    is_field_value,
)

__all__ = ["Request", "Response", "RequestParser", "BodyLike"]

MAX_LINE = 8192
MAX_HEADERS = 128
MAX_HEAD = 65536

# request-target: visible ASCII only (RFC 3986 characters are a subset).
_TARGET_FORBIDDEN = bytes([*range(0x00, 0x21), *range(0x7F, 0x100)])

BodyLike = bytes | bytearray | memoryview | str

# Header names and values of a usual handshake request, decoded once: the
# fast path of RequestParser takes them from here (shared strings, smaller
# idle connections). Static tables: what clients send never adds to them.
_KNOWN_NAMES: dict[bytes, tuple[str, str]] = {
    name.encode(): (name, name.lower())
    for name in (
        "Host",
        "Upgrade",
        "Connection",
        "Origin",
        "User-Agent",
        "Pragma",
        "Cache-Control",
        "Accept-Encoding",
        "Accept-Language",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Protocol",
        "host",
        "upgrade",
        "connection",
        "origin",
        "user-agent",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    )
}
_KNOWN_VALUES: dict[bytes, str] = {
    b" " + value.encode(): value
    for value in (
        "websocket",
        "Upgrade",
        "upgrade",
        "keep-alive, Upgrade",
        "13",
        "no-cache",
        "permessage-deflate; client_max_window_bits",
        "gzip, deflate, br",
    )
}


@dataclass
class Request:
    """A parsed handshake request.

    ``path`` is the request-target as sent (path and query, not decoded);
    ``method`` and ``protocol`` (``"HTTP/1.1"``) are kept for the checks and
    for ``process_request`` hooks.
    """

    path: str
    headers: Headers
    method: str = "GET"
    protocol: str = "HTTP/1.1"

    def serialize(self) -> bytes:
        """The request head as bytes (client side and tests); validates headers."""
        line = f"{self.method} {self.path} {self.protocol}\r\n".encode("ascii")
        return line + self.headers.serialize()


def _as_body(body: BodyLike) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


class Response:
    """An HTTP response: the 101 of an accepted handshake or an error.

    Constructed either way::

        Response(403, "Forbidden", b"Invalid API key")            # body 3rd
        Response(403, "Forbidden", b"...", headers={"X-A": "1"})
        Response(403, "Forbidden", Headers(...), b"...")          # websockets order

    A ``str`` body is UTF-8 encoded. An empty ``reason_phrase`` is filled in
    from :class:`http.HTTPStatus` when the status is known. ``headers`` is
    always a :class:`Headers` (a copy of what was given).

    Raises ``TypeError`` when the headers or the body are given twice.
    """

    __slots__ = ("status_code", "reason_phrase", "headers", "body")

    status_code: int
    reason_phrase: str
    headers: Headers
    body: bytes

    def __init__(
        self,
        status_code: int,
        reason_phrase: str = "",
        body_or_headers: BodyLike | HeadersLike | None = None,
        body: BodyLike | None = None,
        *,
        headers: HeadersLike | None = None,
    ) -> None:
        if body_or_headers is None:
            pass
        elif isinstance(body_or_headers, (bytes, bytearray, memoryview, str)):
            if body is not None:
                raise TypeError("Response() got the body twice")
            body = body_or_headers
        else:
            if headers is not None:
                raise TypeError("Response() got the headers twice")
            headers = body_or_headers
        self.status_code = int(status_code)
        if not reason_phrase:
            try:
                reason_phrase = http.HTTPStatus(self.status_code).phrase
            except ValueError:
                reason_phrase = ""
        self.reason_phrase = reason_phrase
        self.headers = Headers(headers) if headers is not None else Headers()
        self.body = _as_body(body) if body is not None else b""

    @classmethod
    def _make(cls, status_code: int, reason_phrase: str, headers: Headers) -> Response:
        """A response without a body holding ``headers`` itself (not a copy)."""
        response = cls.__new__(cls)
        response.status_code = status_code
        response.reason_phrase = reason_phrase
        response.headers = headers
        response.body = b""
        return response

    def __repr__(self) -> str:
        return (
            f"Response({self.status_code!r}, {self.reason_phrase!r}, "
            f"{self.headers!r}, {self.body!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status_code, self.reason_phrase, self.headers, self.body) == (
            other.status_code,
            other.reason_phrase,
            other.headers,
            other.body,
        )

    __hash__ = None  # type: ignore[assignment]

    def serialize(self) -> bytes:
        """Status line, headers, blank line and body, ready to write.

        ``Content-Length`` is added (not stored in :attr:`headers`) for every
        status but 1xx and 204: ``len(body)``, so ``0`` when there is no body.
        Raises ``ValueError`` on a status outside 100-999, a reason phrase or
        header that could inject a line (CR, LF, NUL, other CTLs), a body on
        a 1xx / 204 response, a ``Content-Length`` header that does not match
        the body, or a ``Transfer-Encoding`` header (bodies are sent whole).
        """
        code = self.status_code
        reason = self.reason_phrase
        if code == 101 and reason == "Switching Protocols" and not self.body:
            # The usual 101: a constant status line; only the headers to check.
            headers = self.headers
            if "transfer-encoding" not in headers._dict and "content-length" not in headers._dict:
                return _STATUS_LINE_101 + headers.serialize()
        if not 100 <= code <= 999:
            raise ValueError(f"invalid HTTP status code: {code}")
        # Printable ASCII is a valid reason phrase; anything else gets the full check.
        printable = type(reason) is str and reason.isascii() and reason.isprintable()
        if not printable and not is_field_value(reason):
            raise ValueError(f"invalid HTTP reason phrase: {reason!r}")
        headers = self.headers
        if "transfer-encoding" in headers._dict:
            raise ValueError("Transfer-Encoding is not supported in a handshake response")
        # RFC 9110 section 8.6: "A server MUST NOT send a Content-Length header
        # field in any response with a status code of 1xx (Informational) or
        # 204 (No Content)."
        if code < 200 or code == 204:
            if self.body:
                raise ValueError(f"a {code} response cannot have a body")
            if "content-length" in headers._dict:
                raise ValueError(f"a {code} response cannot have Content-Length")
        else:
            lengths = headers.get_all("Content-Length")
            if not lengths:
                headers = headers.copy()
                headers["Content-Length"] = str(len(self.body))
            elif lengths != [str(len(self.body))]:
                raise ValueError(
                    f"Content-Length {lengths} does not match a {len(self.body)}-byte body"
                )
        status_line = f"HTTP/1.1 {code} {reason}\r\n".encode("iso-8859-1")
        return status_line + headers.serialize() + self.body


_STATUS_LINE_101 = b"HTTP/1.1 101 Switching Protocols\r\n"


class RequestParser:
    """Incremental parser of one handshake request head.

    :meth:`feed` takes bytes in any split (even one at a time) and returns the
    :class:`Request` once the blank line ending the head has arrived, ``None``
    before. Bytes after the head (frames a client sent early) are in
    :attr:`remaining`. Work is linear in the bytes fed: :attr:`bytes_scanned`
    counts the bytes examined while looking for line ends; it never exceeds
    the head length.

    Raises, from :meth:`feed`:

    * :class:`~shardws.exceptions.SecurityError` 414 when the request line
      exceeds ``max_line``; 431 when a header line exceeds ``max_line``, there
      are more than ``max_headers`` header lines, or the head (terminating
      blank line included) exceeds ``max_head`` bytes;
    * :class:`~shardws.exceptions.InvalidMessage` 400 on malformed HTTP/1.1,
      505 on an HTTP version other than 1.x with x >= 1;
    * :class:`~shardws.exceptions.InvalidState` when fed after it returned a
      request or raised.
    """

    __slots__ = (
        "max_line",
        "max_headers",
        "max_head",
        "remaining",
        "bytes_scanned",
        "_buf",
        "_line_start",
        "_scan",
        "_request_line",
        "_headers",
        "_header_count",
        "_done",
    )

    _headers: Headers  # set with the request line

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE,
        max_headers: int = MAX_HEADERS,
        max_head: int = MAX_HEAD,
    ) -> None:
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_head = max_head
        self.remaining = b""
        self.bytes_scanned = 0
        self._buf = bytearray()
        self._line_start = 0  # where the current line begins in _buf
        self._scan = 0  # where the search for LF resumes: every byte before is known not LF
        self._request_line: tuple[str, str, str] | None = None
        self._header_count = 0
        self._done = False

    def feed(self, data: bytes | bytearray | memoryview) -> Request | None:
        """Add bytes; return the request when its head is complete, else ``None``."""
        if self._done:
            raise InvalidState("the request parser is finished")
        if self._scan == 0 and not self._buf:
            # The usual case: the whole head arrives in the first read.
            request = self._parse_whole(data)
            if request is not None:
                return request
        self._buf += data
        try:
            return self._parse()
        except BaseException:
            self._done = True
            self._buf = bytearray()
            raise

    def _parse_whole(self, data: bytes | bytearray | memoryview) -> Request | None:
        """One pass over a complete head in ``data``: the fast path of :meth:`feed`.

        It only accepts: it returns ``None`` when the head is incomplete or
        anything in it is unusual (a cap reached, a bare CR or LF, a CTL, a
        header name that is not a token...), and :meth:`_parse` then goes
        over the same bytes line by line and gives the exact answer, errors
        included. It looks at most ``max_head`` bytes once (linear work).
        """
        if type(data) is not bytes:
            data = bytes(data)
        # The head parsed in one call (C, or its pure twin): None when
        # incomplete or unusual, an HTTP version other than 1.1 included.
        head = parse_head(
            data, self.max_head, self.max_headers, self.max_line, _KNOWN_NAMES, _KNOWN_VALUES
        )
        if head is None:
            return None
        end, request_line, pairs, index = head
        self.bytes_scanned = end + 4
        self._request_line = request_line
        self._headers = Headers._from_index(pairs, index)
        self._header_count = len(pairs)
        self._done = True
        return self._request(data[end + 4 :])

    def _parse(self) -> Request | None:
        buf = self._buf
        while True:
            start = self._line_start
            # Look for the LF no further than the caps allow: a line holds at
            # most max_line bytes then CRLF; the head at most max_head bytes.
            limit = min(len(buf), start + self.max_line + 2, self.max_head)
            end = buf.find(b"\n", self._scan, limit)
            if end < 0:
                self.bytes_scanned += limit - self._scan
                self._scan = limit
                if limit == len(buf):
                    return None  # need more bytes
                if limit == self.max_head:
                    raise SecurityError(f"request head exceeds {self.max_head} bytes", 431)
                self._line_too_long()
            self.bytes_scanned += end + 1 - self._scan
            self._scan = self._line_start = end + 1
            # RFC 9112 section 2.2: "a recipient MAY recognize a single LF as
            # a line terminator": we do not, and reject the message.
            if end == start or buf[end - 1] != 0x0D:
                raise InvalidMessage("line not terminated by CRLF")
            # The search limit guarantees len(line) <= max_line here.
            line = bytes(buf[start : end - 1])
            # RFC 9112 section 2.2: "A sender MUST NOT generate a bare CR
            # [...] A recipient of such a bare CR MUST consider that element
            # to be invalid": a CR left inside the line is a bare CR.
            if b"\r" in line:
                raise InvalidMessage("bare CR in the request head")
            if self._request_line is None:
                self._request_line = self._parse_request_line(line)
                self._headers = Headers()
            elif line:
                self._parse_header_line(line)
            else:
                return self._finish(end + 1)

    def _line_too_long(self) -> NoReturn:
        if self._request_line is None:
            # RFC 9112 section 3: "A server that receives a request-target
            # longer than any URI it wishes to parse MUST respond with a 414
            # (URI Too Long) status code".
            raise SecurityError(f"request line exceeds {self.max_line} bytes", 414)
        raise SecurityError(f"header line exceeds {self.max_line} bytes", 431)

    @staticmethod
    def _parse_request_line(line: bytes) -> tuple[str, str, str]:
        parts = line.split(b" ")
        if len(parts) != 3 or not all(parts):
            raise InvalidMessage("invalid request line")
        method, target, version = parts
        if method.translate(None, TCHAR_BYTES):
            raise InvalidMessage("invalid request method")
        if target.translate(None, _TARGET_FORBIDDEN) != target or not (
            target.startswith(b"/") or b"://" in target
        ):
            raise InvalidMessage("invalid request target")
        if version == b"HTTP/1.1":
            return method.decode("ascii"), target.decode("ascii"), "HTTP/1.1"
        # RFC 9112 section 2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT
        if (
            len(version) != 8
            or not version.startswith(b"HTTP/")
            or version[6] != 0x2E
            or not (version[5:6].isdigit() and version[7:8].isdigit())
        ):
            raise InvalidMessage("invalid HTTP version")
        # RFC 6455 section 4.1: "The method of the request MUST be GET, and the
        # HTTP version MUST be at least 1.1."
        if version[5] != 0x31 or version[7] == 0x30:
            raise InvalidMessage(f"unsupported HTTP version: {version.decode()}", 505)
        return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")

    def _parse_header_line(self, line: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers:
            raise SecurityError(f"more than {self.max_headers} headers", 431)
        # RFC 9112 section 5.2: "A server that receives an obs-fold in a
        # request message [...] MUST either reject the message by sending a
        # 400 (Bad Request) [...]"; section 2.2: whitespace before the first
        # field line is rejected the same way.
        if line[0] in b" \t":
            raise InvalidMessage("obs-fold or leading whitespace in a header line")
        name, colon, value = line.partition(b":")
        # RFC 9112 section 5.1: "A server MUST reject, with a response status
        # code of 400 (Bad Request), any received request message that
        # contains whitespace between a header field name and colon."
        if not colon or not name or name.translate(None, TCHAR_BYTES):
            raise InvalidMessage("invalid header name")
        value = value.strip(b" \t")
        # RFC 9110 section 5.5: "a recipient of CR, LF, or NUL within a field
        # value MUST either reject the message or replace each of those
        # characters with SP": we reject them, and every other CTL.
        if len(value.translate(None, FORBIDDEN_VALUE_BYTES)) != len(value):
            raise InvalidMessage("invalid character in a header value")
        self._headers[name.decode("ascii")] = value.decode("iso-8859-1")

    def _finish(self, head_end: int) -> Request:
        remaining = bytes(self._buf[head_end:])
        self._buf = bytearray()
        self._done = True
        return self._request(remaining)

    def _request(self, remaining: bytes) -> Request:
        """The checks on the whole head, then the request; ``remaining`` follows the head."""
        headers = self._headers
        index = headers._dict  # lowercase name -> values
        # RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request)
        # status code to any HTTP/1.1 request message that lacks a Host header
        # field and to any request message that contains more than one Host
        # header field line".
        if len(index.get("host", ())) != 1:
            raise InvalidMessage("missing or repeated Host header")
        # An upgrade request carries no body: the bytes after the head are
        # WebSocket frames. A body would be misread as frames.
        if "transfer-encoding" in index:
            raise InvalidMessage("Transfer-Encoding on an upgrade request")
        for length in index.get("content-length", ()):
            if not length or length.strip("0"):  # anything but a zero
                raise InvalidMessage("request body on an upgrade request")
        assert self._request_line is not None
        method, path, protocol = self._request_line
        self.remaining = remaining
        return Request(path, headers, method, protocol)

    @property
    def finished(self) -> bool:
        """True once :meth:`feed` returned a request or raised."""
        return self._done
