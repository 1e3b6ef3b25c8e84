"""The shared-memory bus between real forked processes.

Each test forks its workers with ``os.fork``: a worker runs its own event
loop and :class:`ShmBus`, reports through a pipe, and ends with
``os._exit``. Nothing sleeps: the parent waits on pipes (with a deadline)
and on ``waitpid``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shardws.bus import SharedRings, ShmBus
from shardws.bus.ring import KIND_PUBLISH, OPCODE_TEXT

DEADLINE = 30.0


Report = Callable[[Any], None]
Ready = Callable[[], None]


class Child:
    """A forked process running ``target(report, ready)``.

    ``report(obj)`` sends ``obj`` back as JSON; ``ready()`` releases
    :meth:`wait_ready` in the parent.
    """

    def __init__(self, target: Callable[[Report, Ready], None]) -> None:
        read_fd, write_fd = os.pipe()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                os.close(read_fd)
                os.close(ready_r)

                def report(obj: Any) -> None:
                    data = json.dumps(obj).encode() + b"\n"
                    while data:
                        data = data[os.write(write_fd, data) :]

                def ready() -> None:
                    os.write(ready_w, b"r")

                target(report, ready)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(write_fd)
        os.close(ready_w)
        self.pid = pid
        self.fd = read_fd
        self.ready_fd = ready_r
        self.buffer = b""

    def _wait_readable(self, fd: int, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError("the worker did not answer in time")

    def wait_ready(self) -> None:
        self._wait_readable(self.ready_fd, time.monotonic() + DEADLINE)
        assert os.read(self.ready_fd, 1) == b"r"

    def result(self) -> Any:
        deadline = time.monotonic() + DEADLINE
        while b"\n" not in self.buffer:
            self._wait_readable(self.fd, deadline)
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise AssertionError("the worker exited without reporting")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.reap()

    def reap(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        for fd in (self.fd, self.ready_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return os.waitstatus_to_exitcode(status)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        with contextlib.suppress(ChildProcessError):
            child.kill()


def start_subscriber(children: list[Child], rings: SharedRings, slot: int) -> Child:
    """A worker that collects the ints published on "room" until "end", then reports."""

    def main(report: Report, ready: Ready) -> None:
        loop = asyncio.new_event_loop()
        bus = rings.bus(slot)
        received: list[int] = []
        done = loop.create_future()

        def deliver(topic: str | None, message: str | bytes) -> None:
            if message == "end":
                done.set_result(None)
            elif topic == "room":
                received.append(int(message))

        bus.start(loop, deliver)
        ready()
        loop.run_until_complete(asyncio.wait_for(done, DEADLINE))
        stats = bus.stats()
        report({"received": received, "dropped": stats.dropped, "in": stats.messages_in})

    child = Child(main)
    children.append(child)
    child.wait_ready()
    return child


def publish_all(bus: ShmBus, messages: list[str], topic: str = "room") -> None:
    """Publish from a worker's event loop (one wake-up per loop iteration)."""

    async def run() -> None:
        bus.start(asyncio.get_running_loop(), lambda topic, message: None)
        for message in messages:
            bus.publish(topic, message)
        await asyncio.sleep(0)  # let the batch's wake-up go out
        bus.close()

    asyncio.run(run())


def test_ten_thousand_messages_cross_workers_in_order(children: list[Child]) -> None:
    rings = SharedRings(2, 4 << 20)
    child = start_subscriber(children, rings, 1)
    publish_all(rings.bus(0), [str(i) for i in range(10_000)] + ["end"])
    result = child.result()
    assert result["received"] == list(range(10_000))
    assert (result["dropped"], result["in"]) == (0, 10_001)
    assert child.reap() == 0


def test_stopped_reader_loses_only_what_was_overwritten_and_counts_it(children: list[Child]) -> None:
    rings = SharedRings(2, 1 << 16)
    child = start_subscriber(children, rings, 1)
    os.kill(child.pid, signal.SIGSTOP)
    _, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    bus = rings.bus(0)
    # Ten rings' worth while the reader is stopped: the writer never waits.
    record = 24 + len("room") + 8
    overload = 10 * rings.capacity // record
    messages = [f"{i:08d}" for i in range(overload)]
    started = time.monotonic()
    publish_all(bus, messages)
    assert time.monotonic() - started < DEADLINE
    os.kill(child.pid, signal.SIGCONT)
    later = [f"{i:08d}" for i in range(overload, overload + 100)]
    publish_all(rings.bus(0), [*later, "end"])
    result = child.result()
    received = result["received"]
    assert result["dropped"] > 0
    assert result["dropped"] + len(received) == overload + 100
    assert received == sorted(set(received))  # in order, no duplicate
    assert received[-100:] == list(range(overload, overload + 100))
    assert child.reap() == 0


def test_writer_killed_mid_record_corrupts_nothing_and_is_replaced(children: list[Child]) -> None:
    rings = SharedRings(3, 1 << 16)
    reader = start_subscriber(children, rings, 1)
    watcher = rings.bus(2)  # a third worker, reading by hand

    def doomed_writer(report: Report, ready: Ready) -> None:
        bus = rings.bus(0)
        for i in range(100):
            bus.publish("room", str(i))
        bus._writer._write_torn(KIND_PUBLISH, OPCODE_TEXT, b"room", b"999999" * 50)
        report("torn")
        os.kill(os.getpid(), signal.SIGKILL)

    writer = Child(doomed_writer)
    children.append(writer)
    assert writer.result() == "torn"
    assert writer.reap() == -signal.SIGKILL

    got: list[int] = []
    watcher._deliver = lambda topic, message: got.append(int(message))
    watcher.drain()
    assert got == list(range(100))

    def replacement(report: Report, ready: Ready) -> None:
        bus = rings.bus(0)  # takes over slot 0's ring
        report(bus._writer.next_seq)
        publish_all(bus, [str(i) for i in range(100, 200)] + ["end"])

    respawned = Child(replacement)
    children.append(respawned)
    assert respawned.result() == 100  # continues the sequence numbers
    assert respawned.reap() == 0
    result = reader.result()
    assert result["received"] == list(range(200))
    assert result["dropped"] == 0
    watcher._deliver = lambda topic, message: got.append(-1 if message == "end" else int(message))
    watcher.drain()
    assert got == [*range(200), -1]
    assert reader.reap() == 0
