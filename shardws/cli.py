"""The command line: ``shardws serve | status | reload | stop | scale``.

The options of ``serve`` are generated from the settings dataclasses in
``shardws/config.py`` (one flag per field, help text and default from the
field), so the CLI, ``serve()`` and ``docs/settings.md`` never disagree.
The other commands talk to a running supervisor over its control socket
(found by ``--control``, ``--pid-file`` or the default path for
``--port``/``--uds``). Exit codes: ``shardws.supervisor.EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import ServeSettings, SupervisorSettings, markdown_table, setting_fields
from .supervisor import configure_logging
from .supervisor.arbiter import (
    EXIT_ERROR,
    EXIT_USAGE,
    Supervisor,
    default_control_path,
)

__all__ = ["main", "build_parser", "format_status", "request", "settings_markdown"]

LOG_LEVELS = ("debug", "info", "warning", "error")

#: What reload / stop do when no control socket answers but a pid is known (scale has no
#: signal for "N workers": it needs the control socket).
FALLBACK_SIGNALS = {"reload": signal.SIGHUP, "stop": signal.SIGTERM}


# ------------------------------------------------------------- converters


def _converter(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """Parse a command-line string into the field's type (from its annotation)."""
    kind = str(f.type).replace(" ", "")
    optional = kind.endswith("|None")
    base = kind.removesuffix("|None")
    metavar = f.metadata.get("metavar") or ""
    choices = metavar[1:-1].split(",") if metavar.startswith("{") else None
    zero_is_none = f.metadata.get("zero_is_none", False)

    def convert(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        if choices is not None and text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        try:
            if base == "int":
                value: Any = int(text)
            elif base == "float":
                value = float(text)
            elif base.startswith("tuple["):
                return tuple(item.strip() for item in text.split(",") if item.strip())
            else:
                return text
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {base}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must not be negative")
        if zero_is_none and value == 0:
            return None
        return value

    convert.__name__ = base  # argparse names the type in its error messages
    return convert


def _add_settings(group: Any, cls: type) -> None:
    """One ``--flag`` per field of a settings dataclass; unset flags keep the dataclass default."""
    defaults = cls()
    for f in setting_fields(cls):
        default = getattr(defaults, f.name)
        if f.name == "workers":
            shown = "CPU count"
        elif isinstance(default, tuple):
            shown = ",".join(default)
        else:
            shown = "none" if default is None else str(default)
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_converter(f),
            default=argparse.SUPPRESS,
            metavar=f.metadata.get("metavar") or f.name.upper(),
            help=f.metadata["help"] if "default" in f.metadata["help"]
            else f"{f.metadata['help']} (default: {shown})",
        )


def _settings(cls: type, args: argparse.Namespace) -> Any:
    values = {f.name: getattr(args, f.name) for f in setting_fields(cls) if hasattr(args, f.name)}
    return cls(**values)


# ---------------------------------------------------------------- parser


