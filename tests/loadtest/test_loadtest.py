"""`make loadtest` end to end (scripts/loadtest.py: shardws serve + locust + reports), and its verdict."""

from __future__ import annotations

import csv
import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "scripts" / "loadtest.py"


def load_driver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shardws_loadtest_driver", DRIVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("requests", "failures", "p99", "bound", "problems"), [
    (100, 0, 12.0, None, []),
    (100, 0, 12.0, 12.0, []),
    (100, 0, 13.0, 12.0, ["p99 13 ms is above MAX_P99_MS=12 ms"]),
    (100, 0, None, 12.0, ["p99 n/a is above MAX_P99_MS=12 ms"]),
    (100, 3, 5.0, None, ["3 failures"]),
    (0, 0, None, None, ["no request completed"]),
    (10, 10, 900.0, 100.0, ["10 failures", "p99 900 ms is above MAX_P99_MS=100 ms"]),
])
def test_verdict(requests: int, failures: int, p99: float | None, bound: float | None,
                 problems: list[str]) -> None:
    assert load_driver().verdict(requests, failures, p99, bound) == problems


def run_driver(reports: Path, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run scripts/loadtest.py; (exit code, output). On timeout SIGINT lets it stop its server."""
    command = [sys.executable, str(DRIVER), "--reports", str(reports), "--workers", "2",
               "--sample-interval", "2", *args]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=40)
        pytest.fail(f"the load test ran past {timeout} s:\n{out}")
    return proc.returncode, out


def stats(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def test_mixed_load_test_passes_and_writes_the_reports(tmp_path: Path) -> None:
    """10 s, 50 users of all three scenarios, 2 workers: no failure, every report written."""
    rc, out = run_driver(tmp_path, "--scenario", "mix", "--users", "50", "--spawn-rate", "50",
                         "--time", "10s")
    assert rc == 0, out
    assert "loadtest passed" in out
    rows = stats(tmp_path / "mix_stats.csv")
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, out
    assert int(total["Failure Count"]) == 0, out
    # every scenario ran: echo (echo), chat (join, fan-out inside a worker and across the bus),
    # churn (connect, echo, close)
    for name in ("connect", "echo", "join", "chat fanout (same worker)", "chat fanout (other worker)",
                 "close"):
        assert int(rows[name]["Request Count"]) > 0, (name, out)
    assert (tmp_path / "mix.html").stat().st_size > 0
    report = json.loads((tmp_path / "mix_workers.json").read_text())
    assert report["workers"] == 2
    assert report["samples"], out
    peak = {row["who"]: row["connections"] for row in report["summary"]}
    assert sorted(peak) == ["locust", "worker 0", "worker 1"]
    assert sum(peak.values()) > 0
    assert all(row["bus_drops"] == 0 for row in report["summary"])


def test_a_failing_server_fails_the_load_test(tmp_path: Path) -> None:
    """Connections the server closes with 1011 are failures, with their close code; exit 1."""
    rc, out = run_driver(tmp_path, "--app", "tests.loadtest.apps:close_1011", "--users", "5",
                         "--spawn-rate", "5", "--time", "3s")
    assert rc == 1, out
    assert "loadtest FAILED" in out
    assert int(stats(tmp_path / "echo_stats.csv")["Aggregated"]["Failure Count"]) > 0
    with open(tmp_path / "echo_failures.csv", newline="") as f:
        errors = {(row["Name"], row["Error"]) for row in csv.DictReader(f)}
    assert ("connect", "ServerClosed('closed by the server: 1011 boom')") in errors, errors
