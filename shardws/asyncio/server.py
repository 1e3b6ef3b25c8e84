"""``serve()``, ``unix_serve()`` and ``Server``: the asyncio WebSocket server.

``serve(handler, host, port, **options)`` is both awaitable and an async
context manager (like websockets)::

    server = await serve(handler, "localhost", 8765)
    async with serve(handler, "localhost", 8765) as server: ...

Every default comes from :class:`shardws.config.ServeSettings` (one settings
source for ``serve()``, the CLI and the docs), except ``server_header``,
whose default is ``"shardws/<version>"`` (``None`` or ``""`` omit it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .. import speedups
from ..config import ServeSettings
from ..protocol.connection import SPLIT_PAYLOAD_AT, Connection, State
from ..protocol.deflate import enable_server_permessage_deflate
from ..protocol.frames import FrameParser, serialize_close
from ..protocol.handshake import default_server_header
from . import registry
from .connection import ServerConnection

__all__ = ["serve", "unix_serve", "Server"]

_DEFAULTS = ServeSettings()
_UNSET: Any = object()  # server_header: "not given" (None means "omit")

Handler = Callable[[ServerConnection], Awaitable[None]]
LoggerLike = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True, slots=True)
class _Options:
    """What every connection of one server shares (resolved once per server)."""

    handler: Handler
    logger: logging.Logger
    auth_hook: Callable[..., Any] | None
    process_request: Callable[..., Any] | None
    process_response: Callable[..., Any] | None
    select_subprotocol: Callable[..., Any] | None
    subprotocols: Sequence[str] | None
    extensions: Sequence[Any]
    origins: Sequence[str | None] | None
    extra_headers: Any
    server_header: str | None
    open_timeout: float | None
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float | None
    max_size: int | None
    max_queue_high: float  # messages
    max_queue_low: float
    read_limit_high: float  # bytes of unread messages
    read_limit_low: float
    write_limits: tuple[int, int]


class Server:
    """A WebSocket server, returned by :func:`serve` and :func:`unix_serve`.

    Mirrors :class:`asyncio.Server` where it makes sense. :meth:`close`
    stops accepting and, by default, closes every connection with 1001
    (going away); the supervisor's rolling restart passes ``code=1012``.
    ``async with server:`` closes it and waits on exit.
    """

    def __init__(self, options: _Options, loop: asyncio.AbstractEventLoop) -> None:
        self._options = options
        self.loop = loop
        self.logger = options.logger
        self.server: asyncio.Server | None = None
        self._connections: set[ServerConnection] = set()  # every accepted TCP connection
        self._websockets: set[ServerConnection] = set()  # past the opening handshake
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_task: asyncio.Task[None] | None = None
        self._closed_waiter: asyncio.Future[None] = loop.create_future()
        self._handing_over = False  # stop_listening() ran: no listener, still serving
        # connections whose send() corked messages this loop iteration
        self._to_flush: list[ServerConnection] = []

    def _protocol_factory(self) -> ServerConnection:
        return ServerConnection(self, self._options, self.loop)

    def _wrap(self, server: asyncio.Server) -> None:
        self.server = server
        for sock in server.sockets:
            name = sock.getsockname()
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.logger.info("server listening on %s:%d", *name[:2])
            else:
                self.logger.info("server listening on %s", name)

    # connections call these
    def _register(self, connection: ServerConnection) -> None:
        self._connections.add(connection)

    def _opened(self, connection: ServerConnection) -> None:
        self._websockets.add(connection)

    def _flush_corked(self) -> None:
        """Write what send() corked on every connection: one callback per loop iteration.

        DESIGN: "Writes produced in one loop iteration are coalesced into one
        transport.write / writelines where possible": the first message that
        a connection's send() queues in its protocol puts the connection on
        this list (and the first connection schedules this call); the next
        messages join it; past ``_cork_limit`` bytes send() writes everything
        at once (bounded memory; write_limit's back-pressure still applies);
        a handler that waits in recv() writes what it corked before it waits,
        unless the C speedups batch (``speedups.batched_sends()``): it then
        leaves it to this call, which hands the kernel the writes of all the
        connections with one system call per 256 (docs/internals.md).
        """
        connections = self._to_flush
        self._to_flush = []
        if _flush_corked_c is not None:
            _flush_corked_c(connections, _flush_one)
            return
        error: BaseException | None = None
        for connection in connections:
            try:
                _flush_one(connection)
            except BaseException as exc:  # the others are written all the same
                error = error or exc
        if error is not None:
            raise error

    def _unregister(self, connection: ServerConnection) -> None:
        self._connections.discard(connection)
        self._websockets.discard(connection)

    @property
    def sockets(self) -> tuple[Any, ...]:
        """The listening sockets (a tuple, like :attr:`asyncio.Server.sockets`)."""
        return () if self.server is None else tuple(self.server.sockets)

    @property
    def websockets(self) -> set[ServerConnection]:
        """The connections past the opening handshake and not closed yet (a new set)."""
        return set(self._websockets)

    @property
    def connections(self) -> set[ServerConnection]:
        """Alias of :attr:`websockets` (the websockets >= 14 name)."""
        return set(self._websockets)

    def is_serving(self) -> bool:
        """True while the server serves: accepting, or finishing handshakes after :meth:`stop_listening`."""
        if self.server is None or self._close_task is not None:
            return False
        return self._handing_over or self.server.is_serving()

    async def stop_listening(self, timeout: float) -> None:
        """Close the listening sockets, then let the handshakes already accepted finish.

        For a hand-over (the supervisor's rolling restart): with
        ``SO_REUSEPORT`` the kernel then sends new clients to the other
        listeners only, while connections this server accepted but has not
        upgraded yet complete their opening handshake (at most ``timeout``
        seconds) instead of being dropped or answered 503. Open connections
        are left alone; :meth:`close` ends them.
        """
        if self.server is None or self._close_task is not None:
            return
        self._handing_over = True
        self.server.close()
        # The loop delivers connection_made() of the last accepted sockets on
        # later iterations: the condition must hold on two polls in a row.
        deadline = self.loop.time() + timeout
        settled = 0
        while settled < 2 and self.loop.time() < deadline:
            await asyncio.sleep(0.005)  # polling with a deadline
            pending = [c for c in self._connections if c not in self._websockets and not c.closed]
            settled = 0 if pending else settled + 1

    async def start_serving(self) -> None:
        """Start accepting (only needed with ``start_serving=False``)."""
        assert self.server is not None
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        """Accept connections until the server is closed or this coroutine is cancelled.

        Cancelling it closes the server (connections included) and waits.
        """
        await self.start_serving()
        try:
            await asyncio.shield(self._closed_waiter)
        except asyncio.CancelledError:
            self.close()
            await self.wait_closed()
            raise

    def close(self, close_connections: bool = True, *, code: int = 1001, reason: str = "") -> None:
        """Stop accepting connections; close open ones with ``code`` (1001, going away).

        Opening handshakes in progress are answered 503. Returns at once;
        :meth:`wait_closed` waits for the end. ``close_connections=False``
        leaves open connections alone (their handlers end them). ``code``
        and ``reason`` go in every close frame: the supervisor's rolling
        restart uses 1012 (service restart). Idempotent.

        Raises:
            LocalProtocolError: ``code`` or ``reason`` cannot be sent.
        """
        serialize_close(code, reason)  # LocalProtocolError now, not in every connection's task
        if self._close_task is None:
            self._close_task = self.loop.create_task(self._close(close_connections, code, reason))

    async def _close(self, close_connections: bool, code: int, reason: str) -> None:
        self.logger.info("server closing")
        if self.server is not None:
            self.server.close()
        # Connections still waiting for their request line: nothing to answer
        # (they have no task yet: wait for their end below).
        waiting = [c for c in self._connections if c.request is None and not c.closed]
        for connection in waiting:
            connection._transport.close()
        if close_connections:
            closing = [
                self.loop.create_task(connection.close(code, reason))
                for connection in list(self._websockets)
            ]
            if closing:
                await asyncio.wait(closing)
        # Handlers finish (and close their connections) on their own time.
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        if waiting:
            await asyncio.wait([connection._closed_waiter for connection in waiting])
        if self.server is not None:
            # Python < 3.12 may return before every transport is gone; our
            # own bookkeeping (above) is what guarantees the end.
            await self.server.wait_closed()
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        self.logger.info("server closed")

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler has returned."""
        await asyncio.shield(self._closed_waiter)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this server runs on."""
        return self.loop

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


def _limits(value: int | tuple[int, int | None]) -> tuple[int, int]:
    """write_limit or max_queue as (high, low): low defaults to a quarter of high."""
    if isinstance(value, tuple):
        high, low = value
        return high, (high // 4 if low is None else low)
    return value, value // 4


class serve:
    """Start a WebSocket server on TCP: ``await serve(...)`` or ``async with serve(...)``.

    Args:
        handler: coroutine function receiving each :class:`ServerConnection`
            once the handshake succeeded. Returning closes the connection
            with 1000; raising logs the error and closes with 1011.
        host, port: where to listen (``loop.create_server`` semantics; port 0
            picks a free port, see :attr:`Server.sockets`).
        logger: logger (default ``logging.getLogger("shardws.server")``).
        compression: ``"deflate"`` (permessage-deflate) or ``None``.
        subprotocols: subprotocols supported, in order of preference.
        select_subprotocol: ``(connection, offered) -> str | None`` replacing
            the default choice.
        extra_headers: headers added to the 101 response: a mapping, a
            :class:`Headers`, a list of pairs, or a callable
            ``(connection, request)`` returning one of those.
        process_request: ``(connection, request) -> Response | None``, sync or
            async; a Response is sent instead of the handshake (with
            ``Connection: close``); an exception answers 500 and is logged.
        process_response: ``(connection, request, response) -> Response |
            None``, sync or async; a Response replaces the one to send.
        server_header: ``Server`` header value (default ``"shardws/<version>"``;
            ``None`` or ``""`` omit it).
        origins: allowed ``Origin`` values (``None`` in the list allows no
            Origin); others get 403.
        open_timeout: seconds for the opening handshake (None: no limit).
        ping_interval, ping_timeout: keepalive (None or 0 disable it); no pong
            within ``ping_timeout`` closes with 1011.
        close_timeout: seconds to wait for the closing handshake before
            dropping the TCP connection.
        max_size: largest message accepted (None: no limit); larger ones
            close with 1009.
        max_queue: unread messages before reading pauses (None: no limit);
            reading resumes below a quarter (or give ``(high, low)``).
        read_limit: unread bytes before reading pauses (websockets' legacy
            high-water mark); resumes below a quarter.
        write_limit: write buffer high-water mark (or ``(high, low)``):
            ``send()`` waits above it and :func:`broadcast` skips.
        extensions: extension factories (permessage-deflate is added by
            ``compression="deflate"`` unless one is given).
        ssl: an :class:`ssl.SSLContext` to serve ``wss://``.
        sock, reuse_port, backlog, and other keyword arguments: passed to
            ``loop.create_server``.
    """

    _unix = False

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        logger: LoggerLike | None = None,
        compression: str | None = _DEFAULTS.compression,
        subprotocols: Sequence[str] | None = _DEFAULTS.subprotocols,
        extra_headers: Any = None,
        process_request: Callable[..., Any] | None = None,
        process_response: Callable[..., Any] | None = None,
        select_subprotocol: Callable[..., Any] | None = None,
        server_header: str | None = _UNSET,
        origins: Sequence[str | None] | None = _DEFAULTS.origins,
        open_timeout: float | None = _DEFAULTS.open_timeout,
        ping_interval: float | None = _DEFAULTS.ping_interval,
        ping_timeout: float | None = _DEFAULTS.ping_timeout,
        close_timeout: float | None = _DEFAULTS.close_timeout,
        max_size: int | None = _DEFAULTS.max_size,
        max_queue: int | tuple[int, int | None] | None = _DEFAULTS.max_queue,
        read_limit: int = _DEFAULTS.read_limit,
        write_limit: int | tuple[int, int | None] = _DEFAULTS.write_limit,
        extensions: Sequence[Any] | None = None,
        backlog: int = _DEFAULTS.backlog,
        **kwargs: Any,
    ) -> None:
        if logger is None:
            logger = logging.getLogger("shardws.server")
        if isinstance(logger, logging.LoggerAdapter):
            logger = logger.logger
        assert isinstance(logger, logging.Logger)
        if compression == "deflate":
            extensions = enable_server_permessage_deflate(extensions)
        elif compression is None or compression == "none":
            extensions = list(extensions or [])
        else:
            raise ValueError(f"unsupported compression: {compression}")
        if server_header is _UNSET:
            server_header = default_server_header()
        queue_high: float
        queue_low: float
        if max_queue is None:
            queue_high = queue_low = float("inf")
        else:
            queue_high, queue_low = _limits(max_queue)
        if subprotocols is not None:
            subprotocols = list(subprotocols)
        if origins is not None:
            origins = list(origins)
        self._options = _Options(
            handler=handler,
            logger=logger,
            auth_hook=getattr(handler, "__shardws_auth__", None),
            process_request=process_request,
            process_response=process_response,
            select_subprotocol=select_subprotocol,
            subprotocols=subprotocols,
            extensions=extensions,
            origins=origins,
            extra_headers=extra_headers,
            server_header=server_header or None,
            open_timeout=open_timeout,
            ping_interval=ping_interval or None,
            ping_timeout=ping_timeout or None,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue_high=queue_high,
            max_queue_low=queue_low,
            read_limit_high=read_limit,
            read_limit_low=read_limit // 4,
            write_limits=_limits(write_limit),
        )
        self._host = host
        self._port = port
        self._kwargs = kwargs
        self._kwargs["backlog"] = backlog
        self._server: Server | None = None

    async def _create(self) -> Server:
        loop = asyncio.get_running_loop()
        server = Server(self._options, loop)
        if self._unix:
            created = await loop.create_unix_server(server._protocol_factory, **self._kwargs)
        else:
            created = await loop.create_server(
                server._protocol_factory, self._host, self._port, **self._kwargs
            )
        server._wrap(created)
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, Server]:
        return self._create().__await__()

    async def __aenter__(self) -> Server:
        return await self._create()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class unix_serve(serve):
    """Start a WebSocket server on a Unix socket: like :class:`serve` with ``path``.

    ``path`` is the socket's file system path (or pass ``sock=``); every
    other option is :class:`serve`'s.
    """

    _unix = True

    def __init__(self, handler: Handler, path: str | None = None, **kwargs: Any) -> None:
        kwargs.pop("reuse_port", None)  # meaningless for Unix sockets
        super().__init__(handler, **kwargs)
        self._kwargs["path"] = path


def _flush_one(connection: ServerConnection) -> None:
    """Server._flush_corked() for one connection (what speedups.flush_corked
    does in C, in batches, for the connections the C fast paths serve)."""
    connection._flush_scheduled = False
    if connection._corked and not connection._transport.is_closing():
        connection._flush()


# the loop of Server._flush_corked() in C, with the writes batched
_flush_corked_c = speedups.flush_corked if speedups.connection_fast_paths else None


# (method of ServerConnection, the name its Python version keeps when the C
# speedups replace it): see _install_fast_paths().
FAST_METHODS = (
    ("data_received", "_data_received_py"),
    ("send", "_send_py"),
    ("_flush", "_flush_py"),
    ("recv", "_recv_py"),
    ("__anext__", "_anext_py"),
)


def _install_fast_paths() -> None:
    """Bind the C versions of the hot methods, when the C speedups are loaded.

    ``speedups.connection_fast_paths`` takes the common case -- whole
    uncompressed messages received, a str or bytes sent, on an OPEN
    connection -- and calls the Python method, kept under a ``_py`` name,
    for everything else. SHARDWS_NO_SPEEDUPS=1 runs the Python methods alone.
    """
    bind = speedups.connection_fast_paths
    if bind is None:
        return
    methods = bind(
        ServerConnection, Connection, FrameParser, _Options, registry.stats, State.OPEN,
        SPLIT_PAYLOAD_AT,
    )
    for name, python_name in FAST_METHODS:
        setattr(ServerConnection, python_name, ServerConnection.__dict__[name])
        setattr(ServerConnection, name, methods[name])


_install_fast_paths()