def _add_locator(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("which supervisor")
    where.add_argument("--control", metavar="PATH",
                       help="control socket of the supervisor (default: from --port / --uds)")
    where.add_argument("--pid-file", metavar="PATH", help="pid file the supervisor wrote")
    where.add_argument("--port", type=int, default=8000, help="port it serves (default: 8000)")
    where.add_argument("--uds", metavar="PATH", help="Unix socket it serves")


def build_parser() -> argparse.ArgumentParser:
    """The ``shardws`` argument parser (``serve`` flags generated from ``shardws.config``)."""
    parser = argparse.ArgumentParser(
        prog="shardws",
        description="Serve a WebSocket application on every core, and manage it.",
        epilog="Signals and exit codes: docs/operations.md",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"shardws {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve MODULE:HANDLER with forked workers",
        description="Serve the coroutine MODULE:HANDLER (e.g. examples.app:handler) on every core: "
        "a supervisor forks --workers processes, each with its own SO_REUSEPORT socket. "
        "SIGTERM/SIGINT stop gracefully (1001), SIGHUP restarts the workers one by one (1012), "
        "SIGTTIN/SIGTTOU add/remove a worker.",
    )
    serve.add_argument("app", metavar="MODULE:HANDLER", help="the connection handler to serve")
    address = serve.add_argument_group("address")
    address.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    address.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks one)")
    address.add_argument("--uds", metavar="PATH", help="listen on this Unix socket instead of TCP")
    address.add_argument("--ssl-certfile", metavar="PATH", help="TLS certificate chain (PEM): serve wss://")
    address.add_argument("--ssl-keyfile", metavar="PATH", help="TLS private key (PEM)")
    address.add_argument("--control", metavar="PATH",
                         help="control socket for `shardws status` etc. "
                         "(default: $XDG_RUNTIME_DIR/shardws-PORT.ctl, else /tmp/...; 'none': no control socket)")
    _add_settings(serve.add_argument_group("supervisor"), SupervisorSettings)
    _add_settings(serve.add_argument_group("connections (serve() options)"), ServeSettings)

    status = commands.add_parser("status", help="one row per worker of a running supervisor")
    status.add_argument("--json", action="store_true", help="print JSON for machines")
    status.add_argument("--interval", type=float, default=0.2, metavar="SECONDS",
                        help="CPU %% sampling interval (default: 0.2)")
    _add_locator(status)
    for name, text in (("reload", "rolling restart, like SIGHUP"),
                       ("stop", "graceful stop, like SIGTERM")):
        _add_locator(commands.add_parser(name, help=text))
    scale = commands.add_parser("scale", help="set the number of workers (like SIGTTIN/SIGTTOU)")
    scale.add_argument("workers", type=int, metavar="N")
    _add_locator(scale)
    return parser


