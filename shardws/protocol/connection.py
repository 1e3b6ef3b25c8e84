"""The sans-I/O WebSocket connection: bytes in, events out; calls in, bytes out.

:class:`Connection` assembles messages from frames, answers pings, runs the
closing handshake (RFC 6455 section 7) and fails the connection when the peer
breaks the protocol. Its states move only through :data:`TRANSITIONS`.

Events returned by :meth:`Connection.receive_data`:

* ``str`` -- a complete text message (valid UTF-8);
* ``bytes`` -- a complete binary message;
* :class:`Ping` -- a ping; its pong is already queued in :meth:`Connection.data_to_send`;
* :class:`Pong` -- a pong;
* :class:`~shardws.protocol.frames.Close` -- the peer's close frame, already
  answered if the connection was OPEN.

A protocol error right after complete messages: when one
:meth:`Connection.receive_data` call parses message events and then a frame
that breaks the protocol, it returns those messages and holds the failure
back (:attr:`Connection.pending_failure`; parsing stops, later data is
ignored) so that the application can answer them before the close frame goes
out. The I/O layer then calls :meth:`Connection.fail_pending` -- once the
application has consumed the messages, or after a bounded delay; without
messages before the error the connection fails at once.

Ping floods: each ping queues a pong, but at most ``max_pending_pongs`` pongs
wait in the outgoing list between two calls of :meth:`Connection.data_to_send`;
past that, a new pong replaces the newest waiting one (RFC 6455 section
5.5.3 lets an endpoint answer only the most recent ping). Memory for pongs is
thus bounded per read; the I/O layer bounds the rest by pausing reads while
its write buffer is full.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from shardws.exceptions import (
    InvalidState,
    InvalidUTF8,
    LocalProtocolError,
    PayloadTooBig,
    RemoteProtocolError,
)
from shardws.protocol.frames import (
    MAX_CLOSE_REASON,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    FrameParser,
    final_header,
    parse_close,
    serialize_close,
    serialize_final_frame,
    serialize_frame,
)
from shardws.protocol.utf8 import IncrementalUTF8Decoder

__all__ = [
    "Side",
    "State",
    "Ping",
    "Pong",
    "Event",
    "MessageExtension",
    "Connection",
    "TRANSITIONS",
]


class Side(enum.Enum):
    """Which end of the connection this is."""

    SERVER = 0
    CLIENT = 1


class State(enum.IntEnum):
    """Connection states (RFC 6455 section 4 and 7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Module constants: ``State.OPEN`` is an attribute lookup through the enum
# class, ``_OPEN`` a global (about 7x faster on the hot paths).
_CONNECTING, _OPEN, _CLOSING, _CLOSED = State.CONNECTING, State.OPEN, State.CLOSING, State.CLOSED


class _Ev(enum.Enum):
    """What moves the state machine."""

    OPEN = "open"  # the opening handshake succeeded
    SEND_CLOSE = "send_close"  # we sent a close frame first
    RECV_CLOSE = "recv_close"  # the peer's close frame arrived
    FAIL = "fail"  # we fail the connection (RFC 6455 section 7.1.7)
    EOF = "eof"  # the transport is closed

    # Members are singletons compared by identity: hash them by identity too
    # (C), not by name (Enum.__hash__, Python): TRANSITIONS is looked up on
    # every state change.
    __hash__ = object.__hash__


#: ``{(state, event): next state}``; a pair not in the table is not allowed.
TRANSITIONS: dict[tuple[State, _Ev], State] = {
    (_CONNECTING, _Ev.OPEN): _OPEN,
    (_CONNECTING, _Ev.EOF): _CLOSED,
    (_OPEN, _Ev.SEND_CLOSE): _CLOSING,
    (_OPEN, _Ev.RECV_CLOSE): _CLOSING,  # our answering close is queued
    (_OPEN, _Ev.FAIL): _CLOSING,
    (_OPEN, _Ev.EOF): _CLOSED,
    (_CLOSING, _Ev.RECV_CLOSE): _CLOSING,  # handshake done; waits for EOF
    (_CLOSING, _Ev.FAIL): _CLOSING,
    (_CLOSING, _Ev.EOF): _CLOSED,
    (_CLOSED, _Ev.EOF): _CLOSED,
}


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping received from the peer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong received from the peer."""

    data: bytes


Event: TypeAlias = str | bytes | Ping | Pong | Close

#: A whole uncompressed message of this many bytes or more (``bytes``) is
#: queued as its header and the payload object itself, which the transport
#: writes with one writev: no copy of the payload into a frame.
SPLIT_PAYLOAD_AT = 4096


class MessageExtension(Protocol):
    """What :class:`Connection` needs from a message extension (permessage-deflate)."""

    def decompress(self, data: bytes, fin: bool, max_length: int | None) -> bytes: ...

    def compress(self, data: bytes | bytearray | memoryview, fin: bool = True) -> bytes: ...

    @property
    def share_key(self) -> object: ...


def _random_mask_key() -> bytes:
    # RFC 6455 section 5.3: "The masking key is a 32-bit value chosen at
    # random by the client ... MUST be derived from a strong source of entropy".
    return secrets.token_bytes(4)


#: The initial value of ``Connection._partial_utf8``, never used to decode.
_NO_DECODER = IncrementalUTF8Decoder()


def _flat(view: memoryview) -> memoryview | bytes:
    """A memoryview whose len() is its size in bytes: frames count bytes, not items."""
    if view.itemsize == 1 and view.ndim == 1 and view.c_contiguous:
        return view
    return view.tobytes()


def _truncate_reason(reason: str) -> str:
    """``reason`` cut to fit in a close frame (123 UTF-8 bytes)."""
    data = reason.encode("utf-8")
    if len(data) <= MAX_CLOSE_REASON:
        return reason
    return data[:MAX_CLOSE_REASON].decode("utf-8", "ignore")


class Connection:
    """One WebSocket connection, sans I/O.

    Feed bytes with :meth:`receive_data` and :meth:`receive_eof`; call the
    ``send_*`` methods; write out what :meth:`data_to_send` returns; close
    the transport once :meth:`close_transport_now` is True.

    ``max_size`` bounds each message received (after decompression; None:
    no limit). ``extensions`` holds at most one negotiated message extension
    (permessage-deflate). ``mask_key_factory`` returns the 4-byte masking key
    of each frame a client sends. Not thread-safe.
    """

    __slots__ = (
        "state",
        "frame_share_key",
        "_plain",
        "_send_fragmented",
        "_out",
        "_parser",
        "_discard",
        "side",
        "close_rcvd",
        "close_sent",
        "close_rcvd_then_sent",
        "failure",
        "pending_failure",
        "_max_size",
        "_ext",
        "_mask_key_factory",
        "_max_pending_pongs",
        "_pending_pongs",
        "_last_pong",
        "_close_transport",
        "_msg_opcode",
        "_msg_compressed",
        "_msg_parts",
        "_text_parts",
        "_msg_size",
        "_utf8",
        "_partial_id",
        "_partial_done",
        "_partial_utf8",
    )

    def __init__(
        self,
        side: Side = Side.SERVER,
        *,
        max_size: int | None = 2**20,
        extensions: Sequence[MessageExtension] = (),
        state: State = _OPEN,
        max_pending_pongs: int = 32,
        mask_key_factory: Callable[[], bytes] = _random_mask_key,
    ) -> None:
        if len(extensions) > 1:
            raise LocalProtocolError("at most one message extension is supported")
        if max_pending_pongs < 1:
            raise LocalProtocolError("max_pending_pongs must be at least 1")
        self.side = side
        self.state = state
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.failure: RemoteProtocolError | None = None
        self.pending_failure: RemoteProtocolError | None = None
        self._max_size = max_size
        self._ext = extensions[0] if extensions else None
        # RFC 6455 section 5.1: "The server MUST close the connection upon
        # receiving a frame that is not masked." / "A client MUST close a
        # connection if it detects a masked frame."
        self._parser = FrameParser(
            require_mask=side is Side.SERVER,
            max_size=max_size,
            rsv1_allowed=self._ext is not None,
        )
        self._mask_key_factory = mask_key_factory
        self._out: list[bytes] = []
        # 32 by default: peers that send a burst of pings (Autobahn case 2.10
        # sends 10 at once) still get every pong; a flood costs at most
        # 32 * 127 bytes of pongs per read.
        self._max_pending_pongs = max_pending_pongs
        self._pending_pongs = 0
        self._last_pong = 0
        self._discard = state is not _OPEN and state is not _CONNECTING
        self._close_transport = False
        self._msg_opcode = 0  # OP_TEXT / OP_BINARY while a fragmented message arrives
        self._msg_compressed = False
        self._msg_parts: list[bytes] = []  # binary fragments
        self._text_parts: list[str] = []  # text fragments, decoded
        self._msg_size = 0
        # Made on the first fragmented text message: most connections never
        # see one (a whole text frame is decoded in one call).
        self._utf8: IncrementalUTF8Decoder | None = None
        self._send_fragmented = False
        # Fail-fast validation of a text frame still arriving: which frame
        # (its stream offset), how many payload bytes were checked, and the
        # decoder that checked them.
        self._partial_id = -1
        self._partial_done = 0
        self._partial_utf8 = _NO_DECODER  # replaced before use: no frame has id -1
        # Connections whose keys are equal and not None send identical bytes
        # for the same message; None means plain (uncompressed, unmasked)
        # frames, shared by every such connection.
        self.frame_share_key: object | None
        # A server without compression frames a whole message by the fast path.
        self._plain = side is Side.SERVER and self._ext is None
        if side is Side.CLIENT:
            self.frame_share_key = object()  # a random mask per frame
        elif self._ext is None:
            self.frame_share_key = None
        else:
            share_key = self._ext.share_key
            self.frame_share_key = object() if share_key is None else share_key

    # ------------------------------------------------------------ state

    def _transition(self, event: _Ev) -> None:
        try:
            self.state = TRANSITIONS[self.state, event]
        except KeyError:
            raise InvalidState(f"cannot {event.value} in state {self.state.name}") from None

    def open(self) -> None:
        """The opening handshake succeeded: CONNECTING -> OPEN. Raises InvalidState otherwise."""
        self._transition(_Ev.OPEN)

    @property
    def close_code(self) -> int | None:
        """Code of the close frame received; 1006 if none arrived; None until CLOSED."""
        if self.state is not _CLOSED:
            return None
        return 1006 if self.close_rcvd is None else self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """Reason of the close frame received; "" if none arrived; None until CLOSED."""
        if self.state is not _CLOSED:
            return None
        return "" if self.close_rcvd is None else self.close_rcvd.reason

    def close_transport_now(self) -> bool:
        """True once the transport should be closed by this side.

        A server closes it when the closing handshake is done ("The
        underlying TCP connection, in most normal cases, SHOULD be closed
        first by the server", RFC 6455 section 7.1.1); either side closes it
        after failing the connection (section 7.1.7).
        """
        return self._close_transport

    # ---------------------------------------------------------- receive

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer; return the events they complete.

        Never raises for the peer's faults: the connection fails instead
        (:attr:`failure` is set, a close frame with the error's close code is
        queued, :meth:`close_transport_now` becomes True). If this call parsed
        complete messages before the fault, it returns them and only holds the
        failure back: :attr:`pending_failure` is set, the state stays OPEN (the
        application may still answer them) until :meth:`fail_pending`,
        :meth:`send_close` or :meth:`fail`. Data received after a close frame
        or a fault is ignored. Raises :class:`InvalidState` while CONNECTING.
        """
        if self._discard:
            return []
        if self.state is _CONNECTING:
            raise InvalidState("cannot receive frames before the opening handshake")
        parser = self._parser
        events: list[Event]
        if self._msg_opcode:
            parser.feed(data)
            events = []
        else:
            # Fast path: whole single-frame messages, decoded in one call.
            events = parser.feed_messages(data)  # type: ignore[assignment]
            if not parser.buffered:
                return events
        next_frame = parser.next_frame_tuple
        try:
            while True:
                frame = next_frame()
                if frame is None:
                    if parser.buffered:
                        self._check_partial_text()
                    break
                opcode, payload, fin, rsv1 = frame
                if opcode & 0x08:
                    if opcode == OP_PING:
                        self._answer_ping(payload)
                        events.append(Ping(payload))
                    elif opcode == OP_PONG:
                        events.append(Pong(payload))
                    else:
                        events.append(self._receive_close(payload))
                        break
                elif fin and not rsv1 and not self._msg_opcode:
                    # Fast path: an uncompressed message in a single frame; the
                    # parser already held it to max_size.
                    if opcode == OP_TEXT:
                        events.append(str(payload, "utf-8"))
                    elif opcode == OP_BINARY:
                        events.append(payload)
                    else:
                        raise RemoteProtocolError(
                            "continuation frame without a message to continue"
                        )
                else:
                    message = self._receive_fragment(opcode, payload, fin, rsv1)
                    if message is not None:
                        events.append(message)
        except UnicodeDecodeError as exc:
            self._fail_remote(InvalidUTF8(f"invalid UTF-8 at byte {exc.start}"), events)
        except RemoteProtocolError as exc:
            self._fail_remote(exc, events)
        return events

    def _receive_fragment(
        self, opcode: int, payload: bytes, fin: bool, rsv1: bool
    ) -> str | bytes | None:
        """Add one data frame to the message in progress; return the message at its end."""
        if opcode == OP_CONT:
            if not self._msg_opcode:
                # RFC 6455 section 5.4: a fragmented message is "a single
                # frame with the FIN bit clear and an opcode other than 0,
                # followed by zero or more frames with the FIN bit clear and
                # the opcode set to 0".
                raise RemoteProtocolError("continuation frame without a message to continue")
        elif self._msg_opcode:
            # Section 5.4: "the fragments of one message MUST NOT be
            # interleaved between the fragments of another message".
            raise RemoteProtocolError("new data frame while a fragmented message is in progress")
        else:
            self._msg_opcode = opcode
            self._msg_compressed = rsv1
            self._msg_size = 0
        max_size = self._max_size
        if self._msg_compressed:
            assert self._ext is not None  # the parser refuses RSV1 otherwise
            remaining = None if max_size is None else max_size - self._msg_size
            payload = self._ext.decompress(payload, fin, remaining)
        size = self._msg_size + len(payload)
        if max_size is not None and size > max_size:
            raise PayloadTooBig(f"message of over {max_size} bytes")
        text = self._msg_opcode == OP_TEXT
        if text:
            # Fail fast: each fragment is validated as it arrives.
            utf8 = self._utf8
            if utf8 is None:
                utf8 = self._utf8 = IncrementalUTF8Decoder()
            self._text_parts.append(utf8.decode(payload, fin))
        else:
            self._msg_parts.append(payload)
        if not fin:
            self._msg_size = size
            if max_size is not None and not self._msg_compressed:
                # The next frame's header is checked against what is left.
                self._parser.max_size = max_size - size
            return None
        self._parser.max_size = max_size
        self._msg_opcode = 0
        if text:
            message: str | bytes = "".join(self._text_parts)
            self._text_parts = []
        else:
            message = b"".join(self._msg_parts)
            self._msg_parts = []
        return message

    def _check_partial_text(self) -> None:
        """Validate the UTF-8 received so far of an incomplete text frame.

        RFC 6455 section 8.1 asks to fail "as soon as" invalid UTF-8 shows;
        a large text frame arriving over many reads is checked as it comes
        (Autobahn cases 6.4.3 and 6.4.4), not only when it is complete.
        Compressed messages are checked frame by frame, after inflating.
        """
        partial = self._parser.partial_frame()
        if partial is None:
            return
        frame_id, opcode, rsv1, available = partial
        if frame_id != self._partial_id:
            if opcode == OP_TEXT and not rsv1 and not self._msg_opcode:
                decoder = IncrementalUTF8Decoder()
            elif opcode == OP_CONT and self._msg_opcode == OP_TEXT and not self._msg_compressed:
                assert self._utf8 is not None  # made by the message's first frame
                decoder = self._utf8.copy()
            else:
                return
            self._partial_id = frame_id
            self._partial_done = 0
            self._partial_utf8 = decoder
        if available > self._partial_done:
            self._partial_utf8.decode(self._parser.partial_payload(self._partial_done))
            self._partial_done = available

    def _answer_ping(self, payload: bytes) -> None:
        # RFC 6455 section 5.5.2: "Upon receipt of a Ping frame, an endpoint
        # MUST send a Pong frame in response, unless it already received a
        # Close frame." Section 5.5.3: "A Pong frame sent in response to a
        # Ping frame must have identical "Application data"".
        pong = self._frame(OP_PONG, payload)
        if self._pending_pongs < self._max_pending_pongs:
            self._pending_pongs += 1
            self._last_pong = len(self._out)
            self._out.append(pong)
        else:
            # Section 5.5.3: "If an endpoint receives a Ping frame and has not
            # yet sent Pong frame(s) in response to previous Ping frame(s), the
            # endpoint MAY elect to send a Pong frame for only the most
            # recently processed Ping frame."
            self._out[self._last_pong] = pong

    def _receive_close(self, payload: bytes) -> Close:
        close = parse_close(payload)
        self.close_rcvd = close
        if self.state is _OPEN:
            # Section 5.5.1: "If an endpoint receives a Close frame and did
            # not previously send a Close frame, the endpoint MUST send a
            # Close frame in response. (When sending a Close frame in
            # response, the endpoint typically echos the status code it
            # received.)"
            if close.code == 1005:
                self._queue_close(1000, "")
            else:
                self._queue_close(close.code, "", None if close.reason else close)
            self.close_rcvd_then_sent = True
        else:
            self.close_rcvd_then_sent = False
        self._transition(_Ev.RECV_CLOSE)
        # Section 1.4: "after receiving a control frame indicating the
        # connection should be closed, a peer discards any further data
        # received."
        self._discard = True
        self._drop_message()
        if self.side is Side.SERVER:
            self._close_transport = True
        return close

    def receive_eof(self) -> None:
        """The transport is closed (EOF or connection lost): state CLOSED.

        A pending failure is dropped (nothing can be sent any more);
        :attr:`failure` still tells it.
        """
        self._transition(_Ev.EOF)
        self.pending_failure = None
        self._discard = True
        self._drop_message()

    # ------------------------------------------------------------ fail

    def _fail_remote(self, exc: RemoteProtocolError, events: list[Event]) -> None:
        self.failure = exc
        if self.state is _OPEN and any(type(e) is str or type(e) is bytes for e in events):
            # Messages parsed before the fault are returned: hold the close
            # frame back until the application had a chance to answer them
            # (Autobahn 3.2, 4.1.3, 5.15: the echo, then the close).
            self.pending_failure = exc
            self._discard = True
            self._drop_message()
            return
        self._fail(exc.close_code, str(exc))

    def fail_pending(self) -> bool:
        """Fail the connection for the fault :meth:`receive_data` held back.

        Queues the close frame with the fault's close code, state CLOSING,
        :meth:`close_transport_now` becomes True. Returns False (and does
        nothing) when no failure is pending.
        """
        exc = self.pending_failure
        if exc is None:
            return False
        self.pending_failure = None
        self._fail(exc.close_code, str(exc))
        return True

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 section 7.1.7): queue a close frame
        with ``code`` if none was sent, state CLOSING, then close the transport.

        While a failure is pending (:attr:`pending_failure`), its close code
        and reason are sent instead: the peer's fault comes first.

        Raises :class:`LocalProtocolError` for a code not allowed on the wire,
        :class:`InvalidState` unless OPEN or CLOSING.
        """
        serialize_close(code, "")  # validates the code
        if not self.fail_pending():
            self._fail(code, reason)

    def _fail(self, code: int, reason: str) -> None:
        if self.state is _OPEN:
            # Section 7.1.7: "the endpoint SHOULD send a Close frame with an
            # appropriate status code (Section 7.4) before proceeding to
            # _Close the WebSocket Connection_."
            self._queue_close(code, _truncate_reason(reason))
        self._transition(_Ev.FAIL)
        self._discard = True
        self._close_transport = True
        self._drop_message()

    def _drop_message(self) -> None:
        if self._msg_opcode:
            self._msg_opcode = 0
            self._msg_parts = []
            self._text_parts = []
            if self._utf8 is not None:
                self._utf8.reset()
            self._parser.max_size = self._max_size

    # ------------------------------------------------------------- send

    def has_data_to_send(self) -> bool:
        """True when :meth:`data_to_send` would return something."""
        return bool(self._out)

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write, in order, and forget them.

        One item per frame, except that a whole uncompressed message of at
        least :data:`SPLIT_PAYLOAD_AT` bytes of ``bytes`` comes as two items,
        its header then the caller's payload object (not copied: a writev).
        """
        out = self._out
        if not out:
            return []
        self._out = []
        self._pending_pongs = 0
        return out

    def _frame(
        self,
        opcode: int,
        payload: bytes | bytearray | memoryview,
        fin: bool = True,
        rsv1: bool = False,
    ) -> bytes:
        if self.side is Side.SERVER:
            return serialize_frame(opcode, payload, fin=fin, rsv1=rsv1)
        # Section 5.1: "a client MUST mask all frames that it sends to the server".
        return serialize_frame(
            opcode, payload, fin=fin, rsv1=rsv1, mask_key=self._mask_key_factory()
        )

    def _check_open(self) -> None:
        if self.state is not _OPEN:
            raise InvalidState(f"connection is {self.state.name}, not OPEN")

    def _send_data(self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool) -> None:
        ext = self._ext
        if ext is None:
            frame = self._frame(opcode, payload, fin)
        else:
            # RFC 7692 section 6: the "Per-Message Compressed" bit is set on
            # the first frame of a compressed message only.
            frame = self._frame(opcode, ext.compress(payload, fin), fin, opcode != OP_CONT)
        self._out.append(frame)
        self._send_fragmented = not fin

    def send_text(self, data: bytes | str, fin: bool = True) -> None:
        """Send a text message, or its first fragment when ``fin`` is False.

        ``bytes`` are sent as they are (the caller vouches they are UTF-8).
        Raises :class:`InvalidState` unless OPEN, :class:`LocalProtocolError`
        while a fragmented message is being sent.
        """
        if self.state is not _OPEN:
            self._check_open()
        if self._send_fragmented:
            raise LocalProtocolError("a fragmented message is being sent: use send_continuation()")
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if fin and self._plain:
            if len(payload) < SPLIT_PAYLOAD_AT or type(payload) is not bytes:
                self._out.append(serialize_final_frame(OP_TEXT, payload))
            else:
                self._out += (final_header(OP_TEXT, len(payload)), payload)
            return
        self._send_data(OP_TEXT, payload, fin)

    def send_binary(self, data: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Send a binary message, or its first fragment when ``fin`` is False (see :meth:`send_text`)."""
        if self.state is not _OPEN:
            self._check_open()
        if self._send_fragmented:
            raise LocalProtocolError("a fragmented message is being sent: use send_continuation()")
        if type(data) is memoryview:
            data = _flat(data)
        if fin and self._plain:
            if len(data) < SPLIT_PAYLOAD_AT or type(data) is not bytes:
                self._out.append(serialize_final_frame(OP_BINARY, data))
            else:
                self._out += (final_header(OP_BINARY, len(data)), data)
            return
        self._send_data(OP_BINARY, data, fin)

    def send_continuation(self, data: bytes | bytearray | memoryview, fin: bool) -> None:
        """Send the next fragment of the message started by send_text/send_binary(fin=False).

        Raises :class:`InvalidState` unless OPEN, :class:`LocalProtocolError`
        when no fragmented message is being sent.
        """
        self._check_open()
        if not self._send_fragmented:
            raise LocalProtocolError("no fragmented message to continue")
        self._send_data(OP_CONT, _flat(data) if type(data) is memoryview else data, fin)

    def _send_control(self, opcode: int, data: bytes) -> None:
        self._check_open()
        # Section 5.5: "All control frames MUST have a payload length of 125 bytes or less".
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError(f"control frame payload exceeds {MAX_CONTROL_PAYLOAD} bytes")
        self._out.append(self._frame(opcode, data))

    def send_ping(self, data: bytes = b"") -> None:
        """Send a ping. Raises :class:`InvalidState` unless OPEN, :class:`LocalProtocolError` over 125 bytes."""
        self._send_control(OP_PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Send an unsolicited pong (section 5.5.3: "A Pong frame MAY be sent unsolicited").

        Raises like :meth:`send_ping`.
        """
        self._send_control(OP_PONG, data)

    def _queue_close(self, code: int, reason: str, close: Close | None = None) -> None:
        """Queue our close frame; ``close``: an equal :class:`Close` to keep (frozen: shared)."""
        payload = serialize_close(code, reason)
        if self.side is Side.SERVER:
            # A control frame: unmasked, FIN set, RSV1 clear (also with permessage-deflate).
            self._out.append(serialize_final_frame(OP_CLOSE, payload))
        else:
            self._out.append(self._frame(OP_CLOSE, payload))
        self.close_sent = Close(code, reason) if close is None else close

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake: queue a close frame, state CLOSING.

        ``code=None`` sends a close frame without a payload (received as 1005).
        While a failure is pending (:attr:`pending_failure`), the connection
        fails with it instead (see :meth:`fail_pending`): RFC 6455 section
        7.1.7 asks for "an appropriate status code" for the peer's fault.
        Raises :class:`InvalidState` unless OPEN, :class:`LocalProtocolError`
        for a code not allowed on the wire, a reason over 123 UTF-8 bytes, or
        a reason without a code.
        """
        self._check_open()
        if code is None:
            if reason:
                raise LocalProtocolError("a close reason requires a close code")
            payload = b""
            close = Close(1005, "")
        else:
            payload = serialize_close(code, reason)
            close = Close(code, reason)
        if self.fail_pending():
            return
        self._out.append(self._frame(OP_CLOSE, payload))
        self.close_sent = close
        self._transition(_Ev.SEND_CLOSE)

    def encode_message(self, opcode: int, payload: bytes | str) -> bytes:
        """The frame carrying one whole message as this connection would send it.

        Compression is applied (which advances the compressor: write the
        result to this connection). Used by broadcast with
        :attr:`frame_share_key`. Raises :class:`LocalProtocolError` unless
        ``opcode`` is OP_TEXT or OP_BINARY. Does not check the state.
        """
        if opcode != OP_TEXT and opcode != OP_BINARY:
            raise LocalProtocolError(f"not a data opcode: {opcode:#x}")
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        if self._plain:
            return serialize_final_frame(opcode, data)
        if self._ext is None:
            return self._frame(opcode, data)
        return self._frame(opcode, self._ext.compress(data, True), True, True)

    def queue_frame(self, frame: bytes) -> None:
        """Queue ``frame``, a whole message from :meth:`encode_message` (or
        one uncompressed frame shared by many connections), for
        :meth:`data_to_send`. Raises :class:`InvalidState` unless OPEN and
        :class:`LocalProtocolError` during a fragmented send."""
        self._check_open()
        if self._send_fragmented:
            raise LocalProtocolError("cannot queue a message inside a fragmented message")
        self._out.append(frame)
