"""``ServerConnection``: one WebSocket connection, an :class:`asyncio.Protocol`.

The transport calls :meth:`ServerConnection.data_received`; the bytes go to
the sans-I/O :class:`shardws.protocol.connection.Connection` (after the
opening handshake) or to the HTTP :class:`RequestParser` (before it). What
the protocol produces in answer to a read (pongs, close frames) is written
back at once, one ``write``/``writelines`` per read. Messages from ``send()``
are corked: those queued in one loop iteration go out in one write (a
``call_soon`` flush, or at once past 64 KiB or ``write_limit``); every write
takes the protocol's queue in order, so a message never passes a control
frame or a broadcast queued after it. There is at most one task per
connection, created once the request has arrived: it runs the user's handler
(and first the hooks of the opening handshake, when the server has any);
without hooks the 101 is written from data_received. Reading needs no task.

Flow control (all bounded):

======================================  =====================================
condition                               effect
======================================  =====================================
``max_queue`` messages unread, or more  ``transport.pause_reading()``; resumed
than ``read_limit`` bytes unread        below a quarter of both (low-water)
transport write buffer > ``write_limit`` ``send()`` waits for ``resume_writing``
                                        and reading pauses too (a peer that
                                        does not read cannot make us queue
                                        pongs without bound)
opening handshake hooks running         reading pauses until the 101 is sent
a protocol error held back after        reading pauses until the failure is
messages of the same read (the          applied: when ``recv()`` finds no
protocol's ``pending_failure``)         message left, when the handler
                                        returns or closes, or after
                                        ``close_timeout`` (10 s if None)
======================================  =====================================

A protocol error is held back so that the handler can answer the messages
that arrived just before it (an echo goes out before the close frame, as
Autobahn cases 3.2, 4.1.3, 5.15 want); the timer bounds how long a handler
that does not read keeps such a connection open.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import email.utils
import inspect
import logging
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import speedups
from ..exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)
from ..protocol.connection import Connection, Pong, Side, State
from ..protocol.handshake import accept, error_response, reject
from ..protocol.headers import Headers
from ..protocol.http11 import Request, RequestParser, Response
from . import registry

if TYPE_CHECKING:
    from .server import Server, _Options

__all__ = ["ServerConnection", "Data"]

Data = str | bytes

#: Bytes of messages that send() may hold back for one write per loop
#: iteration (at most write_limit): past it, they are written at once.
CORK_LIMIT = 2**16

#: How long a protocol error may be held back when close_timeout is None.
PENDING_FAILURE_TIMEOUT = 10.0

# websockets' rule: the close is "OK" when both close frames carry one of these.
OK_CLOSE_CODES = frozenset({1000, 1001, 1005})

_registry_stats = registry.stats
_WRITELINES_UNPAUSED = (3, 12) <= sys.version_info < (3, 12, 8) or sys.version_info[:3] == (3, 13, 0)
_SelectorSocketTransport: type = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]

# Only the C _flush and broadcast() write to the socket (speedups loaded).
DIRECT_WRITES = speedups.connection_fast_paths is not None
# Transport classes over a plain stream socket (no TLS, no pipe): the
# default loop's, and uvloop's TCP and Unix ones, recognised by name so that
# importing shardws does not import uvloop.
_PLAIN_TRANSPORTS = {
    ("asyncio.selector_events", "_SelectorSocketTransport"),
    ("uvloop.loop", "TCPTransport"),
    ("uvloop.loop", "UnixTransport"),
}


def _plain_socket_fd(transport: Any) -> int:
    """The file descriptor under a plain TCP or Unix stream transport, else -1.

    The C speedups send on it directly, and only while the transport is not
    closing and holds nothing in its write buffer (so the bytes keep their
    order); what the kernel does not take goes to the transport.
    """
    cls = type(transport)
    if (cls.__module__, cls.__name__) not in _PLAIN_TRANSPORTS:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    fd: int = sock.fileno()
    return fd


_OPEN = State.OPEN


class ServerConnection(asyncio.Protocol):
    """A WebSocket connection accepted by :func:`shardws.serve`.

    The handler receives it once the opening handshake succeeded. Every
    coroutine method must be awaited on the event loop that accepted the
    connection; nothing here is thread-safe.

    Attributes set during the handshake: :attr:`request`, :attr:`response`,
    :attr:`subprotocol`, :attr:`username` (by :func:`shardws.basic_auth`).
    :attr:`id` is a :class:`uuid.UUID` (uuid4) unique to the connection.
    :attr:`latency` is the round-trip time of the last answered ping (0 until
    then).
    """

    # Slots keep a connection small (servers hold 100k of them); __dict__
    # stays so that applications can attach their own attributes, as they do
    # with websockets (it is only allocated when they do).
    __slots__ = (
        # the hot path first (send, recv, broadcast): fewer cache lines per connection
        "_protocol",
        "_transport",
        "_fragmented",
        "_write_paused",
        "_corked",
        "_write_limit",
        "_cork_limit",
        "_flush_scheduled",
        "_broadcast_epoch",
        "_join_writes",
        "_sock_fd",
        "_loop",
        "_messages",
        "_queued_bytes",
        "_queue_full",
        "_recv_waiter",
        "__dict__",
        "__weakref__",
        "_server",
        "_options",
        "_id",
        "_logger",
        "_debug",
        "request",
        "response",
        "subprotocol",
        "username",
        "latency",
        "handshake_exc",
        "_local_address",
        "_remote_address",
        "_parser",
        "_early",
        "_extensions",
        "_closed_waiter",
        "_task",
        "_handshaking",
        "_reading_paused",
        "_drain_waiter",
        "_pending_pings",
        "_keepalive_handle",
        "_close_handle",
        "_fail_handle",
    )

    def __init__(self, server: Server, options: _Options, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._options = options
        self._loop = loop
        self._id: uuid.UUID | None = None  # made on first use: most connections never need it
        self._logger: logging.LoggerAdapter[Any] | None = None
        self._debug = options.logger.isEnabledFor(logging.DEBUG)
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        self.username: str | None = None
        self.latency: float = 0.0
        self.handshake_exc: BaseException | None = None
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._local_address: Any = None
        self._remote_address: Any = None
        self._parser: RequestParser | None = RequestParser()
        self._early: list[bytes] = []  # bytes received after the request, before the 101
        self._protocol: Connection | None = None
        self._extensions: list[Any] = []
        # The task is only created once the request arrived: nothing waits for it.
        self._closed_waiter: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None
        # incoming messages
        self._messages: deque[Data] = deque()
        self._queued_bytes = 0
        self._recv_waiter: asyncio.Future[None] | None = None
        # flow control
        self._queue_full = False
        self._handshaking = True
        self._write_paused = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        # corking: bytes of messages queued in the protocol since the last
        # write, flushed once per loop iteration or past _cork_limit
        self._corked = 0
        self._cork_limit = CORK_LIMIT
        self._write_limit = options.write_limits[0]
        self._flush_scheduled = False
        # the loop iteration (broadcast._epoch) of the last broadcast written
        # to this connection: a second one in that iteration is corked
        self._broadcast_epoch: object = None
        self._join_writes = False  # see connection_made()
        self._sock_fd = -1  # see connection_made()
        # sending a fragmented message: other senders wait on this future
        self._fragmented: asyncio.Future[None] | None = None
        # pings: payload -> (future, time sent); insertion order = send order
        self._pending_pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._fail_handle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ properties

    @property
    def id(self) -> uuid.UUID:
        """A :class:`uuid.UUID` (uuid4) unique to the connection, made on first use."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        """The server's logger with ``{"websocket": connection}`` as extra (websockets' style)."""
        if self._logger is None:
            self._logger = logging.LoggerAdapter(self._options.logger, {"websocket": self})
        return self._logger

    @property
    def state(self) -> State:
        """CONNECTING during the handshake, then OPEN, CLOSING, CLOSED."""
        if self._protocol is not None:
            return self._protocol.state
        return State.CLOSED if self._closed_waiter.done() else State.CONNECTING

    @property
    def closed(self) -> bool:
        """True once the TCP connection is closed."""
        return self._closed_waiter.done()

    @property
    def local_address(self) -> Any:
        """The server socket's address (``(host, port, ...)`` or a Unix path)."""
        # Asked of the transport on first use (it keeps the addresses of a
        # closed connection too): most connections never need them.
        if self._local_address is None and self._transport is not None:
            self._local_address = self._transport.get_extra_info("sockname")
        return self._local_address

    @property
    def remote_address(self) -> Any:
        """The client's address (``(host, port, ...)``; ``""`` on a Unix socket)."""
        if self._remote_address is None and self._transport is not None:
            self._remote_address = self._transport.get_extra_info("peername")
        return self._remote_address

    @property
    def request_headers(self) -> Headers:
        """The headers of the opening handshake request."""
        assert self.request is not None, "no request received yet"
        return self.request.headers

    @property
    def response_headers(self) -> Headers:
        """The headers of the opening handshake response."""
        assert self.response is not None, "no response sent yet"
        return self.response.headers

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 without one); None until CLOSED."""
        if self._protocol is None:
            return 1006 if self.closed else None
        return self._protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received; None until CLOSED."""
        if self._protocol is None:
            return "" if self.closed else None
        return self._protocol.close_reason

    @property
    def worker_id(self) -> int | None:
        """The supervisor's worker number serving this connection (None unclustered)."""
        return registry.worker_id

    @property
    def extensions(self) -> list[Any]:
        """The negotiated extensions (``PerMessageDeflate`` instances)."""
        return self._extensions

    def respond(self, status: int, text: str) -> Response:
        """A plain-text HTTP response for ``process_request`` to return (websockets' idiom).

        ``return connection.respond(403, "Forbidden\\n")`` rejects the handshake.
        """
        return reject(status, text)

    def subscribe(self, topic: Any) -> bool:
        """Subscribe to ``topic`` in the process registry (see :mod:`.registry`).

        Returns False (nothing recorded) before the opening handshake
        succeeded or once the TCP connection is closed.
        """
        return registry.subscribe(self, topic)

    def unsubscribe(self, topic: Any) -> None:
        """Leave ``topic``; nothing happens if the connection did not subscribe."""
        registry.unsubscribe(self, topic)

    def __repr__(self) -> str:
        return f"<ServerConnection {self.id} {self.state.name} {self.remote_address}>"

    # ------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        high, low = self._options.write_limits
        self._transport.set_write_buffer_limits(high, low)
        self._cork_limit = min(CORK_LIMIT, high)
        # CPython 3.12.0-3.12.7 and 3.13.0: the default loop's writelines()
        # never pauses the protocol (gh-127655), so a client that does not
        # read would grow the buffer without bound; write() still does.
        self._join_writes = _WRITELINES_UNPAUSED and isinstance(
            transport, _SelectorSocketTransport
        )
        # The C _flush and broadcast() send on this socket themselves while
        # the transport buffers nothing (one send() instead of the
        # transport's write()); connection_lost() forgets it.
        self._sock_fd = _plain_socket_fd(transport) if DIRECT_WRITES else -1
        self._server._register(self)
        # No task until the request arrives (Server.close() closes such
        # connections itself): one timer bounds the wait. It lives in
        # _keepalive_handle, which only serves keepalive once OPEN, so that
        # connection_lost() cancels it.
        timeout = self._options.open_timeout
        if timeout is not None:
            self._keepalive_handle = self._loop.call_later(timeout, self._open_timed_out)

    def data_received(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None:
            self._process_events(protocol.receive_data(data))
            return
        if self._parser is None:
            # Request parsed, handshake in progress: kept for after the 101
            # (reading is paused meanwhile, so this holds at most one read).
            self._early.append(data)
            return
        try:
            request = self._parser.feed(data)
        except InvalidHandshake as exc:
            self._parser = None
            self.handshake_exc = exc
            self.logger.info("opening handshake failed: %s", exc)
            self._send_rejection(error_response(exc))
            return
        if request is not None:
            self._request_received(request, self._parser.remaining)

    def eof_received(self) -> bool | None:
        if self._protocol is not None and self._protocol.state is not State.CLOSED:
            self._protocol.receive_eof()
        return None  # let the transport close itself

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._sock_fd = -1
        protocol = self._protocol
        if protocol is not None and protocol.state is not State.CLOSED:
            protocol.receive_eof()
        # Usually no timer runs and only _closed_waiter (and the handler's
        # _recv_waiter) wait: test each slot rather than build tuples.
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None
        if self._close_handle is not None:
            self._close_handle.cancel()
            self._close_handle = None
        if self._fail_handle is not None:
            self._fail_handle.cancel()
            self._fail_handle = None
        self._write_paused = False
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._pending_pings:
            closed = self._close_exc()
            for pong_waiter, _ in self._pending_pings.values():
                if not pong_waiter.done():
                    pong_waiter.set_exception(closed)
                    pong_waiter.exception()  # mark retrieved: nobody may await it
            self._pending_pings.clear()
        self._server._unregister(self)
        registry.remove(self)
        if self._debug and protocol is not None:
            self.logger.debug("connection closed: %s", self._close_exc())

    # -------------------------------------------------------------- reading

    def _process_events(self, events: list[Any]) -> None:
        """Handle what the protocol parsed from one read; write its replies once."""
        protocol = self._protocol
        assert protocol is not None
        messages = self._messages
        added = 0
        queued = self._queued_bytes
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes:
                messages.append(event)
                queued += len(event)
                added += 1
            elif kind is Pong:
                self._acknowledge_pings(event.data)
            # Ping: the protocol already queued the pong. Close: the protocol
            # answered it and moved to CLOSING; _flush() closes the transport.
        self._queued_bytes = queued
        if added:
            _registry_stats.messages_in += added
            waiter = self._recv_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            options = self._options
            if (
                len(messages) >= options.max_queue_high
                or self._queued_bytes > options.read_limit_high
            ):
                if protocol.state is _OPEN:
                    self._queue_overflow()
                elif protocol.close_rcvd is None:
                    # We sent a close frame and keep reading for the peer's
                    # one (unread messages do not hold it back): messages of
                    # this read past max_queue or read_limit are dropped, so
                    # a peer that never closes costs bounded memory; those
                    # unread before stay for the handler.
                    while added and (
                        len(messages) > options.max_queue_high
                        or self._queued_bytes > options.read_limit_high
                    ):
                        self._queued_bytes -= len(messages.pop())
                        added -= 1
        if protocol.pending_failure is not None and self._fail_handle is None:
            self._failure_held_back()
        if protocol.state is not _OPEN or protocol.has_data_to_send():
            self._flush()

    def _queue_overflow(self) -> None:
        """OPEN, and the queue reached max_queue or read_limit: stop reading until drained."""
        if not self._queue_full:
            self._queue_full = True
            self._update_reading()

    def _failure_held_back(self) -> None:
        """The protocol held a failure back after messages: stop reading, bound the wait."""
        self._update_reading()
        timeout = self._options.close_timeout
        self._fail_handle = self._loop.call_later(
            PENDING_FAILURE_TIMEOUT if timeout is None else timeout, self._fail_pending
        )

    def _fail_pending(self) -> None:
        """Apply the failure the protocol held back (if any): write the close frame, close."""
        handle = self._fail_handle
        if handle is not None:
            handle.cancel()
            self._fail_handle = None
        protocol = self._protocol
        if protocol is not None and protocol.fail_pending():
            self._flush()

    def _update_reading(self) -> None:
        """Pause or resume reading from the transport to match the table above."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        protocol = self._protocol
        pause = (
            protocol is not None
            and protocol.state is _OPEN
            and (self._queue_full or protocol.pending_failure is not None)
        ) or (self._write_paused or (self._handshaking and self._parser is None))
        if pause is not self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _resume_if_drained(self) -> None:
        """The queue was full: resume reading once below the low-water marks."""
        options = self._options
        if (
            len(self._messages) <= options.max_queue_low
            and self._queued_bytes <= options.read_limit_low
        ):
            self._queue_full = False
            self._update_reading()

    def recv(self, decode: bool | None = None) -> Coroutine[Any, Any, Data]:
        """Receive the next message: ``str`` for text, ``bytes`` for binary.

        ``await connection.recv()``. ``decode=True`` returns text for binary
        messages (UTF-8 decoding), ``decode=False`` returns bytes for text
        messages.

        Raises:
            ConnectionClosedOK: the connection closed normally (1000/1001).
            ConnectionClosedError: it closed with an error or without a
                closing handshake.
            ConcurrencyError: another coroutine is already waiting in recv().
        """
        return self._receive(decode, False)

    def __aiter__(self) -> AsyncIterator[Data]:
        """Iterate over messages; stop on a normal close, raise ConnectionClosedError otherwise."""
        return self

    def __anext__(self) -> Coroutine[Any, Any, Data]:
        return self._receive(None, True)

    async def _receive(self, decode: bool | None, iterating: bool) -> Data:
        """recv() and __anext__(): one coroutine per message, no other frame.

        Before waiting, it writes what send() corked: a handler that answers
        and then waits for the next message sends its answer now, not one
        loop iteration later.
        """
        if self._recv_waiter is not None:
            raise ConcurrencyError(
                "cannot call recv while another coroutine is already running recv"
            )
        messages = self._messages
        while not messages:  # a message already waiting: no await at all
            if self._closed_waiter.done():
                if iterating and self._closed_ok():
                    raise StopAsyncIteration  # no exception object built for nothing
                raise self._close_exc()
            if self._fail_handle is not None:
                # Every message before the protocol error was consumed: now
                # the connection fails (the close frame follows the answers).
                self._fail_pending()
            elif self._corked and not self._transport.is_closing():
                self._flush()
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._recv_waiter = waiter
            try:
                await waiter
            finally:
                self._recv_waiter = None
        message = messages.popleft()
        self._queued_bytes -= len(message)
        if self._queue_full:
            self._resume_if_drained()
        if decode is None:
            return message
        if decode and isinstance(message, bytes):
            return message.decode()
        if not decode and isinstance(message, str):
            return message.encode()
        return message

    # -------------------------------------------------------------- sending

    def _flush(self) -> None:
        """Write what the protocol has queued; start closing when it is not OPEN.

        Every write goes through here, in the protocol's order: messages that
        send() held back (corking) go out before a pong or close frame queued
        after them.
        """
        protocol = self._protocol
        assert protocol is not None
        self._corked = 0
        chunks = protocol.data_to_send()
        if chunks:
            if len(chunks) == 1:
                self._transport.write(chunks[0])
            elif self._join_writes:
                self._transport.write(b"".join(chunks))
            else:
                self._transport.writelines(chunks)
        if protocol.state is not _OPEN:
            self._closing_started()

    def _closing_started(self) -> None:
        protocol = self._protocol
        assert protocol is not None
        if self._fail_handle is not None:
            # The held-back failure was applied (by close(), a keepalive timeout...).
            self._fail_handle.cancel()
            self._fail_handle = None
        transport = self._transport
        # RFC 6455 7.1.1: "the server SHOULD close the underlying TCP
        # connection first" once the closing handshake is done.
        if protocol.close_transport_now() and not transport.is_closing():
            transport.close()
            if (
                not transport.get_write_buffer_size()
                and transport.get_extra_info("sslcontext") is None
            ):
                # Nothing left to write on plain TCP: the transport closes
                # the socket and connection_lost() follows, no timer needed.
                # With bytes still buffered (a peer that does not read), or
                # a TLS shutdown waiting for the peer, the timer below aborts
                # the transport after close_timeout.
                return
        elif self._queue_full:
            self._update_reading()  # read the peer's close frame past unread messages
        if self._close_handle is None and not self._closed_waiter.done():
            timeout = self._options.close_timeout
            if timeout is not None:
                self._close_handle = self._loop.call_later(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_handle = None
        if not self._closed_waiter.done():
            if self._debug:
                self.logger.debug("closing handshake timed out: dropping the TCP connection")
            self._transport.abort()

    async def _drain(self) -> None:
        """Wait while the transport's write buffer is above write_limit."""
        while self._write_paused and not self._closed_waiter.done():
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = self._loop.create_future()
            await asyncio.shield(waiter)

    async def _raise_closed(self) -> None:
        """The connection is not OPEN: wait until it is closed, then raise ConnectionClosed."""
        if self._protocol is None and not self._closed_waiter.done():
            raise ConnectionClosedError(None, None, None)  # still handshaking
        await asyncio.shield(self._closed_waiter)
        raise self._close_exc()

    async def _wait_fragmented(self) -> None:
        while self._fragmented is not None:
            await asyncio.shield(self._fragmented)

    async def send(self, message: Any, text: bool | None = None) -> None:
        """Send a message.

        ``str`` is sent as a text frame; ``bytes``, ``bytearray`` and
        ``memoryview`` as a binary frame (``text=True`` sends bytes as text
        and ``text=False`` sends str as binary). An iterable or an async
        iterable of ``str`` (or of bytes-likes) sends one fragmented message,
        one frame per item; other senders wait until it is complete.

        Waits while the transport's write buffer is above ``write_limit``.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is a mapping or an unsupported type, or a
                fragmented message mixes str and bytes.
        """
        if self._fragmented is not None:
            await self._wait_fragmented()
        protocol = self._protocol
        if isinstance(message, str):
            if protocol is None or protocol.state is not _OPEN:
                await self._raise_closed()
            assert protocol is not None
            payload = message.encode()
            if text is False:
                protocol.send_binary(payload)
            else:
                protocol.send_text(payload)
            size = len(payload)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            if protocol is None or protocol.state is not _OPEN:
                await self._raise_closed()
            assert protocol is not None
            if text:
                protocol.send_text(bytes(message))
            else:
                protocol.send_binary(message)
            size = message.nbytes if type(message) is memoryview else len(message)
        elif isinstance(message, Mapping):
            raise TypeError("data is a dict-like object")
        elif isinstance(message, Iterable):
            await self._send_fragments(iter(message), text)
            return
        elif isinstance(message, AsyncIterable):
            await self._send_fragments(aiter(message), text)
            return
        else:
            raise TypeError("data must be str, bytes, iterable, or async iterable")
        _registry_stats.messages_out += 1
        self._cork(size + 2)  # + header: never 0, even for an empty message
        if self._write_paused:
            await self._drain()

    def _cork(self, size: int) -> None:
        """Count ``size`` more bytes queued in the protocol (corking, see
        Server._flush_corked): written at the end of this loop iteration, or
        at once past ``_cork_limit``."""
        corked = self._corked + size
        if corked >= self._cork_limit:
            self._flush()
        else:
            self._corked = corked
            if not self._flush_scheduled:
                self._flush_scheduled = True
                to_flush = self._server._to_flush
                if not to_flush:
                    self._loop.call_soon(self._server._flush_corked)
                to_flush.append(self)

    async def _send_fragments(self, fragments: Any, text: bool | None) -> None:
        """Send the items of an iterator or async iterator as one fragmented message."""
        is_async = not hasattr(fragments, "__next__")

        async def next_fragment() -> Any:
            try:
                return (await anext(fragments)) if is_async else next(fragments)
            except (StopIteration, StopAsyncIteration):
                return _END

        first = await next_fragment()
        if first is _END:
            return  # an empty iterable sends nothing, like websockets
        if isinstance(first, str):
            kind: type = str
            is_text = text is not False
        elif isinstance(first, (bytes, bytearray, memoryview)):
            kind = bytes
            is_text = bool(text)
        else:
            raise TypeError("iterable must contain bytes or str")
        if self._fragmented is not None:
            await self._wait_fragmented()
        protocol = self._protocol
        if protocol is None or protocol.state is not _OPEN:
            await self._raise_closed()
        assert protocol is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._fragmented = done
        try:
            chunk = _encode_fragment(first, kind)
            if is_text:
                protocol.send_text(chunk, fin=False)
            else:
                protocol.send_binary(chunk, fin=False)
            self._flush()
            await self._drain()
            while True:
                fragment = await next_fragment()
                if fragment is _END:
                    break
                chunk = _encode_fragment(fragment, kind)
                if protocol.state is not _OPEN:
                    await self._raise_closed()
                protocol.send_continuation(chunk, fin=False)
                self._flush()
                await self._drain()
            if protocol.state is not _OPEN:
                await self._raise_closed()
            protocol.send_continuation(b"", fin=True)
            _registry_stats.messages_out += 1
            self._flush()
        except BaseException:
            # Half a message cannot be taken back: the connection is unusable.
            if protocol.state is _OPEN:
                protocol.fail(1011, "error in fragmented message")
                self._flush()
            raise
        finally:
            self._fragmented = None
            done.set_result(None)
        await self._drain()

    async def ping(self, data: str | bytes | bytearray | memoryview | None = None) -> Awaitable[float]:
        """Send a ping; return a future resolving to the round-trip latency (seconds).

        ``data`` defaults to four random bytes; a ``str`` is sent as UTF-8.
        A pong answers every ping sent before the one it matches.

        Raises:
            ConnectionClosed: the connection is closing or closed (the future
                also raises it when the connection closes before the pong).
            ConcurrencyError: a ping with the same payload awaits its pong.
        """
        if isinstance(data, str):
            payload: bytes | None = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        elif data is None:
            payload = None
        else:
            raise TypeError("data must be str or bytes-like")
        protocol = self._protocol
        if protocol is None or protocol.state is not _OPEN:
            await self._raise_closed()
        if payload is not None and payload in self._pending_pings:
            raise ConcurrencyError("already waiting for a pong with the same data")
        return self._send_ping(payload)

    def _send_ping(self, payload: bytes | None) -> asyncio.Future[float]:
        protocol = self._protocol
        assert protocol is not None
        while payload is None or payload in self._pending_pings:
            payload = os.urandom(4)
        protocol.send_ping(payload)  # raises LocalProtocolError over 125 bytes
        pong_waiter: asyncio.Future[float] = self._loop.create_future()
        self._pending_pings[payload] = (pong_waiter, time.monotonic())
        self._flush()
        return pong_waiter

    def _acknowledge_pings(self, data: bytes) -> None:
        pending = self._pending_pings
        if data not in pending:
            return  # unsolicited pong: allowed, ignored
        now = time.monotonic()  # finer than uvloop's millisecond loop.time()
        acknowledged = []
        # "a Pong frame sent in response to a Ping frame must have identical
        # Application data"; an endpoint MAY answer only the most recent ping,
        # so one pong acknowledges every earlier ping too.
        for key, (pong_waiter, sent_at) in pending.items():
            acknowledged.append(key)
            latency = now - sent_at
            if not pong_waiter.done():
                pong_waiter.set_result(latency)
            if key == data:
                self.latency = latency
                break
        for key in acknowledged:
            del pending[key]

    async def pong(self, data: str | bytes | bytearray | memoryview = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat).

        Raises:
            ConnectionClosed: the connection is closing or closed.
        """
        if isinstance(data, str):
            payload = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError("data must be str or bytes-like")
        protocol = self._protocol
        if protocol is None or protocol.state is not _OPEN:
            await self._raise_closed()
        assert protocol is not None
        protocol.send_pong(payload)
        self._flush()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake, and wait until the TCP connection is closed.

        Waits up to ``close_timeout`` for the client's close frame, then drops
        the TCP connection. Idempotent: does nothing more once closing.

        Raises:
            LocalProtocolError (a ProtocolError): ``code`` is not a valid
                close code, or ``reason`` is longer than 123 bytes in UTF-8.
        """
        protocol = self._protocol
        if protocol is None:
            # Still in the opening handshake: nothing to close but TCP.
            if not self._closed_waiter.done():
                self._transport.close()
        elif protocol.state is _OPEN:
            if self._fragmented is not None:
                protocol.fail(1011, "close during fragmented message")
            else:
                protocol.send_close(code, reason)
            self._flush()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed (closing handshake included)."""
        await asyncio.shield(self._closed_waiter)

    def _closed_ok(self) -> bool:
        """Did both close frames carry 1000, 1001 or 1005 (websockets' "OK")?"""
        protocol = self._protocol
        if protocol is None:
            return False
        rcvd, sent = protocol.close_rcvd, protocol.close_sent
        return (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        )

    def _close_exc(self) -> ConnectionClosed:
        """The exception telling how the connection closed (websockets' rules)."""
        protocol = self._protocol
        if protocol is None:
            return ConnectionClosedError(None, None, None)
        exc_type = ConnectionClosedOK if self._closed_ok() else ConnectionClosedError
        exc = exc_type(protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)
        if protocol.failure is not None:
            exc.__cause__ = protocol.failure
        return exc

    # ------------------------------------------------------------- keepalive

    def _start_keepalive(self) -> None:
        interval = self._options.ping_interval
        if interval:
            self._keepalive_handle = self._loop.call_later(interval, self._keepalive_ping)

    def _keepalive_ping(self) -> None:
        self._keepalive_handle = None
        protocol = self._protocol
        if protocol is None or protocol.state is not _OPEN:
            return
        pong_waiter = self._send_ping(None)
        if self._debug:
            self.logger.debug("sent keepalive ping")
        timeout = self._options.ping_timeout
        if timeout:
            self._keepalive_handle = self._loop.call_later(
                timeout, self._keepalive_timed_out, pong_waiter
            )
        pong_waiter.add_done_callback(self._keepalive_pong)

    def _keepalive_pong(self, pong_waiter: asyncio.Future[float]) -> None:
        if pong_waiter.cancelled() or pong_waiter.exception() is not None:
            return
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        latency = pong_waiter.result()
        interval = self._options.ping_interval
        assert interval
        protocol = self._protocol
        if protocol is not None and protocol.state is _OPEN:
            self._keepalive_handle = self._loop.call_later(
                max(0.0, interval - latency), self._keepalive_ping
            )

    def _keepalive_timed_out(self, pong_waiter: asyncio.Future[float]) -> None:
        self._keepalive_handle = None
        protocol = self._protocol
        if pong_waiter.done() or protocol is None or protocol.state is not _OPEN:
            return
        if self._debug:
            self.logger.debug("timed out waiting for keepalive pong")
        protocol.fail(1011, "keepalive ping timeout")
        self._flush()

    # ------------------------------------------------------------ handshake

    def _send_rejection(self, response: Response) -> None:
        """Write a non-101 response and close the TCP connection.

        A response that cannot be written (CR or LF in a header, a bad status
        or reason phrase: ``Response.serialize`` raises) is logged at ERROR
        and replaced by a plain 500.
        """
        try:
            data = self._complete_response(response, rejection=True).serialize()
        except Exception as exc:
            self.handshake_exc = exc
            self.logger.error("opening handshake failed: invalid HTTP response", exc_info=True)
            response = reject(500, _SERVER_ERROR_TEXT)
            response.headers["Date"] = http_date()
            data = response.serialize()
        self.response = response
        if not self._transport.is_closing():
            self._transport.write(data)
            self._transport.close()

    def _complete_response(self, response: Response, *, rejection: bool) -> Response:
        """Add the headers every response carries (Connection, Server, Date)."""
        headers = response.headers
        if rejection:
            if "Connection" not in headers:
                headers["Connection"] = "close"
            server_header = self._options.server_header
            if server_header and "Server" not in headers:
                headers["Server"] = server_header
        # RFC 9110 6.6.1: "An origin server with a clock MUST generate a Date
        # header field in all 2xx (Successful), 3xx (Redirection), and 4xx
        # (Client Error) responses".
        if "date" not in headers._dict:
            headers["Date"] = http_date()
        return response

    async def _call_hook(self, name: str, hook: Any, *args: Any) -> Response | None:
        """Run process_request / process_response (sync or async); errors give a 500."""
        try:
            result = hook(self, *args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            self.handshake_exc = exc
            self.logger.error("opening handshake failed: %s raised", name, exc_info=True)
            return reject(500, _SERVER_ERROR_TEXT)
        if result is not None and not isinstance(result, Response):
            self.logger.error("opening handshake failed: %s returned %r", name, result)
            return reject(500, _SERVER_ERROR_TEXT)
        return result

    def _open_timed_out(self) -> None:
        """``open_timeout`` passed before the request arrived: drop the TCP connection."""
        self._keepalive_handle = None
        if self._transport.is_closing():
            return  # closed meanwhile (Server.close()): connection_lost() is on its way
        self.handshake_exc = TimeoutError("timed out during opening handshake")
        self.logger.info(
            "opening handshake failed: timed out after %s s", self._options.open_timeout
        )
        self._transport.abort()

    def _request_received(self, request: Request, remaining: bytes) -> None:
        """The request head is parsed: answer it now, or in a task when a hook may await.

        Without ``basic_auth``, ``process_request`` and ``process_response``
        nothing can wait: the 101 (or the rejection) is written from this
        read, reading never pauses, and a task is created only for the
        handler. With a hook, reading pauses and the connection's task runs
        the hooks, within what is left of ``open_timeout``.
        """
        self.request = request
        self._parser = None
        if remaining:
            self._early.append(remaining)
        options = self._options
        hooks = (
            options.auth_hook is not None
            or options.process_request is not None
            or options.process_response is not None
        )
        deadline: float | None = None
        handle = self._keepalive_handle
        if handle is not None:
            if hooks:
                deadline = handle.when()
            handle.cancel()
            self._keepalive_handle = None
        if not hooks:
            try:
                response, extensions = self._accept(request)
                opened = self._respond(request, response, extensions)
            except Exception:
                self.logger.error("opening handshake failed", exc_info=True)
                self._transport.abort()
                return
            if opened:
                self._opened()
                self._start_task(None)
            return
        self._update_reading()  # pause until the 101 is written
        self._start_task(deadline)

    def _start_task(self, deadline: float | None) -> None:
        task = self._loop.create_task(self._run(deadline))
        self._task = task
        self._server._tasks.add(task)

    async def _handshake(self) -> bool:
        """Run the hooks and answer the opening handshake; True when the connection is OPEN."""
        request = self.request
        assert request is not None
        if self._transport.is_closing():
            return False
        options = self._options
        response: Response | None = None
        if options.auth_hook is not None:
            response = await self._call_hook("basic_auth", options.auth_hook, request)
        if response is None and options.process_request is not None:
            response = await self._call_hook("process_request", options.process_request, request)
        extensions: list[Any] = []
        if response is None:
            response, extensions = self._accept(request)
        if options.process_response is not None:
            replaced = await self._call_hook(
                "process_response", options.process_response, request, response
            )
            if replaced is not None:
                response = replaced
        return self._respond(request, response, extensions)

    def _accept(self, request: Request) -> tuple[Response, list[Any]]:
        """The 101 for ``request`` (with ``extra_headers``), or the error response."""
        options = self._options
        select = options.select_subprotocol
        try:
            response, self.subprotocol, extensions = accept(
                request,
                subprotocols=options.subprotocols,
                select_subprotocol=(
                    None if select is None else (lambda offered: select(self, offered))
                ),
                extensions=options.extensions,
                origins=options.origins,
                server_header=options.server_header or None,
            )
        except InvalidHandshake as exc:
            self.handshake_exc = exc
            self.logger.info("opening handshake failed: %s", exc)
            return error_response(exc), []
        except Exception as exc:
            self.handshake_exc = exc
            self.logger.error("opening handshake failed", exc_info=True)
            return reject(500, _SERVER_ERROR_TEXT), []
        if options.extra_headers is not None:
            try:
                self._apply_extra_headers(response, request)
            except Exception as exc:
                self.handshake_exc = exc
                self.logger.error("opening handshake failed: extra_headers raised", exc_info=True)
                return reject(500, _SERVER_ERROR_TEXT), []
        return response, extensions

    def _respond(self, request: Request, response: Response, extensions: list[Any]) -> bool:
        """Write ``response``; for a 101, become OPEN. True when the connection is OPEN."""
        # Do not open a connection while the server shuts down (websockets
        # answers 503 too); no await between this check and the write.
        if response.status_code == 101 and not self._server.is_serving():
            response = reject(503, "Server is shutting down.\n")
        if self._transport.is_closing():
            return False
        if response.status_code != 101:
            self._send_rejection(response)
            return False
        try:
            head = self._complete_response(response, rejection=False).serialize()
        except Exception as exc:
            # CR or LF in an extra_headers value, a bad header name, a bad
            # 101 from process_response: answer 500 rather than crash.
            self.handshake_exc = exc
            self.logger.error("opening handshake failed: invalid 101 response", exc_info=True)
            self._send_rejection(reject(500, _SERVER_ERROR_TEXT))
            return False
        self.response = response
        self._extensions = extensions
        protocol = Connection(
            Side.SERVER,
            max_size=self._options.max_size,
            extensions=extensions,
            state=_OPEN,
        )
        self._protocol = protocol
        self._transport.write(head)
        self._handshaking = False
        if self._reading_paused:
            self._update_reading()
        if self._early:
            early = b"".join(self._early)
            self._early = []
            self._process_events(protocol.receive_data(early))
        return True

    def _opened(self) -> None:
        """The 101 is written: the connection is OPEN for the server and the registry."""
        self._server._opened(self)
        registry.add(self)
        if self._debug:
            self.logger.debug("connection open")
        self._start_keepalive()

    def _apply_extra_headers(self, response: Response, request: Request) -> None:
        extra: Any = self._options.extra_headers
        if callable(extra):
            extra = extra(self, request)
            if extra is None:
                return
        if isinstance(extra, Headers):
            items: Iterable[tuple[str, str]] = list(extra.raw_items())
        elif isinstance(extra, Mapping):
            items = list(extra.items())
        else:
            items = list(extra)
        headers = response.headers
        for name, value in items:
            # The application's Server header replaces ours.
            if name.lower() == "server" and "Server" in headers:
                del headers["Server"]
            headers[name] = value

    async def _run(self, deadline: float | None) -> None:
        """The connection's task: the hooks and the 101 if not done yet, the handler, close.

        ``deadline`` (loop time) ends the opening handshake (``open_timeout``).
        """
        options = self._options
        try:
            if self._protocol is None:
                try:
                    async with asyncio.timeout_at(deadline):
                        opened = await self._handshake()
                except TimeoutError:
                    self.handshake_exc = TimeoutError("timed out during opening handshake")
                    self.logger.info(
                        "opening handshake failed: timed out after %s s", options.open_timeout
                    )
                    self._transport.abort()
                    return
                except Exception:
                    self.logger.error("opening handshake failed", exc_info=True)
                    self._transport.abort()
                    return
                if not opened:
                    return
                self._opened()
            try:
                await options.handler(self)
            except ConnectionClosed as exc:
                if self.state is _OPEN:
                    # Not this connection's closure (another connection's
                    # ConnectionClosed escaped): a handler bug like any other.
                    self.logger.error("connection handler failed", exc_info=True)
                    await self.close(1011)
                elif self._debug:
                    # The peer went away or the server closed it (1001, 1012) while
                    # the handler was reading: the normal end of a connection.
                    self.logger.debug("connection handler ended by the closure: %s", exc)
            except Exception:
                self.logger.error("connection handler failed", exc_info=True)
                await self.close(1011)
            else:
                if not self._closed_waiter.done():
                    await self.close()
        except BaseException:
            # Cancelled (loop shutting down): never leak the socket.
            if not self._closed_waiter.done():
                self._transport.abort()
            raise
        finally:
            if self._task is not None:
                self._server._tasks.discard(self._task)


_SERVER_ERROR_TEXT = "Failed to open a WebSocket connection.\nSee server log for more information.\n"

_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The current time as an HTTP ``Date`` value (computed once per second)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _encode_fragment(fragment: Any, kind: type) -> bytes:
    if kind is str:
        if not isinstance(fragment, str):
            raise TypeError("iterable must contain uniform types")
        return fragment.encode()
    if not isinstance(fragment, (bytes, bytearray, memoryview)):
        raise TypeError("iterable must contain uniform types")
    return bytes(fragment)


_END = object()
