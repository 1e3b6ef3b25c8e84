"""The one source of settings: ``serve()`` defaults, the CLI flags and the docs table.

:class:`ServeSettings` holds every ``serve()`` option that can be written on a
command line, with its default and help text. :class:`SupervisorSettings`
holds what only the multiprocess supervisor needs. ``serve()`` takes its
defaults from here, ``shardws serve --help`` is generated from here, and
``docs/settings.md`` is generated from here (``python -m shardws.config``),
so the three never disagree.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ServeSettings", "SupervisorSettings", "setting_fields", "markdown_table", "worker_limit",
    "worker_slots",
]


def _opt(
    default: Any, help: str, *, cli: bool = True, metavar: str | None = None, zero_is_none: bool = False
) -> Any:
    """A dataclass field carrying its CLI help text (``zero_is_none``: the CLI reads 0 as None)."""
    return field(
        default=default,
        metadata={"help": help, "cli": cli, "metavar": metavar, "zero_is_none": zero_is_none},
    )


@dataclass(frozen=True)
class ServeSettings:
    """Options of ``serve()`` / ``unix_serve()`` (and of every worker)."""

    compression: str | None = _opt(
        "deflate", 'permessage-deflate ("deflate") or no compression ("none")', metavar="{deflate,none}"
    )
    max_size: int | None = _opt(
        2**20, "largest incoming message in bytes (0 or none: no limit)", metavar="BYTES",
        zero_is_none=True,
    )
    max_queue: int | None = _opt(
        2**5, "incoming messages kept unread before reading from the socket pauses", metavar="N"
    )
    read_limit: int = _opt(
        2**16, "unread message bytes before reading from the socket pauses", metavar="BYTES"
    )
    write_limit: int = _opt(
        2**16, "write buffer high-water mark: send() waits and broadcast() skips above it",
        metavar="BYTES",
    )
    ping_interval: float | None = _opt(
        20.0, "seconds between keepalive pings (0 or none: no keepalive)", metavar="SECONDS",
        zero_is_none=True,
    )
    ping_timeout: float | None = _opt(
        20.0, "seconds to wait for the pong before closing with 1011", metavar="SECONDS"
    )
    close_timeout: float | None = _opt(
        10.0, "seconds to wait for the closing handshake before dropping the TCP connection",
        metavar="SECONDS",
    )
    open_timeout: float | None = _opt(
        10.0, "seconds a client has to finish the opening handshake", metavar="SECONDS"
    )
    server_header: str | None = _opt(
        None, 'value of the Server header (default "shardws/<version>"; "" omits it)', metavar="TEXT"
    )
    subprotocols: tuple[str, ...] | None = _opt(
        None, "subprotocols offered, comma-separated, in order of preference", metavar="LIST"
    )
    origins: tuple[str, ...] | None = _opt(
        None, "allowed Origin values, comma-separated (others get 403)", metavar="LIST"
    )
    backlog: int = _opt(2048, "listen() backlog", metavar="N")

    def serve_kwargs(self) -> dict[str, Any]:
        """The settings as ``serve()`` keyword arguments."""
        kwargs = dataclasses.asdict(self)
        if kwargs["server_header"] is None:
            del kwargs["server_header"]
        return kwargs


@dataclass(frozen=True)
class SupervisorSettings:
    """Options of the multiprocess supervisor (``shardws serve`` / ``shardws.run``)."""

    workers: int = _opt(os.cpu_count() or 1, "worker processes (default: CPU count)", metavar="N")
    graceful_timeout: float = _opt(
        30.0, "seconds workers get to close connections and finish handlers on shutdown",
        metavar="SECONDS",
    )
    heartbeat_timeout: float = _opt(
        10.0, "a worker whose event loop is silent this long is killed and replaced",
        metavar="SECONDS",
    )
    max_workers: int = _opt(
        0, "most workers scale / SIGTTIN may reach; the bus maps max-workers + 1 rings "
        "(0: 2 x --workers, at least --workers + 4)", metavar="N",
    )
    bus_size: int = _opt(4 * 2**20, "shared-memory ring size per worker in bytes", metavar="BYTES")
    log_level: str = _opt("info", "log level (debug, info, warning, error)", metavar="LEVEL")
    pid_file: str | None = _opt(None, "write the supervisor pid here", metavar="PATH")


def worker_limit(settings: SupervisorSettings) -> int:
    """The most workers the supervisor runs at once (``max_workers``, or derived from ``workers``).

    Never below ``workers``: 2 x workers, at least workers + 4, unless
    ``max_workers`` says otherwise.
    """
    workers = max(1, settings.workers)
    if settings.max_workers > 0:
        return max(workers, settings.max_workers)
    return max(2 * workers, workers + 4)


def worker_slots(settings: SupervisorSettings) -> int:
    """Slots of the worker table, each with a bus ring: :func:`worker_limit` + 1.

    The spare slot lets a rolling restart start the replacement before the
    old worker drains even at the limit (a freed slot is reused, and the
    replacement takes its ring over).
    """
    return worker_limit(settings) + 1


def setting_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a settings class that appear on the command line."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def markdown_table(cls: type) -> str:
    """The docs table of a settings class: flag, default, meaning."""
    rows = ["| option | CLI flag | default | meaning |", "| --- | --- | --- | --- |"]
    defaults = cls()
    for f in setting_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name == "workers":
            default = "CPU count"
        rows.append(f"| `{f.name}` | `{flag}` | `{default!r}` | {f.metadata['help']} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - docs generator
    print("## serve() options\n")
    print(markdown_table(ServeSettings))
    print("\n## supervisor options\n")
    print(markdown_table(SupervisorSettings))
