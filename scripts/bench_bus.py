"""Worker-to-worker messaging: the shared-memory bus against Redis pub/sub and pipes.

    python scripts/bench_bus.py [--quick] [--no-redis] [--no-broadcast]

Measured in one run, each between two forked processes (writer pinned to
CPU 0, reader pinned to CPU 1 with ``os.sched_setaffinity``):

* **throughput**: the writer sends N messages of 64 B and of 4 KiB as fast
  as it can; messages/s = messages delivered / (last delivery - first send).
  The bus writer publishes from a uvloop event loop, 256 messages per loop
  iteration (one eventfd wake-up per batch); the Redis publisher pipelines
  256 PUBLISH per round trip (redis-py asyncio); the pipe writer calls
  ``Connection.send_bytes`` per message (``multiprocessing.Pipe``).
* **latency**: the writer sends at 10 000 messages/s (paced by a busy wait),
  each message carrying its send time (``CLOCK_MONOTONIC``, one clock for
  every process); p50/p99 of (delivery time - send time). The bus writer
  publishes outside an event loop (each publish signals the reader at once).
* **cluster broadcast**: ``shardws serve`` with 1 and 2 workers, 1000 raw
  WebSocket connections (the load generator of ``scripts/bench.py``), one
  of them asks for ROUNDS ``shardws.cluster.broadcast()`` of 32 B: deliveries/s.
  Workers are pinned to CPUs 0 and 1 (1 worker: CPU 0), the load generator
  to the last CPU; on a 2-core box it shares a core with a worker.

``redis-server`` must be installed (``apt-get install redis-server``); the
script starts its own on a free loopback port and stops it. A full run takes
well under a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardws import cluster  # noqa: E402
from shardws.bus import SharedRings  # noqa: E402

WRITER_CPU = 0
READER_CPU = 1 if (os.cpu_count() or 1) > 1 else 0
TOPIC = "bench"
BATCH = 256  # messages per event-loop iteration / Redis pipeline
DEADLINE = 60.0


#: --realtime: latency processes run SCHED_FIFO (needs root / CAP_SYS_NICE).
REALTIME = False


def pin(cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})


def realtime() -> None:
    """With --realtime, run this (latency) process SCHED_FIFO: other jobs on a
    shared box then stop adding their time slices to the measured latency."""
    if REALTIME:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def payload(size: int, last: bool = False, stamp: int = 0) -> bytes:
    """Byte 0: 1 on the last message; bytes 1-8: send time (ns); then padding."""
    head = bytes([1 if last else 0]) + stamp.to_bytes(8, "little")
    return (head + bytes(max(0, size - len(head))))[: max(size, len(head))]


# --------------------------------------------------------------- processes


class Child:
    """``target(ready, report)`` in a forked process; JSON report through a pipe."""

    def __init__(self, target: Callable[[Callable[[], None], Callable[[Any], None]], None]) -> None:
        result_r, result_w = os.pipe()
        ready_r, ready_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                os.close(result_r)
                os.close(ready_r)

                def report(obj: Any) -> None:
                    data = json.dumps(obj).encode()
                    while data:
                        data = data[os.write(result_w, data) :]

                target(lambda: os.write(ready_w, b"r") and None, report)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(result_w)
        os.close(ready_w)
        self.result_fd = result_r
        self.ready_fd = ready_r

    def wait_ready(self) -> None:
        if not select.select([self.ready_fd], [], [], DEADLINE)[0] or os.read(self.ready_fd, 1) != b"r":
            raise RuntimeError("a benchmark process did not start")

    def result(self) -> Any:
        data = b""
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.result_fd], [], [], left)[0]:
                raise RuntimeError("a benchmark process did not finish in time")
            chunk = os.read(self.result_fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        os.waitpid(self.pid, 0)
        os.close(self.result_fd)
        os.close(self.ready_fd)
        if not data:
            raise RuntimeError("a benchmark process failed")
        return json.loads(data)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)


def run_pair(
    reader: Callable[[Callable[[], None], Callable[[Any], None]], None],
    writer: Callable[[Callable[[], None], Callable[[Any], None]], None],
) -> tuple[Any, Any]:
    """Fork the reader, wait until it listens, fork the writer; both reports."""
    read = Child(reader)
    read.wait_ready()
    write = Child(writer)
    return write.result(), read.result()


def percentiles(samples: list[int]) -> tuple[float, float]:
    """p50 and p99 of nanosecond samples, in microseconds."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan"), float("nan")
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return pick(0.50), pick(0.99)


