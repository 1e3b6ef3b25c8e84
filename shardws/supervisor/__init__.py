"""The multiprocess supervisor: ``shardws.run()`` and ``shardws serve``.

See ``docs/operations.md`` for signals, exit codes and rolling restarts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from .. import bus
from ..config import ServeSettings, SupervisorSettings
from .arbiter import (
    EXIT_ADDRESS_IN_USE,
    EXIT_BOOT_FAILURE,
    EXIT_CODES,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNCLEAN,
    EXIT_USAGE,
    Supervisor,
    default_control_path,
)
from .identity import current_worker
from .worker import load_handler, new_event_loop, server_api, tls_context

__all__ = [
    "run",
    "current_worker",
    "Supervisor",
    "default_control_path",
    "EXIT_CODES",
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_ADDRESS_IN_USE",
    "EXIT_BOOT_FAILURE",
    "EXIT_UNCLEAN",
    "configure_logging",
]


LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` unless the application configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


def split_options(
    options: dict[str, Any],
) -> tuple[ServeSettings, SupervisorSettings, dict[str, Any]]:
    """Sort keyword options into serve settings, supervisor settings and the rest.

    The rest (``process_request``, ``extensions``, ``logger``, ...) goes to
    ``serve()`` unchanged. Raises ``TypeError`` for a bad value type only
    when the dataclass does.
    """
    serve_names = {f.name for f in dataclasses.fields(ServeSettings)}
    supervisor_names = {f.name for f in dataclasses.fields(SupervisorSettings)}
    serve_values = {k: v for k, v in options.items() if k in serve_names}
    supervisor_values = {k: v for k, v in options.items() if k in supervisor_names}
    rest = {k: v for k, v in options.items() if k not in serve_names | supervisor_names}
    return ServeSettings(**serve_values), SupervisorSettings(**supervisor_values), rest


def run(
    handler: Callable[..., Any] | str,
    host: str | None = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int | None = None,
    uds: str | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    control: str | None = "",
    **options: Any,
) -> int:
    """Serve ``handler`` on ``workers`` processes; block until shutdown.

    ``options`` are ``serve()`` options (``max_size``, ``compression``, ...,
    also ``process_request`` and other callables: workers inherit them
    through ``fork``) and supervisor settings (``graceful_timeout``,
    ``heartbeat_timeout``, ``pid_file``). ``workers`` defaults to the CPU
    count; ``workers=1`` serves in this process, without forking (no
    heartbeat, no control socket). Stops on SIGTERM / SIGINT. Returns the
    exit code (``EXIT_CODES``): 0 after a clean shutdown, 3 when the
    address is in use, ... Call it from the main thread (it installs signal
    handlers), with no event loop running in this thread.
    """
    if workers is not None:
        options["workers"] = workers
    serve_settings, settings, rest = split_options(options)
    configure_logging(settings.log_level)
    if settings.workers == 1:
        return _run_single(load_handler(handler), host, port, uds, ssl_certfile, ssl_keyfile,
                           serve_settings, settings.bus_size, rest)
    supervisor = Supervisor(
        handler, host=host, port=port, uds=uds, ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile, serve_settings=serve_settings, settings=settings,
        control=control, extra_serve_kwargs=rest,
    )
    return supervisor.run()


def _run_single(
    handler: Callable[..., Any],
    host: str | None,
    port: int,
    uds: str | None,
    ssl_certfile: str | None,
    ssl_keyfile: str | None,
    serve_settings: ServeSettings,
    bus_size: int,
    rest: dict[str, Any],
) -> int:
    """One process, no fork: serve until SIGTERM / SIGINT, close with 1001.

    The cluster API delivers in this process, with the message size limit of
    a ``bus_size`` ring (as with forked workers).
    """
    bus.install(bus.LocalBus(bus_size=bus_size))
    serve, unix_serve = server_api()
    kwargs = {**serve_settings.serve_kwargs(), **rest}
    context = tls_context(ssl_certfile, ssl_keyfile)
    if context is not None:
        kwargs["ssl"] = context

    async def main() -> int:
        loop = asyncio.get_running_loop()
        try:
            if uds:
                kwargs.pop("backlog", None)
                server = await unix_serve(handler, uds, **kwargs)
            else:
                server = await serve(handler, host, port, **kwargs)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                where = uds or f"{host}:{port}"
                print(f"shardws: cannot listen on {where}: address already in use", file=sys.stderr)
                return EXIT_ADDRESS_IN_USE
            raise
        stop: asyncio.Future[None] = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        await stop
        server.close()
        await server.wait_closed()
        return EXIT_OK

    loop = new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
