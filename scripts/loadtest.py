"""`make loadtest`: locust against `shardws serve` running the demo app, with reports and a verdict.

    python scripts/loadtest.py [--users 500] [--spawn-rate 100] [--time 60s]
        [--scenario echo|chat|churn|mix] [--workers N] [--max-p99-ms MS]
        [--reports loadtests/reports] [LOCUST OPTIONS ...]

1. starts ``shardws serve examples.app:handler`` on loopback (``--port 0``: a
   free port for the whole SO_REUSEPORT group, read back from the control
   socket), and waits until every worker is READY;
2. runs ``locust -f loadtests/locustfile.py --headless`` for ``--time``,
   printing one progress line every ``--sample-interval`` seconds;
3. samples the worker table meanwhile (the data of ``shardws status --json``:
   connections, messages, bus drops, plus RSS and CPU % of each worker over
   the interval, and of the locust process, which shares the cores);
4. stops the server (SIGTERM: graceful), writes the reports and prints the
   summary.

Reports, under ``--reports`` with the scenario as prefix: locust's
``SCENARIO.html`` and ``SCENARIO_stats.csv`` / ``_failures.csv`` /
``_exceptions.csv`` / ``_stats_history.csv``, the worker samples
``SCENARIO_workers.json`` and ``SCENARIO_workers.csv``, and the logs
``SCENARIO_server.log`` and ``SCENARIO_locust.log``. Options this script does
not know are passed to locust (e.g. ``--room-size 20``, ``--think-time 0.5``).

Exit codes: 0 passed; 1 failures, no request at all, or the aggregated p99
above ``--max-p99-ms``; 2 the run itself failed (server or locust).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from shardws.cli import request  # noqa: E402

LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
EXIT_PASSED, EXIT_FAILED, EXIT_BROKEN = 0, 1, 2
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class RunError(Exception):
    """The load test could not run (the server or locust failed): exit 2."""


# --------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Other options go to locust.")
    parser.add_argument("--users", type=int, default=500, help="peak number of users (default 500)")
    parser.add_argument("--spawn-rate", type=float, default=100, help="users started per second (default 100)")
    parser.add_argument("--time", default="60s", help="run time, locust syntax: 60s, 5m, 1h30m (default 60s)")
    parser.add_argument("--scenario", default="echo", choices=["echo", "chat", "churn", "mix"],
                        help="users to run (loadtests/locustfile.py; default echo)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="shardws workers (default: the CPU count)")
    parser.add_argument("--app", default="examples.app:handler", help="MODULE:HANDLER to serve")
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--max-p99-ms", type=float, default=None,
                        help="fail when the aggregated p99 is above this many ms")
    parser.add_argument("--reports", type=Path, default=ROOT / "loadtests" / "reports",
                        help="where the reports go (default loadtests/reports)")
    parser.add_argument("--sample-interval", type=float, default=5.0,
                        help="seconds between two worker samples / progress lines (default 5)")
    return parser


# ------------------------------------------------------------------ verdict


def verdict(requests: int, failures: int, p99_ms: float | None, max_p99_ms: float | None) -> list[str]:
    """Why the run failed (empty: it passed).

    | condition | problem |
    | --- | --- |
    | no request at all | the run measured nothing |
    | any failure | failures |
    | p99 above the bound (when one is given) | too slow |
    """
    problems = []
    if requests == 0:
        problems.append("no request completed")
    if failures:
        problems.append(f"{failures} failures")
    if max_p99_ms is not None and (p99_ms is None or p99_ms > max_p99_ms):
        problems.append(f"p99 {_ms(p99_ms)} is above MAX_P99_MS={max_p99_ms:g} ms")
    return problems


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"


# ---------------------------------------------------------------- locust CSV


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None


@dataclass
class Row:
    """One row of locust's ``_stats.csv``."""

    type: str
    name: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def from_csv(cls, row: dict[str, str]) -> Row:
        return cls(row["Type"], row["Name"], int(row["Request Count"]), int(row["Failure Count"]),
                   _number(row["Requests/s"]) or 0.0, _number(row["50%"]), _number(row["95%"]),
                   _number(row["99%"]), _number(row["Max Response Time"]))


