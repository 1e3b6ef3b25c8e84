#!/usr/bin/env python3
"""The supervisor's numbers for the closing note, measured on this machine.

    python scripts/supervisor_numbers.py [--workers 2] [--connections 1000]

Prints: how connections spread over the workers, how long a worker killed
with SIGKILL takes to be replaced (READY again), how long a graceful
shutdown with 1000 open connections takes (every client gets 1001), and
failed connection attempts during a rolling restart under a connect loop
(scripts/rolling_restart.py, in this network namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from rolling_restart import free_port, measure, status, wait_for  # noqa: E402


def start(workers: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    control = os.path.join(tempfile.mkdtemp(prefix="shardws-numbers-"), "ctl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardws", "serve", "examples.app:handler", "--port", str(port),
         "--workers", str(workers), "--control", control, "--log-level", "warning"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
    )
    wait_for(control, lambda s: sum(w["state"] == "READY" for w in s["workers"]) == workers, 20)
    return proc, f"ws://127.0.0.1:{port}", control


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def open_many(url: str, n: int) -> list:
    from websockets.asyncio.client import connect

    async def one():
        ws = await connect(url, open_timeout=30, ping_interval=None, compression=None)
        greeting = await ws.recv()  # "hello from worker N (pid P)"
        return ws, int(greeting.split("(pid ")[1].rstrip(")"))

    out = []
    for i in range(0, n, 100):
        out += await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    return out


async def spread_and_shutdown(workers: int, n: int) -> dict:
    from websockets.exceptions import ConnectionClosed

    proc, url, _ = await asyncio.to_thread(start, workers)
    try:
        clients = await open_many(url, n)
        spread = collections.Counter(pid for _, pid in clients)

        async def code(ws):
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed:
                return ws.close_code

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        codes = collections.Counter(await asyncio.gather(*(code(ws) for ws, _ in clients)))
        closed = time.monotonic() - started
        rc = await asyncio.to_thread(proc.wait, 60)
        exited = time.monotonic() - started
    finally:
        stop(proc)
    return {
        "connections": n,
        "per_worker": sorted(spread.values(), reverse=True),
        "shutdown_close_codes": dict(codes),
        "shutdown_all_closed_s": round(closed, 3),
        "shutdown_exit_s": round(exited, 3),
        "exit_code": rc,
    }


def respawn(workers: int, repeat: int) -> list[float]:
    """Time from SIGKILL of a worker to its replacement READY (a fresh supervisor each
    time: kills closer than 10 s apart form a crash streak and get backoff)."""
    times = []
    for _ in range(repeat):
        proc, _, control = start(workers)
        try:
            victim = status(control)["workers"][0]["pid"]
            started = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            wait_for(control, lambda s, v=victim: len(s["workers"]) == workers and all(
                w["state"] == "READY" and w["pid"] != v for w in s["workers"]), 10)
            times.append(time.monotonic() - started)
        finally:
            stop(proc)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    numbers = asyncio.run(spread_and_shutdown(args.workers, args.connections))
    times = respawn(args.workers, 3)
    numbers["respawn_ms"] = {"median": round(statistics.median(times) * 1000, 1),
                             "max": round(max(times) * 1000, 1)}
    rr = asyncio.run(measure(argparse.Namespace(workers=args.workers, restarts=3, concurrency=8,
                                                warmup=0.5, verbose=False)))
    numbers["rolling_restart"] = {k: rr[k] for k in ("tcp_migrate_req", "attempts", "failed", "errors")}
    if args.json:
        print(json.dumps(numbers))
        return
    n = numbers
    print(f"spread of {n['connections']} connections over {args.workers} workers: {n['per_worker']}")
    print(f"respawn after kill -9 (until READY): median {n['respawn_ms']['median']} ms, "
          f"max {n['respawn_ms']['max']} ms")
    print(f"SIGTERM with {n['connections']} connections: all closed {n['shutdown_close_codes']} in "
          f"{n['shutdown_all_closed_s']} s, supervisor exit {n['exit_code']} after {n['shutdown_exit_s']} s")
    r = n["rolling_restart"]
    print(f"rolling restart (3x, 8 connect loops, tcp_migrate_req={r['tcp_migrate_req']}): "
          f"{r['failed']} failed of {r['attempts']} attempts {r['errors'] or ''}")


if __name__ == "__main__":
    main()
