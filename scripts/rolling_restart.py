#!/usr/bin/env python3
"""Failed connection attempts during rolling restarts (SIGHUP) under a steady connect loop.

    python scripts/rolling_restart.py                  # in this network namespace
    python scripts/rolling_restart.py --migrate both   # in private namespaces, tcp_migrate_req 0 and 1

Starts ``shardws serve examples.app:handler``, runs ``--concurrency`` loops
that each connect, read the greeting and close, as fast as they can; sends
SIGHUP ``--restarts`` times (waiting each time until every worker pid is
replaced) and prints how many connection attempts succeeded and failed, by
error. ``--migrate 0|1|both`` re-runs itself in a fresh network namespace
(``unshare -n``, needs root) where it can set ``net.ipv4.tcp_migrate_req``:
with 1 the kernel moves connections waiting in a closing SO_REUSEPORT
listener's accept queue to another listener of the group instead of
resetting them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardws.cli import request  # noqa: E402

MIGRATE = "/proc/sys/net/ipv4/tcp_migrate_req"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(control: str) -> dict:
    return request(control, {"command": "status"}, timeout=2.0)


def wait_for(control: str, predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = status(control)
            if predicate(s):
                return s
        except (OSError, ValueError):
            pass
        time.sleep(0.01)  # polling with a deadline
    raise TimeoutError("supervisor did not reach the expected state")


async def measure(args: argparse.Namespace) -> dict:
    from websockets.asyncio.client import connect

    port = free_port()
    tmp = tempfile.mkdtemp(prefix="shardws-rr-")
    control = os.path.join(tmp, "ctl")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardws", "serve", "examples.app:handler", "--port", str(port),
         "--workers", str(args.workers), "--control", control, "--log-level", "warning",
         "--graceful-timeout", "10"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    counts: collections.Counter[str] = collections.Counter()
    try:
        await asyncio.to_thread(
            wait_for, control, lambda s: sum(w["state"] == "READY" for w in s["workers"]) == args.workers, 20
        )
        done = asyncio.Event()
        url = f"ws://127.0.0.1:{port}"

        async def loop() -> None:
            while not done.is_set():
                try:
                    async with connect(url, open_timeout=5, ping_interval=None) as ws:
                        await ws.recv()
                    counts["ok"] += 1
                except Exception as exc:  # every failed attempt counts
                    counts["failed"] += 1
                    counts[f"failed: {type(exc).__name__}"] += 1
                    if args.verbose:
                        print(f"failed: {type(exc).__name__}: {exc} ({exc.__cause__})", file=sys.stderr)

        tasks = [asyncio.create_task(loop()) for _ in range(args.concurrency)]
        await asyncio.sleep(args.warmup)  # steady state before the first restart
        before = counts["ok"]
        durations = []
        for _ in range(args.restarts):
            old = {w["pid"] for w in (await asyncio.to_thread(status, control))["workers"]}
            started = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(
                wait_for, control,
                lambda s, old=old: not s["supervisor"]["reloading"]
                and sum(w["state"] == "READY" and w["pid"] not in old for w in s["workers"]) == args.workers
                and not any(w["pid"] in old for w in s["workers"]),
                30,
            )
            durations.append(time.monotonic() - started)
        done.set()
        await asyncio.gather(*tasks)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with open(MIGRATE) as f:
        migrate = int(f.read())
    return {
        "tcp_migrate_req": migrate,
        "workers": args.workers,
        "restarts": args.restarts,
        "concurrency": args.concurrency,
        "attempts": counts["ok"] + counts["failed"],
        "ok": counts["ok"],
        "ok_during_restarts": counts["ok"] - before,
        "failed": counts["failed"],
        "errors": {k[8:]: v for k, v in counts.items() if k.startswith("failed: ")},
        "restart_seconds": [round(d, 3) for d in durations],
    }


def in_namespace(value: int, argv: list[str]) -> dict:
    """Run this script in a fresh network namespace with tcp_migrate_req = value."""
    script = (
        f"ip link set lo up && echo {value} > {MIGRATE} && "
        f"exec {sys.executable} {Path(__file__).resolve()} --json --migrate current "
        + " ".join(argv)
    )
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"namespace run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="parallel connect loops")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--migrate", choices=["current", "0", "1", "both"], default="current")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print each failed attempt")
    args = parser.parse_args()
    passthrough = [f"--workers={args.workers}", f"--restarts={args.restarts}",
                   f"--concurrency={args.concurrency}", f"--warmup={args.warmup}"]
    if args.verbose:
        passthrough.append("--verbose")
    if args.migrate == "current":
        results = [asyncio.run(measure(args))]
    else:
        values = [0, 1] if args.migrate == "both" else [int(args.migrate)]
        results = [in_namespace(v, passthrough) for v in values]
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    for r in results:
        print(
            f"tcp_migrate_req={r['tcp_migrate_req']}: {r['restarts']} rolling restarts of "
            f"{r['workers']} workers under {r['concurrency']} connect loops: "
            f"{r['attempts']} attempts, {r['failed']} failed {r['errors'] or ''} "
            f"(restart took {', '.join(f'{d:.2f}' for d in r['restart_seconds'])} s)"
        )


if __name__ == "__main__":
    main()