def read_stats(path: Path) -> tuple[list[Row], Row]:
    """The per-name rows and the ``Aggregated`` row of locust's ``_stats.csv``."""
    with open(path, newline="") as f:
        rows = [Row.from_csv(r) for r in csv.DictReader(f)]
    total = [r for r in rows if r.name == "Aggregated"]
    if not total:
        raise RunError(f"{path}: no Aggregated row")
    return [r for r in rows if r.name != "Aggregated"], total[-1]


def read_failures(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def last_history(path: Path) -> dict[str, str] | None:
    """The latest Aggregated row of ``_stats_history.csv`` (None before locust wrote one)."""
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except (OSError, csv.Error):
        return None
    return rows[-1] if rows else None


# ------------------------------------------------------------------- server


class Server:
    """``shardws serve`` in its own session, stopped with SIGTERM (graceful)."""

    def __init__(self, args: argparse.Namespace, control: str, log: TextIO) -> None:
        self.control = control
        self.command = [
            sys.executable, "-m", "shardws", "serve", args.app, "--host", args.host,
            "--port", str(args.port), "--workers", str(args.workers), "--control", control,
        ]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.log_path = Path(log.name)

    def status(self) -> dict[str, Any]:
        return request(self.control, {"command": "status"}, timeout=5.0)

    def wait_ready(self, workers: int, timeout: float = READY_TIMEOUT) -> str:
        """Poll the control socket until ``workers`` workers are READY; the server's URL."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                reply = self.status()
            except (OSError, ValueError):
                reply = None
            if reply and reply.get("ok"):
                rows = reply["workers"]
                if len(rows) >= workers and all(r["state"] == "READY" for r in rows):
                    return str(reply["supervisor"]["url"])
            try:
                self.proc.wait(0.1)  # poll period; wakes early if the server dies
            except subprocess.TimeoutExpired:
                pass
        raise RunError(f"the workers were not READY within {timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, wait for the graceful stop (SIGKILL to the group after STOP_TIMEOUT); exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# ------------------------------------------------------------------ samples


class Sampler:
    """Samples the worker table (``shardws status --json`` data) and the processes' RSS / CPU.

    CPU % is measured over the whole interval since the previous sample
    (``shardws status`` measures it over 0.2 s), for each worker and for the
    locust process.
    """

    def __init__(self, server: Server, loadgen_pid: int) -> None:
        self.server = server
        self.loadgen_pid = loadgen_pid
        self.started = time.monotonic()
        self.processes: dict[int, psutil.Process] = {}
        self.samples: list[dict[str, Any]] = []
        self.usage(loadgen_pid)  # start the CPU clocks

    def usage(self, pid: int) -> tuple[float | None, int | None]:
        """(CPU % since the last call for this pid, RSS bytes); None for a first call."""
        process = self.processes.get(pid)
        first = process is None
        try:
            if process is None:
                process = self.processes[pid] = psutil.Process(pid)
            cpu = process.cpu_percent(None)
            rss = process.memory_info().rss
        except psutil.Error:
            return None, None
        return (None if first else cpu), rss

    def sample(self) -> dict[str, Any]:
        try:
            reply = self.server.status()
        except (OSError, ValueError) as exc:
            reply = {"ok": False, "error": str(exc)}
        workers = []
        for row in reply.get("workers", []) if reply.get("ok") else []:
            cpu, rss = self.usage(row["pid"])
            workers.append({
                "id": row["id"], "pid": row["pid"], "state": row["state"],
                "connections": row["connections"], "messages_in": row["messages_in"],
                "messages_out": row["messages_out"], "bus_drops": row["bus_drops"],
                "rss": rss, "cpu_percent": cpu,
            })
        cpu, rss = self.usage(self.loadgen_pid)
        sample = {"t": round(time.monotonic() - self.started, 2), "workers": workers,
                  "locust": {"pid": self.loadgen_pid, "rss": rss, "cpu_percent": cpu}}
        if not reply.get("ok"):
            sample["error"] = reply.get("error")
        self.samples.append(sample)
        return sample

    def summary(self) -> list[dict[str, Any]]:
        """Per worker (and ``locust``): peak connections, mean / peak CPU %, peak RSS, last counters."""
        rows: dict[str, dict[str, Any]] = {}

        def add(key: str, item: dict[str, Any]) -> None:
            row = rows.setdefault(key, {"who": key, "pids": set(), "connections": 0, "cpu": [],
                                        "rss": 0, "messages_in": 0, "messages_out": 0, "bus_drops": 0})
            row["pids"].add(item["pid"])
            row["connections"] = max(row["connections"], item.get("connections", 0))
            if item.get("cpu_percent") is not None:
                row["cpu"].append(item["cpu_percent"])
            row["rss"] = max(row["rss"], item.get("rss") or 0)
            for counter in ("messages_in", "messages_out", "bus_drops"):
                row[counter] = item.get(counter, row[counter])

        for sample in self.samples:
            for worker in sample["workers"]:
                add(f"worker {worker['id']}", worker)
            add("locust", sample["locust"])
        out = []
        for row in rows.values():
            cpu = row.pop("cpu")
            row["pids"] = sorted(row["pids"])
            row["cpu_mean"] = round(sum(cpu) / len(cpu), 1) if cpu else None
            row["cpu_peak"] = round(max(cpu), 1) if cpu else None
            out.append(row)
        return out

    def write(self, json_path: Path, csv_path: Path, meta: dict[str, Any]) -> None:
        json_path.write_text(json.dumps(
            {**meta, "samples": self.samples, "summary": self.summary()}, indent=1) + "\n")
        with open(csv_path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["t", "who", "pid", "state", "connections", "messages_in", "messages_out",
                          "bus_drops", "rss_mib", "cpu_percent"])
            for s in self.samples:
                for w in s["workers"]:
                    out.writerow([s["t"], f"worker {w['id']}", w["pid"], w["state"], w["connections"],
                                  w["messages_in"], w["messages_out"], w["bus_drops"],
                                  _mib(w["rss"]), w["cpu_percent"]])
                loadgen = s["locust"]
                out.writerow([s["t"], "locust", loadgen["pid"], "", "", "", "", "",
                              _mib(loadgen["rss"]), loadgen["cpu_percent"]])


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:.1f}"


# -------------------------------------------------------------------- output


def progress_line(sample: dict[str, Any], history: dict[str, str] | None) -> str:
    if history is None:
        head = f"[{sample['t']:6.1f}s] starting"
    else:
        head = (f"[{sample['t']:6.1f}s] users {history['User Count']:>5}  "
                f"req/s {float(history['Requests/s']):8.1f}  "
                f"failures {history['Total Failure Count']}  p95 {history['95%']} ms")
    workers = "  ".join(
        f"w{w['id']}: {w['connections']} conn {'-' if w['cpu_percent'] is None else round(w['cpu_percent'])}% "
        f"{_mib(w['rss'])}M drops {w['bus_drops']}"
        for w in sample["workers"])
    loadgen = sample["locust"]["cpu_percent"]
    return f"{head}  | {workers}  | locust {'-' if loadgen is None else round(loadgen)}%"


def print_summary(rows: list[Row], total: Row, failures: list[dict[str, str]],
                  workers: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    def line(r: Row, name: str) -> str:
        def cell(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"
        return (f"  {name:<14} {r.requests:>9} {r.failures:>7} {r.rps:>9.1f} {cell(r.p50):>7} "
                f"{cell(r.p95):>7} {cell(r.p99):>7} {cell(r.max):>8}")

    print(f"\n  {'name':<14} {'requests':>9} {'fails':>7} {'req/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>8}", file=out)
    for r in rows:
        print(line(r, r.name), file=out)
    print(line(total, "total"), file=out)
    if failures:
        print("\n  failures:", file=out)
        for f in failures:
            print(f"    {f['Occurrences']:>7} x {f['Name']}: {f['Error']}", file=out)
    print(f"\n  {'process':<10} {'pids':<14} {'peak conns':>10} {'CPU% mean':>9} {'CPU% peak':>9} "
          f"{'peak RSS':>9} {'msgs in':>9} {'msgs out':>9} {'bus drops':>9}", file=out)
    for w in workers:
        is_worker = w["who"] != "locust"
        print(f"  {w['who']:<10} {','.join(map(str, w['pids'])):<14} "
              f"{w['connections'] if is_worker else '':>10} {_cell(w['cpu_mean']):>9} "
              f"{_cell(w['cpu_peak']):>9} {_mib(w['rss']) + 'M':>9} "
              f"{w['messages_in'] if is_worker else '':>9} {w['messages_out'] if is_worker else '':>9} "
              f"{w['bus_drops'] if is_worker else '':>9}", file=out)


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


# ---------------------------------------------------------------------- run


def run(args: argparse.Namespace, locust_args: Sequence[str]) -> int:
    reports: Path = args.reports
    reports.mkdir(parents=True, exist_ok=True)
    prefix = reports / args.scenario
    paths = {name: Path(f"{prefix}{suffix}") for name, suffix in (
        ("stats", "_stats.csv"), ("failures", "_failures.csv"), ("history", "_stats_history.csv"),
        ("html", ".html"), ("json", "_workers.json"), ("csv", "_workers.csv"),
        ("server_log", "_server.log"), ("locust_log", "_locust.log"))}
    for path in paths.values():  # never judge a previous run's files
        path.unlink(missing_ok=True)
    control_dir = tempfile.mkdtemp(prefix="shardws-loadtest-")
    locust: subprocess.Popen[bytes] | None = None
    server_log = open(paths["server_log"], "w")  # noqa: SIM115 - closed in finally
    locust_log = open(paths["locust_log"], "w")  # noqa: SIM115
    server = Server(args, os.path.join(control_dir, "ctl"), server_log)
    server_rc: int | None = None
    try:
        print(f"loadtest: {args.scenario}, {args.users} users (+{args.spawn_rate:g}/s) for {args.time}, "
              f"{args.workers} workers; server log {paths['server_log']}", flush=True)
        url = server.wait_ready(args.workers)
        print(f"loadtest: {url} ready; locust log {paths['locust_log']}", flush=True)
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", str(args.users), "-r", f"{args.spawn_rate:g}", "-t", args.time, "--host", url,
            "--csv", str(prefix), "--html", str(paths["html"]), "--scenario", args.scenario,
            "--stop-timeout", "5", *locust_args,
        ]
        locust = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=locust_log,
                                  stderr=subprocess.STDOUT)
        sampler = Sampler(server, locust.pid)
        while True:
            try:
                locust_rc = locust.wait(args.sample_interval)  # wakes at once when locust is done
                break
            except subprocess.TimeoutExpired:
                sample = sampler.sample()
                print(progress_line(sample, last_history(paths["history"])), flush=True)
        sampler.sample()  # the counters at the end
        server_rc = server.stop()
        sampler.write(paths["json"], paths["csv"], {
            "scenario": args.scenario, "users": args.users, "spawn_rate": args.spawn_rate,
            "time": args.time, "workers": args.workers, "url": url, "interval": args.sample_interval,
            "cpu_count": os.cpu_count(), "server_exit_code": server_rc,
        })
        if locust_rc not in (0, 1) or not paths["stats"].exists():  # 1: there were failures
            raise RunError(f"locust exited with {locust_rc}:\n{_tail(paths['locust_log'])}")
        rows, total = read_stats(paths["stats"])
        print_summary(rows, total, read_failures(paths["failures"]), sampler.summary())
        print(f"\n  reports: {paths['html']}, {paths['stats']}, {paths['json']}")
        problems = verdict(total.requests, total.failures, total.p99, args.max_p99_ms)
        if server_rc != 0:
            problems.append(f"the server exited with {server_rc} at the graceful stop")
        if problems:
            print("loadtest FAILED: " + "; ".join(problems))
            return EXIT_FAILED
        print(f"loadtest passed: {total.rps:.1f} req/s, p50 {_ms(total.p50)}, p95 {_ms(total.p95)}, "
              f"p99 {_ms(total.p99)}, 0 failures in {total.requests} requests")
        return EXIT_PASSED
    finally:
        if locust is not None and locust.poll() is None:
            locust.terminate()
            locust.wait()
        if server_rc is None:
            server.stop()
        server_log.close()
        locust_log.close()
        shutil.rmtree(control_dir, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    args, locust_args = build_parser().parse_known_args(argv)
    try:
        return run(args, locust_args)
    except RunError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return EXIT_BROKEN


if __name__ == "__main__":
    sys.exit(main())
