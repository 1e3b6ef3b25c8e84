"""The worker process: what runs in each child after the supervisor forks.

A worker binds its own ``SO_REUSEPORT`` listening socket (or uses the Unix
socket it inherited), runs the server core on a fresh uvloop event loop,
stamps its slot of the worker table every second, and drains on a signal:

| signal  | worker does                                                       |
| ------- | ----------------------------------------------------------------- |
| SIGTERM | stop accepting, close every connection with 1001, finish handlers |
| SIGHUP  | the same with 1012 (service restart): rolling restart             |
| SIGQUIT | exit now                                                          |
| SIGINT  | ignored: the supervisor coordinates Ctrl-C                        |

:func:`worker_main` never returns: the process ends with ``os._exit`` so no
state inherited from the supervisor (atexit hooks, buffers) runs twice.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..bus import attach_worker
from ..bus.table import Slot, WorkerState, WorkerTable
from .identity import set_current_worker

__all__ = [
    "WorkerSpec", "worker_main", "load_handler", "server_api", "tls_context", "new_event_loop",
    "EXIT_WORKER_BOOT",
]

log = logging.getLogger("shardws.worker")

#: A worker exits with this code when it cannot load the handler or bind.
EXIT_WORKER_BOOT = 3

#: Close code and reason per draining signal.
DRAIN_SIGNALS: dict[int, tuple[int, str]] = {
    signal.SIGTERM: (1001, ""),
    signal.SIGHUP: (1012, "service restart"),
}


@dataclass
class WorkerSpec:
    """Everything a worker needs, built by the supervisor before the fork."""

    handler: Callable[..., Any] | str  # the handler or "module:attribute"
    family: int = socket.AF_INET  # TCP: the address family to bind
    address: Any = None  # TCP: the sockaddr to bind with SO_REUSEPORT
    uds_socket: socket.socket | None = None  # Unix: the listening socket bound by the supervisor
    serve_kwargs: dict[str, Any] = field(default_factory=dict)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    backlog: int = 2048
    heartbeat_interval: float = 1.0
    handover_timeout: float = 1.0  # rolling restart: wait this long for accepted handshakes


def load_handler(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """The handler named by ``"package.module:attribute"`` (or ``target`` itself).

    Raises ``ImportError``/``AttributeError`` when it cannot be found and
    ``TypeError`` when it is not callable.
    """
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ImportError(f"{target!r}: expected MODULE:HANDLER, e.g. examples.app:handler")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def server_api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(serve, unix_serve)`` of the server core (``shardws.asyncio``)."""
    from .. import asyncio as core

    return core.serve, core.unix_serve


def _listening_socket(spec: WorkerSpec) -> socket.socket:
    """This worker's own ``SO_REUSEPORT`` socket, or the inherited Unix one."""
    if spec.uds_socket is not None:
        return spec.uds_socket
    sock = socket.socket(spec.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if spec.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(spec.address)
        sock.listen(spec.backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server TLS context of ``certfile`` / ``keyfile``; ``None`` without a certificate.

    Raises ``OSError`` / ``ssl.SSLError`` when the files cannot be loaded.
    """
    if not certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh uvloop event loop (an asyncio one where uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _counters() -> tuple[int, int]:
    """Messages in/out of this process (``shardws.asyncio.registry.stats``)."""
    from ..asyncio import registry

    return registry.stats.messages_in, registry.stats.messages_out


async def _serve(spec: WorkerSpec, handler: Callable[..., Any], slot: Slot) -> int:
    loop = asyncio.get_running_loop()
    # This worker's end of the shared-memory bus (shardws.cluster): it takes
    # over its slot's ring and starts reading the others' before serving.
    bus = attach_worker(slot.index, loop)
    serve, unix_serve = server_api()
    kwargs = dict(spec.serve_kwargs)
    context = tls_context(spec.ssl_certfile, spec.ssl_keyfile)
    if context is not None:
        kwargs["ssl"] = context
    sock = _listening_socket(spec)
    if spec.uds_socket is not None:
        server = await unix_serve(handler, sock=sock, **kwargs)
    else:
        server = await serve(handler, sock=sock, **kwargs)

    drain: asyncio.Future[tuple[int, str]] = loop.create_future()

    def on_signal(signum: int) -> None:
        if not drain.done():
            drain.set_result(DRAIN_SIGNALS[signum])

    for signum in DRAIN_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGQUIT, os._exit, 0)

    def stamp() -> None:
        slot.heartbeat = time.monotonic()
        slot.connections = len(server.websockets)
        slot.messages_in, slot.messages_out = _counters()

    supervisor = os.getppid()

    async def heartbeat() -> None:
        while True:
            stamp()
            if os.getppid() != supervisor and not drain.done():
                # The supervisor is gone (killed with SIGKILL): nobody would
                # stop or replace this worker, so it drains like on SIGTERM.
                log.warning("supervisor %d is gone: draining", supervisor)
                drain.set_result(DRAIN_SIGNALS[signal.SIGTERM])
            await asyncio.sleep(spec.heartbeat_interval)

    stamp()
    slot.ready_at = time.monotonic()
    slot.state = WorkerState.READY
    beat = asyncio.ensure_future(heartbeat())
    code, reason = await drain
    slot.state = WorkerState.DRAINING
    if code == 1012:
        # Rolling restart: leave the SO_REUSEPORT group first, so that no
        # client is hashed to a listener about to close.
        await server.stop_listening(spec.handover_timeout)
    server.close(close_connections=True, code=code, reason=reason)
    await server.wait_closed()
    bus.close()
    beat.cancel()
    stamp()
    return 0


def worker_main(spec: WorkerSpec, table: WorkerTable, index: int) -> NoReturn:
    """Run worker ``index`` until it drains; never returns.

    The caller (the supervisor, right after ``fork``) has already reset the
    signal dispositions and closed the supervisor's own descriptors.
    """
    code = 1
    try:
        set_current_worker(index)
        slot = table.slot(index)
        slot.pid = os.getpid()
        try:
            handler = load_handler(spec.handler)
        except Exception:
            print(f"[shardws worker {index}] cannot load handler {spec.handler!r}:", file=sys.stderr)
            traceback.print_exc()
            _exit(EXIT_WORKER_BOOT)
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            code = loop.run_until_complete(_serve(spec, handler, slot))
        except OSError as exc:
            print(f"[shardws worker {index}] cannot serve: {exc}", file=sys.stderr)
            code = EXIT_WORKER_BOOT
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit(code)


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
