"""WebSocket frames (RFC 6455 section 5): opcodes, serializer, close payloads, parser.

Everything here is sans-I/O: :class:`FrameParser` is fed bytes and hands back
frames; :func:`serialize_frame` returns the bytes of one frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from shardws import speedups
from shardws.exceptions import LocalProtocolError, PayloadTooBig, RemoteProtocolError
from shardws.protocol.utf8 import decode as _decode_utf8

__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "DATA_OPCODES",
    "CTRL_OPCODES",
    "Close",
    "Frame",
    "FrameParser",
    "serialize_frame",
    "serialize_final_frame",
    "check_close_code",
    "parse_close",
    "serialize_close",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY})
CTRL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

# RFC 6455 section 5.5: "All control frames MUST have a payload length of 125
# bytes or less".
MAX_CONTROL_PAYLOAD = 125
# A close payload is a 2-byte code plus the reason.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

_pack_u16 = struct.Struct("!BBH").pack
_pack_u64 = struct.Struct("!BBQ").pack
_unpack_u16 = struct.Struct("!H").unpack_from
_unpack_u64 = struct.Struct("!Q").unpack_from
_pack_code = struct.Struct("!H").pack


# ------------------------------------------------------------------ close


CLOSE_CODE_EXPLANATIONS: dict[int, str] = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received [internal]",
    1006: "abnormal closure [internal]",
    1007: "invalid frame payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure [internal]",
}

# RFC 6455 section 7.4.1 and the IANA registry: the codes an endpoint may put
# on the wire. 1005, 1006 and 1015 "MUST NOT be set as a status code in a
# Close control frame by an endpoint"; 1004 is reserved; 3000-4999 are for
# libraries, frameworks and applications.
_VALID_WIRE_CODES = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def check_close_code(code: int) -> bool:
    """Return True if ``code`` may appear in a close frame on the wire."""
    return code in _VALID_WIRE_CODES or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class Close:
    """The content of a close frame: ``code`` (1005 when the payload was empty) and ``reason``."""

    code: int
    reason: str

    def __str__(self) -> str:
        if 3000 <= self.code < 4000:
            explanation = "registered"
        elif 4000 <= self.code < 5000:
            explanation = "private use"
        else:
            explanation = CLOSE_CODE_EXPLANATIONS.get(self.code, "unknown")
        text = f"{self.code} ({explanation})"
        return f"{text} {self.reason}" if self.reason else text


#: ``Close(code, "")`` for every registered code allowed on the wire (frozen: shared).
_BARE_CLOSES = {code: Close(code, "") for code in _VALID_WIRE_CODES}


def parse_close(payload: bytes | bytearray) -> Close:
    """Parse a close frame's payload.

    Raises :class:`RemoteProtocolError` (1002) for a 1-byte payload or a code
    not allowed on the wire, :class:`InvalidUTF8` (1007) for a reason that is
    not UTF-8.
    """
    n = len(payload)
    if n == 0:
        # RFC 6455 section 7.1.5: "If this Close control frame contains no
        # status code, _The WebSocket Connection Close Code_ is considered to
        # be 1005."
        return Close(1005, "")
    if n == 1:
        # Section 5.5.1: "If there is a body, the first two bytes of the body
        # MUST be a 2-byte unsigned integer".
        raise RemoteProtocolError("close frame too short")
    code = (payload[0] << 8) | payload[1]
    if n == 2:
        # The usual close frame: a registered code, no reason (shared objects).
        close = _BARE_CLOSES.get(code)
        if close is not None:
            return close
    if not check_close_code(code):
        raise RemoteProtocolError(f"invalid close code {code}")
    # Section 5.5.1: "the data MAY contain ... a reason ... The data is not
    # guaranteed to be human readable" but it is UTF-8: section 8.1 applies.
    return Close(code, _decode_utf8(payload[2:]))


def serialize_close(code: int, reason: str) -> bytes:
    """Return the payload of a close frame.

    Raises :class:`LocalProtocolError` when ``code`` may not be sent or the
    UTF-8 ``reason`` exceeds 123 bytes.
    """
    if not check_close_code(code):
        raise LocalProtocolError(f"invalid close code {code}")
    data = reason.encode("utf-8")
    if len(data) > MAX_CLOSE_REASON:
        raise LocalProtocolError(f"close reason exceeds {MAX_CLOSE_REASON} bytes")
    return _pack_code(code) + data


# ------------------------------------------------------------- serializer

# The 2-byte header of every unmasked final frame under 126 bytes, by opcode
# then payload length: the common case of a server's message costs one
# lookup and one concatenation.
_FINAL_HEADERS = tuple(tuple(bytes((0x80 | op, n)) for n in range(126)) for op in range(16))


def serialize_final_frame(opcode: int, payload: bytes | bytearray | memoryview) -> bytes:
    """``serialize_frame(opcode, payload)``: an unmasked frame with FIN set and RSV1 clear.

    The fast path of a server sending a whole uncompressed message; the
    bytes are exactly those of :func:`serialize_frame`.
    """
    n = len(payload)
    if n < 126:  # the common case, without a call
        return _FINAL_HEADERS[opcode][n] + payload
    return final_header(opcode, n) + payload


def final_header(opcode: int, n: int) -> bytes:
    """The header of :func:`serialize_final_frame` for an ``n``-byte payload."""
    # Section 5.2: "the minimal number of bytes MUST be used to encode the length".
    if n < 126:
        return _FINAL_HEADERS[opcode][n]
    if n < 65536:
        return _pack_u16(0x80 | opcode, 126, n)
    return _pack_u64(0x80 | opcode, 127, n)


def serialize_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """Return one frame as a single ``bytes`` object.

    ``mask_key`` (4 bytes) masks the payload: a client "MUST mask all frames
    that it sends to the server" and a server "MUST NOT mask any frames that it
    sends to the client" (RFC 6455 section 5.1). The caller checks the rules
    on control frames (length, no fragmentation); this function only encodes.
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if mask_key is None:
        # Section 5.2: "the minimal number of bytes MUST be used to encode the length".
        if n < 126:
            return bytes((b0, n)) + payload
        if n < 65536:
            return _pack_u16(b0, 126, n) + payload
        return _pack_u64(b0, 127, n) + payload
    if n < 126:
        header = bytes((b0, 0x80 | n))
    elif n < 65536:
        header = _pack_u16(b0, 0xFE, n)
    else:
        header = _pack_u64(b0, 0xFF, n)
    return b"".join((header, mask_key, speedups.apply_mask(payload, mask_key)))


