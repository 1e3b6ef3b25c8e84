"""The supervisor (arbiter): forks workers, watches them, restarts them.

One process, no event loop (DESIGN.md pitfalls): a ``select`` loop woken by
a self-pipe (``signal.set_wakeup_fd``). Signal handlers only enqueue; the
loop acts. The lifecycle, as a table (signals and control commands map to
the same actions):

| event              | action       | supervisor does                                                |
| ------------------ | ------------ | -------------------------------------------------------------- |
| start              | -            | check the address binds (else exit 3), create the worker table, fork N |
| SIGCHLD            | ``reap``     | reap; respawn an unexpected exit with capped exponential backoff |
| SIGTERM / SIGINT   | ``stop``     | DRAINING in the table, SIGTERM every worker (1001), SIGKILL at the graceful deadline |
| SIGQUIT, 2nd stop  | ``quit``     | SIGKILL every worker, exit                                      |
| SIGHUP             | ``reload``   | one at a time: fork a new worker, wait for READY, SIGHUP the old (1012) |
| SIGTTIN / SIGTTOU  | ``scale_up`` / ``scale_down`` | one worker more (up to ``--max-workers``) / fewer (the newest drains with 1001) |
| heartbeat too old  | -            | SIGKILL the worker; it is reaped and replaced                   |
| boot keeps failing | -            | stop, exit 4                                                    |

Exit codes: :data:`EXIT_CODES`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import signal
import socket
import ssl
import stat
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import bus
from ..bus.table import WorkerState, WorkerTable
from ..config import ServeSettings, SupervisorSettings, worker_limit, worker_slots
from .worker import WorkerSpec, tls_context, worker_main

__all__ = [
    "Supervisor",
    "AddressInUse",
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_ADDRESS_IN_USE",
    "EXIT_BOOT_FAILURE",
    "EXIT_UNCLEAN",
    "EXIT_CODES",
    "default_control_path",
]

log = logging.getLogger("shardws.supervisor")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ADDRESS_IN_USE = 3
EXIT_BOOT_FAILURE = 4
EXIT_UNCLEAN = 5

#: Exit codes of ``shardws serve`` / ``shardws.run`` (docs/operations.md).
EXIT_CODES = {
    EXIT_OK: "clean shutdown: every worker drained within the graceful timeout",
    EXIT_ERROR: "unexpected error",
    EXIT_USAGE: "bad command line or settings",
    EXIT_ADDRESS_IN_USE: "the address is in use (checked before forking)",
    EXIT_BOOT_FAILURE: "workers keep failing at boot (handler import, bind, serve)",
    EXIT_UNCLEAN: "stopped, but some worker had to be killed at the graceful deadline",
}

SIGNAL_ACTIONS: dict[int, str] = {
    signal.SIGCHLD: "reap",
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop",
    signal.SIGQUIT: "quit",
    signal.SIGHUP: "reload",
    signal.SIGTTIN: "scale_up",
    signal.SIGTTOU: "scale_down",
}

#: Backoff before respawning: 0.1 s doubling, at most this many seconds.
BACKOFF_CAP = 5.0
#: Unexpected exits closer together than this count as a crash streak.
CRASH_WINDOW = 10.0
#: A worker that exits before READY this many times in a row stops the supervisor.
MAX_BOOT_FAILURES = 5


class AddressInUse(OSError):
    """The address to serve on is already taken."""


def default_control_path(port: int | None = None, uds: str | None = None) -> str:
    """Where the control socket lives unless ``--control`` says otherwise."""
    if uds:
        return uds + ".ctl"
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"shardws-{port}.ctl")


@dataclass
class Worker:
    """The supervisor's record of one worker process."""

    index: int
    pid: int
    spawned_at: float
    ready_at: float | None = None
    drain_deadline: float | None = None  # set once told to drain: its exit is expected
    killed: str | None = None  # why the supervisor SIGKILLed it

    @property
    def draining(self) -> bool:
        return self.drain_deadline is not None


