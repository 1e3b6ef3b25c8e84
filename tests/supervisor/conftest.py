"""A supervisor in a subprocess, driven through signals and its control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shardws.cli import request

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free right now (SO_REUSEPORT groups cannot share port 0, so pick one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Supervised:
    """``python -m shardws serve APP`` in its own process group, killed at teardown.

    ``app`` is a handler of ``tests/supervisor/apps.py`` or a full ``module:attribute``.
    """

    def __init__(self, tmp_path: Path, app: str, *args: str, workers: int = 2,
                 uds: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.control = str(tmp_path / "ctl")
        self.stderr_path = tmp_path / "stderr"
        where = ["--uds", uds] if uds else ["--port", str(self.port)]
        self.command = [
            sys.executable, "-m", "shardws", "serve", app if ":" in app else f"tests.supervisor.apps:{app}",
            "--host", "127.0.0.1", *where, "--workers", str(workers),
            "--control", self.control, *args,
        ]
        self.url = f"ws://127.0.0.1:{self.port}"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env={**env(), **(extra_env or {})}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        return request(self.control, {"command": "status"}, timeout=2.0)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                 what: str = "condition") -> dict[str, Any]:
        """Poll the status until ``predicate(status)``; fail with the log after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"supervisor exited {self.proc.returncode} waiting for {what}:\n{self.stderr}")
            try:
                last = self.status()
            except (OSError, ValueError):
                last = None
            if last is not None and predicate(last):
                return last
            time.sleep(0.02)  # polling interval, bounded by the deadline
        pytest.fail(f"timeout waiting for {what}; last status {last}\n{self.stderr}")

    def wait_ready(self, n: int, exclude: set[int] = frozenset(), timeout: float = 10.0) -> list[int]:
        """Wait until exactly ``n`` workers are READY (none of them in ``exclude``); their pids."""
        status = self.wait_for(
            lambda s: sum(w["state"] == "READY" and w["pid"] not in exclude for w in s["workers"]) == n
            and len(s["workers"]) == n,
            timeout, f"{n} READY workers",
        )
        return [w["pid"] for w in status["workers"]]

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"supervisor still running after {timeout} s:\n{self.stderr}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """Factory of supervisors; every one (and its workers) is killed at teardown."""
    started: list[Supervised] = []

    def start(app: str = "echo", *args: str, **kwargs: Any) -> Supervised:
        sub = tmp_path / str(len(started))
        sub.mkdir()
        server = Supervised(sub, app, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


async def open_clients(url: str, n: int, batch: int = 50, **kwargs: Any) -> list[tuple[Any, dict]]:
    """``n`` open connections and the hello each one got (which worker holds it)."""
    clients: list[tuple[Any, dict]] = []

    async def one() -> tuple[Any, dict]:
        ws = await connect(url, open_timeout=10, ping_interval=None, **kwargs)
        return ws, json.loads(await ws.recv())

    for start in range(0, n, batch):
        clients += await asyncio.gather(*(one() for _ in range(min(batch, n - start))))
    return clients


async def close_code(ws: Any, timeout: float = 10.0) -> int | None:
    """Read until the connection closes; the close code the client saw (1006: no close frame)."""
    async def drain() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()

    await asyncio.wait_for(drain(), timeout)
    return ws.close_code