# ----------------------------------------------------------------- parser


@dataclass(slots=True)
class Frame:
    """A parsed frame: payload already unmasked."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False


_KNOWN_OPCODES = DATA_OPCODES | CTRL_OPCODES


def _first_byte_errors(rsv1_allowed: bool) -> tuple[str | None, ...]:
    """Map each possible first header byte to the protocol error it carries, or None."""
    table: list[str | None] = []
    for b0 in range(256):
        opcode = b0 & 0x0F
        error: str | None = None
        if opcode not in _KNOWN_OPCODES:
            # Section 5.2: "If an unknown opcode is received, the receiving
            # endpoint MUST _Fail the WebSocket Connection_."
            error = f"invalid opcode {opcode:#x}"
        elif b0 & 0x30:
            # Section 5.2: RSV1-3 "MUST be 0 unless an extension is negotiated
            # that defines meanings for non-zero values."
            error = "reserved bits RSV2/RSV3 set"
        elif b0 & 0x40 and not rsv1_allowed:
            error = "reserved bit RSV1 set without a negotiated extension"
        elif b0 & 0x40 and opcode not in (OP_TEXT, OP_BINARY):
            # RFC 7692 section 6: "An endpoint MUST NOT set the "Per-Message
            # Compressed" bit of control frames and non-first fragments of a
            # data message." (RFC 7692 section 6.1 applies it to receivers.)
            error = "RSV1 set on a continuation or control frame"
        elif opcode >= OP_CLOSE and not b0 & 0x80:
            # Section 5.5: control frames "MUST NOT be fragmented".
            error = "fragmented control frame"
        table.append(error)
    return tuple(table)


_ERRORS_NO_RSV1 = _first_byte_errors(False)
_ERRORS_RSV1 = _first_byte_errors(True)


class FrameParser:
    """Incremental frame parser over a growing buffer.

    Bytes may be fed in any split, even one at a time; the frames returned are
    the same. ``require_mask`` is True on a server (client frames must be
    masked) and False on a client (server frames must not be). ``max_size``
    bounds the payload of each *data* frame (control frames are bounded by
    125 bytes); the owner may lower it while a message is being assembled.
    A new ``max_size`` applies to the frames not decoded yet: decoding runs
    ahead (in batches) at most up to the next frame with FIN clear.
    ``rsv1_allowed`` is True when permessage-deflate was negotiated.

    Not thread-safe.
    """

    __slots__ = (
        "max_size",
        "_buf",
        "_pos",
        "_errors",
        "_mask_bit",
        "_rsv1_allowed",
        "_ready",
        "_next",
        "_base",
    )

    def __init__(
        self, *, require_mask: bool, max_size: int | None, rsv1_allowed: bool = False
    ) -> None:
        self.max_size = max_size
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._errors = _ERRORS_RSV1 if rsv1_allowed else _ERRORS_NO_RSV1
        self._mask_bit = 0x80 if require_mask else 0
        self._rsv1_allowed = rsv1_allowed
        # Frames decoded by speedups.scan_frames, handed out one by one.
        self._ready: list[tuple[int, bytes, bool, bool]] = []
        self._next = 0
        # Stream offset of self._buf[0]: bytes fed and dropped before it.
        self._base = 0

    @property
    def buffered(self) -> int:
        """Number of bytes fed but not consumed yet."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer."""
        buf = self._buf
        pos = self._pos
        self._base += pos
        if pos == len(buf):
            # Nothing pending: keep the caller's bytes as they are (no copy).
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytes:
            grown = bytearray(memoryview(buf)[pos:])
            grown += data
            self._buf = grown
            self._pos = 0
        else:
            assert isinstance(buf, bytearray)
            # Compact once per feed, never per frame; deleting a prefix of a
            # bytearray only moves its start in CPython.
            del buf[:pos]
            self._pos = 0
            buf += data

    def feed_messages(self, data: bytes) -> list[str | bytes]:
        """Feed ``data``; return the whole messages it starts with (the fast path).

        When nothing is buffered, the run of complete frames at the start of
        ``data`` that are each a whole uncompressed text or binary message
        (valid UTF-8 for text, within ``max_size``) is decoded at once into
        ``str`` / ``bytes`` (``speedups.scan_messages``); the rest is fed as
        :meth:`feed` would, for :meth:`next_frame` to decode. Otherwise this
        is :meth:`feed` and returns ``[]``. Only for a receiver that is not
        assembling a fragmented message: each message taken here is whole.
        """
        pos = self._pos
        if pos != len(self._buf) or type(data) is not bytes or self._next < len(self._ready):
            self.feed(data)
            return []
        messages, end = speedups.scan_messages(data, 0, self._mask_bit != 0, self.max_size)
        self._base += pos
        self._buf = data
        self._pos = end
        return messages

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or None when more bytes are needed.

        Raises :class:`RemoteProtocolError` for a bad frame header and
        :class:`PayloadTooBig` as soon as a data frame's header declares more
        than ``max_size`` bytes, before its payload is buffered.
        """
        parsed = self.next_frame_tuple()
        if parsed is None:
            return None
        return Frame(*parsed)

    def next_frame_tuple(self) -> tuple[int, bytes, bool, bool] | None:
        """Like :meth:`next_frame`, as ``(opcode, payload, fin, rsv1)`` (the fast path)."""
        ready = self._ready
        i = self._next
        if i < len(ready):
            self._next = i + 1
            return ready[i]
        # One call decodes the run of complete frames that pass every check
        # of _decode_one (C speedups: about 3x faster on small frames). It
        # stops after a frame with FIN clear, where the owner may lower
        # max_size, and before any frame that _decode_one must judge.
        ready, pos = speedups.scan_frames(
            self._buf, self._pos, self._mask_bit != 0, self.max_size, self._rsv1_allowed
        )
        self._ready = ready
        if ready:
            self._pos = pos
            self._next = 1
            return ready[0]
        self._next = 0
        return self._decode_one()

    def _decode_one(self) -> tuple[int, bytes, bool, bool] | None:
        """Decode the next frame by itself, raising for any broken rule."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        error = self._errors[b0]
        if error is not None:
            raise RemoteProtocolError(error)
        if b1 & 0x80 != self._mask_bit:
            # Section 5.1: "The server MUST close the connection upon
            # receiving a frame that is not masked." / "A client MUST close a
            # connection if it detects a masked frame."
            raise RemoteProtocolError("incorrect masking" if b1 & 0x80 else "frame not masked")
        length = b1 & 0x7F
        start = pos + 2
        if length > 125:
            if b0 & 0x08:
                # Section 5.5: "All control frames MUST have a payload length
                # of 125 bytes or less".
                raise RemoteProtocolError("control frame too long")
            if length == 126:
                if end - pos < 4:
                    return None
                length = _unpack_u16(buf, start)[0]
                start += 2
            else:
                if end - pos < 10:
                    return None
                length = _unpack_u64(buf, start)[0]
                start += 8
                # Section 5.2: "the most significant bit MUST be 0".
                if length >> 63:
                    raise RemoteProtocolError("payload length with the most significant bit set")
        max_size = self.max_size
        if max_size is not None and length > max_size and not b0 & 0x08:
            raise PayloadTooBig(f"frame of {length} bytes exceeds limit of {max_size} bytes")
        if self._mask_bit:
            stop = start + 4 + length
            if stop > end:
                return None
            if length < 2048:
                payload = speedups.apply_mask(buf[start + 4 : stop], buf[start : start + 4])
            else:  # no intermediate copy of a large payload
                with memoryview(buf) as view:
                    payload = speedups.apply_mask(view[start + 4 : stop], buf[start : start + 4])
        else:
            stop = start + length
            if stop > end:
                return None
            if type(buf) is bytes:
                payload = buf[start:stop]
            else:
                payload = bytes(memoryview(buf)[start:stop])
        self._pos = stop
        return b0 & 0x0F, payload, b0 > 0x7F, b0 & 0x40 != 0

    def _partial_header(self) -> tuple[int, int, int] | None:
        """``(first byte, payload start, payload length available)`` of the
        frame at the read offset, None while its header is incomplete."""
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < 2:
            return None
        length = buf[pos + 1] & 0x7F
        start = pos + 2 + (2 if length == 126 else 8 if length == 127 else 0)
        if self._mask_bit:
            start += 4
        if start > end:
            return None
        return buf[pos], start, end - start

    def partial_frame(self) -> tuple[int, int, bool, int] | None:
        """Describe the incomplete frame left once :meth:`next_frame` returned None.

        Returns ``(frame_id, opcode, rsv1, available)``: ``frame_id`` is the
        frame's offset in the byte stream (the same on every call until the
        frame completes), ``available`` the payload bytes received so far.
        None while the header itself is incomplete. Lets the owner validate
        a text payload before it is complete (fail fast).
        """
        header = self._partial_header()
        if header is None:
            return None
        b0, _, available = header
        return self._base + self._pos, b0 & 0x0F, b0 & 0x40 != 0, available

    def partial_payload(self, skip: int) -> bytes:
        """The unmasked payload bytes received so far of the incomplete frame, after the first ``skip``."""
        header = self._partial_header()
        assert header is not None
        _, start, _ = header
        buf = self._buf
        data = buf[start + skip :]
        if not self._mask_bit:
            return bytes(data)
        mask = buf[start - 4 : start]
        # Payload octet i is masked with mask octet i % 4 (section 5.3).
        shift = skip % 4
        return speedups.apply_mask(data, mask[shift:] + mask[:shift])