def settings_markdown() -> str:
    """``docs/settings.md``: the address flags of ``shardws serve`` and the settings tables.

    Regenerate with ``python -c "import shardws.cli as c; print(c.settings_markdown(), end='')"
    > docs/settings.md`` (a test checks the file is up to date).
    """
    parser = build_parser()
    serve = next(
        a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["serve"]
    address = next(g for g in serve._action_groups if g.title == "address")
    rows = ["| CLI flag | meaning |", "| --- | --- |"]
    for action in address._group_actions:
        flag = action.option_strings[0] + (f" {action.metavar}" if action.metavar else "")
        rows.append(f"| `{flag}` | {action.help} |")
    return "\n".join([
        "# Settings",
        "",
        "Generated from `shardws/config.py` and `shardws/cli.py` by",
        "`shardws.cli.settings_markdown()`: `serve()`, `shardws.run()`, `shardws serve`",
        "and this page read the same dataclasses. Every option is a `serve()` /",
        "`shardws.run()` keyword argument and a `shardws serve` flag. On the command",
        "line, `none` means None for optional values and lists are comma-separated.",
        "",
        "## address (shardws serve, shardws.run)",
        "",
        *rows,
        "",
        "## supervisor options",
        "",
        markdown_table(SupervisorSettings),
        "",
        "## serve() options",
        "",
        markdown_table(ServeSettings),
        "",
    ])


# ----------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    if args.ssl_keyfile and not args.ssl_certfile:
        print("shardws: --ssl-keyfile needs --ssl-certfile", file=sys.stderr)
        return EXIT_USAGE
    try:
        serve_settings = _settings(ServeSettings, args)
        settings = _settings(SupervisorSettings, args)
    except (TypeError, ValueError) as exc:
        print(f"shardws: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if settings.log_level not in LOG_LEVELS:
        print(f"shardws: --log-level: choose from {', '.join(LOG_LEVELS)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    if os.getcwd() not in sys.path:  # like `python -m`: serve modules of the current directory
        sys.path.insert(0, os.getcwd())
    control = args.control
    if control is None:
        control = ""  # the default path
    elif control.lower() == "none":
        control = None
    supervisor = Supervisor(
        args.app, host=args.host, port=args.port, uds=args.uds,
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
        serve_settings=serve_settings, settings=settings, control=control,
    )
    return supervisor.run()


# ------------------------------------------------------- control clients


def _control_path(args: argparse.Namespace) -> tuple[str, int | None]:
    """The control socket path and the supervisor pid (when a pid file says it)."""
    pid = None
    if args.pid_file:
        with open(args.pid_file) as f:
            pid = int(f.read().split()[0])
    if args.control:
        return args.control, pid
    if pid is not None:  # the Unix socket of that process which answers a status request
        import psutil

        try:
            paths = [c.laddr for c in psutil.Process(pid).net_connections(kind="unix")
                     if isinstance(c.laddr, str) and c.laddr]
        except psutil.Error:
            paths = []
        for path in sorted(paths, key=lambda p: not p.endswith(".ctl")):
            try:
                if request(path, {"command": "status"}, timeout=1.0).get("ok"):
                    return path, pid
            except (OSError, ValueError):
                continue
    return default_control_path(args.port, args.uds), pid


def request(path: str, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one control request to the supervisor at ``path``; its JSON reply.

    Raises ``OSError`` when nothing answers there.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def _process_stats(rows: list[dict[str, Any]], interval: float) -> None:
    """Add ``rss`` (bytes) and ``cpu_percent`` to each worker row (psutil)."""
    import psutil

    processes = {}
    for row in rows:
        row["rss"], row["cpu_percent"] = None, None
        try:
            process = psutil.Process(row["pid"])
            process.cpu_percent(None)
            processes[row["pid"]] = process
        except psutil.Error:
            pass
    if processes and interval > 0:
        time.sleep(interval)  # the CPU sampling window, not a synchronisation
    for row in rows:
        process = processes.get(row["pid"])
        if process is None:
            continue
        try:
            row["cpu_percent"] = process.cpu_percent(None)
            row["rss"] = process.memory_info().rss
        except psutil.Error:
            pass


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


STATUS_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("ID", lambda r: str(r["id"])),
    ("PID", lambda r: str(r["pid"])),
    ("GEN", lambda r: str(r["generation"])),
    ("STATE", lambda r: r["state"]),
    ("UPTIME", lambda r: f"{r['uptime']:.1f}s"),
    ("CONNS", lambda r: str(r["connections"])),
    ("MSG_IN", lambda r: str(r["messages_in"])),
    ("MSG_OUT", lambda r: str(r["messages_out"])),
    ("DROPS", lambda r: str(r["bus_drops"])),
    ("RSS", lambda r: _size(r.get("rss"))),
    ("CPU%", lambda r: "-" if r.get("cpu_percent") is None else f"{r['cpu_percent']:.1f}"),
    ("HEARTBEAT", lambda r: f"{r['heartbeat_age']:.1f}s ago"),
]


def format_status(reply: dict[str, Any]) -> str:
    """The human table of a status reply: a summary line, then one row per worker."""
    sup = reply["supervisor"]
    lines = [
        f"shardws {sup['url']}  supervisor pid {sup['pid']}  workers {sup['workers']}  "
        f"uptime {sup['uptime']:.1f}s"
        + ("  STOPPING" if sup["stopping"] else "")
        + ("  RELOADING" if sup["reloading"] else "")
    ]
    table = [[name for name, _ in STATUS_COLUMNS]]
    table += [[cell(row) for _, cell in STATUS_COLUMNS] for row in reply["workers"]]
    widths = [max(len(r[i]) for r in table) for i in range(len(STATUS_COLUMNS))]
    for r in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _control(args: argparse.Namespace) -> int:
    path, pid = _control_path(args)
    message: dict[str, Any] = {"command": args.command}
    if args.command == "scale":
        message["workers"] = args.workers
    try:
        reply = request(path, message)
    except OSError as exc:
        if pid is not None and args.command in FALLBACK_SIGNALS:
            os.kill(pid, FALLBACK_SIGNALS[args.command])
            print(f"sent {FALLBACK_SIGNALS[args.command].name} to {pid}")
            return 0
        print(f"shardws: no supervisor answers on {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    if not reply.get("ok"):
        print(f"shardws: {reply.get('error')}", file=sys.stderr)
        return EXIT_ERROR
    if args.command == "status":
        _process_stats(reply["workers"], args.interval)
        print(json.dumps(reply, indent=2) if args.json else format_status(reply))
    else:
        print(reply.get("message", "ok"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``shardws`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _control(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