class Supervisor:
    """Serve ``handler`` from ``workers`` forked processes until told to stop.

    ``handler`` is a coroutine function or ``"module:attribute"`` (imported
    in each worker after the fork, so a rolling restart loads new code).
    :meth:`run` blocks and returns an exit code (:data:`EXIT_CODES`).
    Not thread-safe; call :meth:`run` from the main thread.
    """

    def __init__(
        self,
        handler: Callable[..., Any] | str,
        *,
        host: str | None = "127.0.0.1",
        port: int = 8000,
        uds: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        serve_settings: ServeSettings | None = None,
        settings: SupervisorSettings | None = None,
        control: str | None = "",
        extra_serve_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.uds = uds
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.serve_settings = serve_settings or ServeSettings()
        self.settings = settings or SupervisorSettings()
        # "" -> the default path, None -> no control socket.
        self.control_path = default_control_path(port, uds) if control == "" else control
        self.extra_serve_kwargs = dict(extra_serve_kwargs or {})

        self.target = max(1, self.settings.workers)
        # Scale cap and table slots (one bus ring each): config.worker_limit / worker_slots.
        self.max_workers = worker_limit(self.settings)
        self.capacity = worker_slots(self.settings)
        self._slot_wait_logged = False
        self.workers: dict[int, Worker] = {}
        self.actions: deque[str] = deque()
        self.table: WorkerTable | None = None
        self.spec: WorkerSpec | None = None
        self.started_at = time.monotonic()
        self.exit_code: int | None = None
        self.stopping = False
        self.quitting = False  # an immediate stop was asked for: killed workers are expected
        self.stop_deadline = 0.0
        self.unclean: list[str] = []
        self.boot_failures = 0
        self.boot_exhausted = False
        self.crashes: deque[float] = deque()
        self.next_spawn_at = 0.0
        self.reload_queue: list[int] = []
        self.reload_pair: tuple[int, int] | None = None  # (new pid, old pid)
        self.reload_failures = 0
        self.reloading = False
        self.reload_started = 0.0
        self._pipe: tuple[int, int] | None = None
        self._control: socket.socket | None = None
        self._clients: dict[int, tuple[socket.socket, bytearray]] = {}
        self._uds_socket: socket.socket | None = None
        self._old_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------ start

    @property
    def url(self) -> str:
        if self.uds:
            return f"ws+unix://{self.uds}"
        scheme = "wss" if self.ssl_certfile else "ws"
        host = self.host or "0.0.0.0"
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    def check_address(self) -> WorkerSpec:
        """Bind a probe socket (then close it) and build the worker spec.

        Raises :class:`AddressInUse`. The probe does not set SO_REUSEPORT
        (it must not join another server's group) and is closed before any
        fork: the supervisor never holds a listening socket of the group.
        """
        serve_kwargs = self.serve_settings.serve_kwargs()
        backlog = serve_kwargs.pop("backlog", 2048)
        serve_kwargs.update(self.extra_serve_kwargs)
        spec = WorkerSpec(
            handler=self.handler,
            serve_kwargs=serve_kwargs,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
            backlog=backlog,
            heartbeat_interval=min(1.0, self.settings.heartbeat_timeout / 4),
        )
        if self.uds:
            spec.uds_socket = self._bind_uds(self.uds, backlog)
            return spec
        infos = socket.getaddrinfo(
            self.host or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = infos[0]
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
            bound = probe.getsockname()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(exc.errno, self._where()) from None
            raise
        finally:
            probe.close()
        if self.port == 0:  # one free port for the whole group
            self.port = bound[1]
            address = (address[0], self.port, *address[2:])
            if self.control_path == default_control_path(0, None):
                self.control_path = default_control_path(self.port, None)
        spec.family, spec.address = family, address
        return spec

    def _where(self) -> str:
        return self.uds if self.uds else f"{self.host or '0.0.0.0'}:{self.port}"

    def _bind_uds(self, path: str, backlog: int) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    try:
                        probe.connect(path)
                    except OSError:
                        os.unlink(path)  # stale: nobody accepts there
                    else:
                        raise AddressInUse(errno.EADDRINUSE, path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(exc.errno, path) from None
            raise
        sock.listen(backlog)
        sock.setblocking(False)
        self._uds_socket = sock
        return sock

    # ------------------------------------------------------------- run

    def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        try:
            self.spec = self.check_address()
        except AddressInUse:
            print(f"shardws: cannot listen on {self._where()}: address already in use", file=sys.stderr)
            return EXIT_ADDRESS_IN_USE
        except OSError as exc:  # EACCES, EADDRNOTAVAIL, unknown host, ...
            print(f"shardws: cannot listen on {self._where()}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
        if self.ssl_certfile:  # fail before forking, with one line
            try:
                tls_context(self.ssl_certfile, self.ssl_keyfile)
            except (OSError, ssl.SSLError) as exc:
                print(f"shardws: cannot load the TLS certificate: {exc}", file=sys.stderr)
                self._close_uds()
                return EXIT_USAGE
        bus_size = self.settings.bus_size
        self.table = WorkerTable.create(
            self.capacity, supervisor_pid=os.getpid(), extra=bus.extra_size(self.capacity, bus_size)
        )
        bus.prepare(self.table, bus_size)  # rings + eventfds, inherited by every worker
        try:
            self._setup_signals()
            self._setup_control()
            self._write_pid_file()
            log.info(
                "serving %s with %d worker%s (supervisor pid %d)",
                self.url, self.target, "" if self.target == 1 else "s", os.getpid(),
            )
            log.info(
                "worker limit %d: %d slots, %.1f MiB of shared memory mapped for the bus",
                self.max_workers, self.capacity, len(self.table.buffer) / 2**20,
            )
            while self.exit_code is None:
                self._loop_once()
        finally:
            self._cleanup()
        return self.exit_code

    def _setup_signals(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        signal.set_wakeup_fd(write_fd)
        for signum in SIGNAL_ACTIONS:
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Signal handlers only enqueue; the loop acts.
        self.actions.append(SIGNAL_ACTIONS[signum])

    def _setup_control(self) -> None:
        path = self.control_path
        if not path:
            return
        with contextlib.suppress(FileNotFoundError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)
            else:
                log.warning("another supervisor answers on %s: no control socket", path)
                self.control_path = None
                return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            log.warning("no control socket at %s: %s", path, exc)
            self.control_path = None
            return
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self._control = sock

    def _write_pid_file(self) -> None:
        if self.settings.pid_file:
            with open(self.settings.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")

    def _cleanup(self) -> None:
        for pid in list(self.workers):  # only after an internal error: no orphans
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        bus.release()  # the eventfds of the bus, opened by bus.prepare() in run()
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(-1)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        for sock, _ in self._clients.values():
            sock.close()
        self._clients.clear()
        if self._control is not None:
            self._control.close()
            self._control = None
            with contextlib.suppress(OSError):
                os.unlink(self.control_path or "")
        self._close_uds()
        pid_file = self.settings.pid_file
        if pid_file:
            with contextlib.suppress(OSError):
                with open(pid_file) as f:
                    mine = f.read().strip() == str(os.getpid())
                if mine:
                    os.unlink(pid_file)

    def _close_uds(self) -> None:
        if self._uds_socket is not None:
            self._uds_socket.close()
            self._uds_socket = None
            with contextlib.suppress(OSError):
                os.unlink(self.uds or "")

    def _busy(self) -> bool:
        """Something is changing: poll the table often."""
        return bool(
            self.stopping
            or self.reloading
            or any(w.ready_at is None for w in self.workers.values())
            or len(self._active()) != self.target
        )

    def _loop_once(self) -> None:
        readers: list[Any] = []
        if self._pipe is not None:
            readers.append(self._pipe[0])
        if self._control is not None:
            readers.append(self._control)
        readers.extend(sock for sock, _ in self._clients.values())
        timeout = 0.02 if self._busy() else 0.25
        if not self.actions:
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                ready = []
        else:
            ready = []
        for r in ready:
            if self._pipe is not None and r == self._pipe[0]:
                with contextlib.suppress(BlockingIOError):
                    while os.read(r, 4096):
                        pass
            elif r is self._control:
                self._accept_control()
            else:
                self._read_control(r)
        while self.actions:
            self._act(self.actions.popleft())
        self._reap()
        self._tick(time.monotonic())

    # ---------------------------------------------------------- actions

    def _act(self, action: str) -> None:
        if action == "reap":
            self._reap()
        elif action == "stop":
            if self.stopping:
                log.warning("second stop request: stopping now")
                self._quit()
            else:
                self.stop()
        elif action == "quit":
            self._quit()
        elif action == "reload":
            self.reload()
        elif action == "scale_up":
            with contextlib.suppress(ValueError):  # at the limit: logged by scale()
                self.scale(self.target + 1)
        elif action == "scale_down":
            self.scale(self.target - 1)

    def stop(self) -> None:
        """Graceful stop: every worker drains with 1001; SIGKILL at the deadline."""
        if self.stopping:
            return
        now = time.monotonic()
        self.stopping = True
        self.stop_deadline = now + self.settings.graceful_timeout
        self.reload_queue.clear()
        self.reload_pair = None
        self.reloading = False
        log.info(
            "stopping %d worker%s (graceful timeout %.1f s)",
            len(self.workers), "" if len(self.workers) == 1 else "s", self.settings.graceful_timeout,
        )
        for worker in self.workers.values():
            self._drain(worker, signal.SIGTERM, self.stop_deadline)

    def _quit(self) -> None:
        """Immediate stop (SIGQUIT, or a second stop request): SIGKILL every worker."""
        log.warning("immediate stop: killing %d worker%s", len(self.workers),
                    "" if len(self.workers) == 1 else "s")
        self.quitting = True
        self.stopping = True
        self.reload_queue.clear()
        self.reload_pair = None
        for worker in self.workers.values():
            if worker.drain_deadline is None:
                worker.drain_deadline = time.monotonic()
            worker.killed = worker.killed or "immediate stop"
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def reload(self) -> None:
        """Rolling restart: replace every current worker, one at a time."""
        if self.stopping:
            return
        self.reload_queue = [w.pid for w in self._active() if w.pid != self._reload_new()]
        self.reload_failures = 0
        self.reloading = True
        self.reload_started = time.monotonic()
        log.info("rolling restart of %d worker%s", len(self.reload_queue),
                 "" if len(self.reload_queue) == 1 else "s")

    def scale(self, n: int) -> str:
        """Set the number of workers (at least 1); returns what it did.

        Raises ``ValueError`` (and logs a warning) above ``max_workers``: the
        worker table and the bus rings were mapped for that many before the
        first fork and cannot grow; the workers stay as they are.
        """
        if n > self.max_workers:
            message = (
                f"cannot scale to {n} workers: the limit is {self.max_workers} "
                f"(--max-workers; the bus rings are mapped at start)"
            )
            log.warning("%s; staying at %d", message, self.target)
            raise ValueError(message)
        n = max(1, n)
        if not self.stopping:
            log.info("workers: %d -> %d", self.target, n)
            self.target = n
        return f"workers: {self.target}"

    def _drain(self, worker: Worker, signum: int, deadline: float) -> None:
        if worker.drain_deadline is not None:  # already draining: keep the earlier deadline
            worker.drain_deadline = min(worker.drain_deadline, deadline)
            return
        worker.drain_deadline = deadline
        assert self.table is not None
        slot = self.table.slot(worker.index)
        if slot.pid == worker.pid and slot.state in (WorkerState.BOOTING, WorkerState.READY):
            slot.state = WorkerState.DRAINING
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)

    def _kill(self, worker: Worker, reason: str) -> None:
        if worker.killed:
            return
        worker.killed = reason
        log.error("worker %d (pid %d) %s: killed", worker.index, worker.pid, reason)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    # ------------------------------------------------------------- fork

    def _active(self) -> list[Worker]:
        """Workers that serve or will serve: not draining, not the reload's newcomer."""
        new = self._reload_new()
        return [w for w in self.workers.values() if not w.draining and w.pid != new]

    def _reload_new(self) -> int | None:
        return self.reload_pair[0] if self.reload_pair else None

    def _free_slot(self) -> int | None:
        used = {w.index for w in self.workers.values()}
        for index in range(self.capacity):
            if index not in used:
                return index
        return None

    def _spawn(self) -> Worker | None:
        index = self._free_slot()
        if index is None:
            # Every slot hosts a worker, some draining: wait until one exits.
            if not self._slot_wait_logged:
                self._slot_wait_logged = True
                log.info("all %d worker slots in use: waiting for a draining worker to exit",
                         self.capacity)
            return None
        self._slot_wait_logged = False
        assert self.table is not None and self.spec is not None
        slot = self.table.slot(index)
        now = time.monotonic()
        slot.claim(0, now)
        handled = set(SIGNAL_ACTIONS)
        # Block signals across the fork: the child resets its handlers first,
        # then unblocks, so a signal sent during the fork is neither lost nor
        # handled by the supervisor's handlers in the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                self._become_worker(index, handled)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        slot.pid = pid
        worker = Worker(index=index, pid=pid, spawned_at=now)
        self.workers[pid] = worker
        log.debug("worker %d (pid %d) spawned", index, pid)
        return worker

    def _become_worker(self, index: int, handled: set[int]) -> None:  # pragma: no cover
        try:
            signal.set_wakeup_fd(-1)
            for signum in handled:
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if self._pipe is not None:
                for fd in self._pipe:
                    os.close(fd)
            if self._control is not None:
                self._control.close()
            for sock, _ in self._clients.values():
                sock.close()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
            assert self.spec is not None and self.table is not None
        except BaseException:
            os._exit(1)
        worker_main(self.spec, self.table, index)

    def _reap(self) -> None:
        # Only our workers: waitpid(-1) would steal the exit status of other
        # children of an application that calls shardws.run().
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == pid:
                worker = self.workers.pop(pid)
                self._exited(worker, os.waitstatus_to_exitcode(status), time.monotonic())

    def _exited(self, worker: Worker, code: int, now: float) -> None:
        assert self.table is not None
        slot = self.table.slot(worker.index)
        if slot.pid in (worker.pid, 0):
            slot.state = WorkerState.EXITED
            slot.connections = 0
        how = f"exit code {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        if worker.draining:
            if worker.killed and self.stopping and not self.quitting:
                self.unclean.append(f"worker {worker.index} (pid {worker.pid}): {worker.killed}")
            elif code not in (0, -signal.SIGTERM):
                log.warning("worker %d (pid %d) stopped with %s", worker.index, worker.pid, how)
            else:
                log.info("worker %d (pid %d) stopped", worker.index, worker.pid)
            return
        if self.stopping:
            return
        reload_new = self._reload_new()
        if worker.ready_at is None:
            if worker.pid == reload_new:
                assert self.reload_pair is not None
                self.reload_queue.insert(0, self.reload_pair[1])
                self.reload_pair = None
                self.reload_failures += 1
                log.error("new worker %d (pid %d) failed to boot (%s)", worker.index, worker.pid, how)
                if self.reload_failures >= MAX_BOOT_FAILURES:
                    log.error("rolling restart aborted: new workers fail to boot; the old ones keep serving")
                    self.reload_queue.clear()
                    self.reloading = False
                delay = min(BACKOFF_CAP, 0.1 * 2 ** (self.reload_failures - 1))
            else:
                self.boot_failures += 1
                log.error(
                    "worker %d (pid %d) failed to boot (%s) [%d/%d]",
                    worker.index, worker.pid, how, self.boot_failures, MAX_BOOT_FAILURES,
                )
                if self.boot_failures >= MAX_BOOT_FAILURES:
                    log.error("workers keep failing at boot: giving up")
                    self.boot_exhausted = True
                    self.stop()
                    return
                delay = min(BACKOFF_CAP, 0.1 * 2 ** (self.boot_failures - 1))
        else:
            if self.reload_pair is not None and worker.pid == self.reload_pair[1]:
                self.reload_pair = None  # the worker it replaces is gone: nothing to drain
            self.crashes.append(now)
            while self.crashes and self.crashes[0] < now - CRASH_WINDOW:
                self.crashes.popleft()
            streak = len(self.crashes)
            delay = 0.0 if streak <= 1 else min(BACKOFF_CAP, 0.1 * 2 ** (streak - 2))
            log.warning(
                "worker %d (pid %d) died (%s) after %.1f s; respawning in %.1f s",
                worker.index, worker.pid, worker.killed or how, now - worker.spawned_at, delay,
            )
        self.next_spawn_at = max(self.next_spawn_at, now + delay)

    # ------------------------------------------------------------- tick

    def _tick(self, now: float) -> None:
        assert self.table is not None
        timeout = self.settings.heartbeat_timeout
        boot_timeout = max(30.0, timeout)
        for worker in list(self.workers.values()):
            slot = self.table.slot(worker.index)
            if worker.ready_at is None and slot.state in (WorkerState.READY, WorkerState.DRAINING) \
                    and slot.ready_at > 0:
                worker.ready_at = now
                self.boot_failures = 0
                log.info("worker %d (pid %d) ready in %.3f s", worker.index, worker.pid,
                         slot.ready_at - worker.spawned_at)
            if worker.killed:
                continue
            if worker.ready_at is not None:
                age = now - slot.heartbeat
                if age > timeout:
                    self._kill(worker, f"sent no heartbeat for {age:.1f} s (timeout {timeout:g} s)")
                    continue
            elif now - worker.spawned_at > boot_timeout:
                self._kill(worker, f"did not boot within {boot_timeout:g} s")
                continue
            if worker.drain_deadline is not None and now > worker.drain_deadline:
                self._kill(
                    worker,
                    f"did not finish within the graceful timeout ({self.settings.graceful_timeout:g} s)"
                    f" with {slot.connections} connection(s) open",
                )
        if self.stopping:
            if not self.workers:
                self._finish()
            return
        self._advance_reload(now)
        self._reconcile(now)

    def _finish(self) -> None:
        for line in self.unclean:
            log.error("unclean shutdown: %s", line)
        if self.boot_exhausted:
            self.exit_code = EXIT_BOOT_FAILURE
        elif self.unclean:
            self.exit_code = EXIT_UNCLEAN
        else:
            log.info("stopped cleanly")
            self.exit_code = EXIT_OK

    def _advance_reload(self, now: float) -> None:
        if self.reload_pair is not None:
            new_pid, old_pid = self.reload_pair
            new = self.workers.get(new_pid)
            if new is None:  # died after READY, before the old one was told: start over
                self.reload_queue.insert(0, old_pid)
                self.reload_pair = None
                return
            if new.ready_at is None:
                return
            old = self.workers.get(old_pid)
            if old is not None and not old.draining:
                log.info("worker %d (pid %d) replaced by worker %d (pid %d)",
                         old.index, old.pid, new.index, new.pid)
                self._drain(old, signal.SIGHUP, now + self.settings.graceful_timeout)
            self.reload_pair = None
        while self.reload_queue:
            old = self.workers.get(self.reload_queue[0])
            if old is None or old.draining:
                self.reload_queue.pop(0)
                continue
            if now < self.next_spawn_at:
                return
            new = self._spawn()
            if new is None:
                return
            self.reload_pair = (new.pid, old.pid)
            self.reload_queue.pop(0)
            return
        if self.reloading:
            self.reloading = False
            log.info("rolling restart done in %.2f s", now - self.reload_started)

    def _reconcile(self, now: float) -> None:
        active = self._active()
        missing = self.target - len(active)
        if missing > 0 and now >= self.next_spawn_at:
            for _ in range(missing):
                if self._spawn() is None:
                    break
        elif missing < 0 and not self.reloading:
            newest = sorted(active, key=lambda w: w.spawned_at, reverse=True)[:-missing]
            for worker in newest:
                log.info("worker %d (pid %d) retired", worker.index, worker.pid)
                self._drain(worker, signal.SIGTERM, now + self.settings.graceful_timeout)

    # ---------------------------------------------------------- control

    def _accept_control(self) -> None:
        assert self._control is not None
        try:
            sock, _ = self._control.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self._clients[sock.fileno()] = (sock, bytearray())

    def _read_control(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        _, buffer = self._clients[fd]
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        buffer += data
        if b"\n" not in buffer and data and len(buffer) < 65536:
            return
        del self._clients[fd]
        try:
            request = json.loads(bytes(buffer).split(b"\n", 1)[0] or b"{}")
            reply = self.command(request)
        # A malformed request must never stop the supervisor: not JSON, not an
        # object, a missing field, nested past the parser's recursion limit.
        except (ValueError, TypeError, AttributeError, LookupError, RecursionError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)
            sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        finally:
            sock.close()

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one control request: ``{"command": "status" | "reload" | "stop" | "scale", ...}``."""
        name = request.get("command")
        if name == "status":
            return {"ok": True, **self.status()}
        if name == "reload":
            self.actions.append("reload")
            return {"ok": True, "message": "rolling restart started"}
        if name == "stop":
            self.actions.append("stop")
            return {"ok": True, "message": "stopping"}
        if name == "quit":
            self.actions.append("quit")
            return {"ok": True, "message": "stopping now"}
        if name == "scale":
            try:
                return {"ok": True, "message": self.scale(int(request["workers"]))}
            except ValueError as exc:
                return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown command {name!r}"}

    def status(self) -> dict[str, Any]:
        """The supervisor and every live worker's slot, with ages in seconds."""
        assert self.table is not None
        now = time.monotonic()
        rows = []
        for worker in sorted(self.workers.values(), key=lambda w: w.index):
            row = self.table.slot(worker.index).snapshot()
            row["pid"] = worker.pid
            row["uptime"] = round(now - row["started_at"], 3)
            row["heartbeat_age"] = round(now - row["heartbeat"], 3)
            rows.append(row)
        return {
            "supervisor": {
                "pid": os.getpid(),
                "url": self.url,
                "workers": self.target,
                "max_workers": self.max_workers,
                "uptime": round(now - self.started_at, 3),
                "stopping": self.stopping,
                "reloading": self.reloading,
                "heartbeat_timeout": self.settings.heartbeat_timeout,
                "graceful_timeout": self.settings.graceful_timeout,
            },
            "workers": rows,
        }