def paced(count: int, rate: float, send: Callable[[bool, int], None]) -> None:
    """Call ``send(last, stamp_ns)`` ``count`` times at ``rate`` per second.

    Sleeps until 50 us before each send, then spins (a paced sender, not
    synchronisation), so the writer leaves its CPU free between sends.
    """
    period = int(1e9 / rate)
    clock = time.perf_counter_ns  # CLOCK_MONOTONIC: one clock for every process
    due = clock()
    for i in range(count):
        ahead = due - clock() - 50_000
        if ahead > 0:
            time.sleep(ahead / 1e9)
        while clock() < due:
            pass
        send(i == count - 1, clock())
        due += period


# --------------------------------------------------------------- the bus


def bus_throughput(size: int, count: int) -> dict[str, float]:
    rings = SharedRings(2, 4 << 20)

    def reader(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(READER_CPU)
        loop = new_loop()
        bus = rings.bus(1)
        done: asyncio.Future[float] = loop.create_future()
        received = [0]

        def deliver(topic: str | None, message: str | bytes) -> None:
            received[0] += 1
            if message[0] == 1:
                done.set_result(time.perf_counter())

        bus.start(loop, deliver)
        ready()
        cpu = time.process_time()
        end = loop.run_until_complete(asyncio.wait_for(done, DEADLINE))
        cpu = time.process_time() - cpu
        report({"end": end, "received": received[0], "dropped": bus.stats().dropped, "cpu": cpu})

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(WRITER_CPU)
        loop = new_loop()
        bus = rings.bus(0)
        bus.start(loop, lambda topic, message: None)
        body, last = payload(size), payload(size, last=True)

        async def run() -> float:
            start = time.perf_counter()
            publish = bus.publish
            for _ in range(count // BATCH - 1):
                for _ in range(BATCH):
                    publish(TOPIC, body)
                await asyncio.sleep(0)  # end of this loop iteration: one wake-up
            for _ in range(BATCH - 1):
                publish(TOPIC, body)
            publish(TOPIC, last)
            await asyncio.sleep(0)
            return start

        cpu = time.process_time()
        start = loop.run_until_complete(run())
        report({"start": start, "sent_end": time.perf_counter(), "cpu": time.process_time() - cpu})

    w, r = run_pair(reader, writer)
    rings.close()
    sent = (count // BATCH) * BATCH
    return {
        "rate": r["received"] / (r["end"] - w["start"]),
        "send_rate": sent / (w["sent_end"] - w["start"]),
        "dropped": r["dropped"],
        # CPU time per message on each side: what the code costs, whatever
        # else the box runs (the wall-clock rates above depend on that too).
        "writer_cpu_us": w["cpu"] / sent * 1e6,
        "reader_cpu_us": r["cpu"] / max(1, r["received"] + r["dropped"]) * 1e6,
    }


def bus_latency(size: int, count: int, rate: float) -> tuple[float, float]:
    rings = SharedRings(2, 4 << 20)

    def reader(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(READER_CPU)
        realtime()
        loop = new_loop()
        bus = rings.bus(1)
        done: asyncio.Future[None] = loop.create_future()
        samples = array("q")
        clock = time.perf_counter_ns

        def deliver(topic: str | None, message: str | bytes) -> None:
            samples.append(clock() - int.from_bytes(message[1:9], "little"))
            if message[0] == 1:
                done.set_result(None)

        bus.start(loop, deliver)
        ready()
        loop.run_until_complete(asyncio.wait_for(done, DEADLINE))
        report(percentiles(list(samples)[len(samples) // 10 :]))  # without the warm-up

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(WRITER_CPU)
        realtime()
        bus = rings.bus(0)  # not started: every publish wakes the reader at once
        bus._deliver = lambda topic, message: None
        paced(count, rate, lambda last, stamp: bus.publish(TOPIC, payload(size, last, stamp)))
        report(None)

    _, (p50, p99) = run_pair(reader, writer)
    rings.close()
    return p50, p99


# -------------------------------------------------------------- multiprocessing pipes


def pipe_throughput(size: int, count: int) -> dict[str, float]:
    receiver, sender = multiprocessing.Pipe(duplex=False)

    def reader(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(READER_CPU)
        ready()
        n = 0
        recv = receiver.recv_bytes
        while True:
            message = recv()
            n += 1
            if message[0] == 1:
                break
        report({"end": time.perf_counter(), "received": n})

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(WRITER_CPU)
        body, last = payload(size), payload(size, last=True)
        start = time.perf_counter()
        send = sender.send_bytes
        for _ in range(count - 1):
            send(body)
        send(last)
        report({"start": start})

    w, r = run_pair(reader, writer)
    receiver.close()
    sender.close()
    return {"rate": r["received"] / (r["end"] - w["start"]), "dropped": 0}


def pipe_latency(size: int, count: int, rate: float) -> tuple[float, float]:
    receiver, sender = multiprocessing.Pipe(duplex=False)

    def reader(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(READER_CPU)
        realtime()
        ready()
        samples = array("q")
        clock = time.perf_counter_ns
        while True:
            message = receiver.recv_bytes()
            samples.append(clock() - int.from_bytes(message[1:9], "little"))
            if message[0] == 1:
                break
        report(percentiles(list(samples)[len(samples) // 10 :]))

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        pin(WRITER_CPU)
        realtime()
        paced(count, rate, lambda last, stamp: sender.send_bytes(payload(size, last, stamp)))
        report(None)

    _, (p50, p99) = run_pair(reader, writer)
    receiver.close()
    sender.close()
    return p50, p99


# ------------------------------------------------------------------- Redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free loopback port (no persistence)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--client-output-buffer-limit", "pubsub 0 0 0",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.01)  # polling for the server to listen, bounded by the deadline
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def redis_subscriber(
    port: int, on_message: Callable[[bytes], bool], result: Callable[[], Any], latency: bool = False
) -> Callable[..., None]:
    def reader(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        import redis.asyncio as redis

        pin(READER_CPU)
        if latency:
            realtime()
        loop = new_loop()

        async def run() -> Any:
            client = redis.Redis(port=port)
            pubsub = client.pubsub()
            await pubsub.subscribe(TOPIC)
            await pubsub.get_message(timeout=5)  # the subscribe confirmation
            ready()
            async for message in pubsub.listen():
                if message["type"] == "message" and on_message(message["data"]):
                    break
            await pubsub.aclose()
            await client.aclose()

        loop.run_until_complete(asyncio.wait_for(run(), DEADLINE))
        report(result())

    return reader


def redis_throughput(port: int, size: int, count: int) -> dict[str, float]:
    state = {"n": 0, "end": 0.0}

    def on_message(data: bytes) -> bool:
        state["n"] += 1
        if data[0] == 1:
            state["end"] = time.perf_counter()
            return True
        return False

    sub = redis_subscriber(port, on_message, lambda: {"received": state["n"], "end": state["end"]})

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        import redis.asyncio as redis

        pin(WRITER_CPU)
        loop = new_loop()
        body, last = payload(size), payload(size, last=True)

        async def run() -> float:
            client = redis.Redis(port=port)
            start = time.perf_counter()
            for i in range(0, count, BATCH):
                pipe = client.pipeline(transaction=False)
                for j in range(i, min(count, i + BATCH)):
                    pipe.publish(TOPIC, last if j == count - 1 else body)
                await pipe.execute()
            await client.aclose()
            return start

        report({"start": loop.run_until_complete(run())})

    read = Child(sub)
    read.wait_ready()
    write = Child(writer)
    w, r = write.result(), read.result()
    return {"rate": r["received"] / (r["end"] - w["start"]), "dropped": count - r["received"]}


def redis_latency(port: int, size: int, count: int, rate: float) -> tuple[float, float]:
    samples = array("q")

    def on_message(data: bytes) -> bool:
        samples.append(time.perf_counter_ns() - int.from_bytes(data[1:9], "little"))
        return data[0] == 1

    sub = redis_subscriber(
        port, on_message, lambda: percentiles(list(samples)[len(samples) // 10 :]), latency=True
    )

    def writer(ready: Callable[[], None], report: Callable[[Any], None]) -> None:
        import redis.asyncio as redis

        pin(WRITER_CPU)
        realtime()
        loop = new_loop()

        async def run() -> None:
            client = redis.Redis(port=port)
            period = int(1e9 / rate)
            clock = time.perf_counter_ns
            due = clock()
            for i in range(count):
                ahead = due - clock() - 50_000
                if ahead > 0:
                    time.sleep(ahead / 1e9)
                while clock() < due:
                    pass
                await client.publish(TOPIC, payload(size, i == count - 1, clock()))
                due += period
            await client.aclose()

        loop.run_until_complete(run())
        report(None)

    read = Child(sub)
    read.wait_ready()
    write = Child(writer)
    write.result()
    p50, p99 = read.result()
    return p50, p99


# ------------------------------------------------------- cluster broadcast


async def broadcast_handler(websocket: Any) -> None:
    """The served app: "count" -> connections on every worker; "bcast:ROUNDS:SIZE"."""
    from shardws import ConnectionClosed

    try:
        async for message in websocket:
            if message == "count":
                await websocket.send(str(cluster.connection_count()))
            elif isinstance(message, str) and message.startswith("bcast:"):
                _, rounds, size = message.split(":")
                text = "x" * int(size)
                for _ in range(int(rounds)):
                    cluster.broadcast(text)
                    await asyncio.sleep(0)
    except ConnectionClosed:
        pass


def load_bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("shardws_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def single_process_broadcast(rounds: int) -> float:
    """The same load against plain ``shardws.serve`` + ``shardws.broadcast`` (scripts/bench.py)."""
    bench = load_bench_module()
    cpus = sorted(os.sched_getaffinity(0))
    server = bench.ServerProcess("shardws", cpus[0])
    pin(cpus[-1])
    try:
        loop = new_loop()
        rate: float = loop.run_until_complete(asyncio.wait_for(bench.broadcast_rate(server.port, rounds), DEADLINE))
        loop.close()
    finally:
        os.sched_setaffinity(0, set(cpus))
        server.stop()
    return rate


def cluster_broadcast(workers: int, rounds: int) -> float:
    """Deliveries/s of ``rounds`` cluster broadcasts to 1000 connections over ``workers``."""
    bench = load_bench_module()
    port = free_port()
    control = f"/tmp/shardws-bench-bus-{os.getpid()}.ctl"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardws", "serve", "scripts.bench_bus:broadcast_handler",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--control", control, "--compression", "none", "--ping-interval", "0",
         "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        from shardws.cli import request

        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, ValueError):
                status = request(control, {"command": "status"}, timeout=2.0)
                ready = [w for w in status["workers"] if w["state"] == "READY"]
                if len(ready) == workers:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the cluster did not start")
            time.sleep(0.02)  # polling the control socket, bounded by the deadline
        cpus = sorted(os.sched_getaffinity(0))
        for i, worker in enumerate(sorted(ready, key=lambda w: w["id"])):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(worker["pid"], {cpus[i % len(cpus)]})
        pin(cpus[-1])
        try:
            loop = new_loop()
            rate: float = loop.run_until_complete(
                asyncio.wait_for(bench.broadcast_rate(port, rounds), DEADLINE)
            )
            loop.close()
        finally:
            os.sched_setaffinity(0, set(cpus))
        return rate
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer messages (about 20 s)")
    parser.add_argument("--no-redis", action="store_true", help="skip Redis pub/sub")
    parser.add_argument("--no-broadcast", action="store_true", help="skip the cluster broadcast")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--realtime", action="store_true",
        help="latency runs as SCHED_FIFO (root): keeps a shared box's other jobs out of p99",
    )
    args = parser.parse_args(argv)
    global REALTIME
    REALTIME = args.realtime
    scale = 0.3 if args.quick else 1.0
    rate = 10_000.0
    latency_count = int(15_000 * scale) or 1000
    counts = {64: int(1_000_000 * scale), 4096: int(200_000 * scale)}
    redis_counts = {64: int(150_000 * scale), 4096: int(50_000 * scale)}
    results: dict[str, Any] = {"cpus": os.cpu_count(), "writer_cpu": WRITER_CPU, "reader_cpu": READER_CPU}
    redis_server = None if args.no_redis else RedisServer()
    try:
        rows = []
        for size in (64, 4096):
            bus = bus_throughput(size, counts[size])
            bus_lat = bus_latency(size, latency_count, rate)
            pipe = pipe_throughput(size, counts[size] // 2)
            pipe_lat = pipe_latency(size, latency_count, rate)
            row = {"size": size, "bus": bus, "bus_latency": bus_lat, "pipe": pipe, "pipe_latency": pipe_lat,
                   # other jobs on the box show in p99 (and in the rates): note the load of each row
                   "load": os.getloadavg()[0]}
            if redis_server is not None:
                row["redis"] = redis_throughput(redis_server.port, size, redis_counts[size])
                row["redis_latency"] = redis_latency(redis_server.port, size, latency_count, rate)
            rows.append(row)
        results["rows"] = rows
    finally:
        if redis_server is not None:
            redis_server.stop()
    if not args.no_broadcast:
        rounds = 60 if args.quick else 200
        results["broadcast"] = {
            "rounds": rounds,
            "serve": single_process_broadcast(rounds),
            "single": cluster_broadcast(1, rounds),
            "cluster2": cluster_broadcast(2, rounds),
        }

    print(f"worker to worker, writer on CPU {WRITER_CPU}, reader on CPU {READER_CPU} "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}); latency at {rate:.0f} messages/s"
          f"{' (SCHED_FIFO)' if REALTIME else ''}")
    print(f"{'size':>6} {'transport':<22} {'delivered/s':>12} {'dropped':>8} {'p50 us':>8} {'p99 us':>8}")
    for row in results["rows"]:
        for name, key in (("shardws bus", "bus"), ("redis pub/sub", "redis"), ("multiprocessing pipe", "pipe")):
            if key not in row:
                continue
            p50, p99 = row[key + "_latency"]
            print(f"{row['size']:>6} {name:<22} {row[key]['rate']:>12,.0f} {row[key]['dropped']:>8} "
                  f"{p50:>8.1f} {p99:>8.1f}")
        bus = row["bus"]
        print(f"{'':>6} load average after this size: {row['load']:.2f}")
        print(f"{'':>6} bus CPU per message: writer {bus['writer_cpu_us']:.2f} us, reader "
              f"{bus['reader_cpu_us']:.2f} us; writer sent {bus['send_rate']:,.0f}/s")
        if "redis" in row:
            print(f"{'':>6} bus / redis: {row['bus']['rate'] / row['redis']['rate']:.1f}x")
    if "broadcast" in results:
        b = results["broadcast"]
        print(f"broadcast of 32 B to 1000 connections x {b['rounds']} rounds, deliveries/s: "
              f"shardws.serve + shardws.broadcast (1 process) {b['serve']:,.0f}; "
              f"shardws serve + cluster.broadcast: 1 worker {b['single']:,.0f}, "
              f"2 workers {b['cluster2']:,.0f}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
