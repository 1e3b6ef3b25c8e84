"""The bus's cached view of the worker table never misses a worker started after it.

A worker caches which slots it wakes and which rings it reads (a table has
many spare slots). The race these tests pin down: worker 0 scans the table
while slot 1 is not yet (or no longer) hosting a process, the supervisor
claims slot 1 and forks its worker, and worker 0 publishes (or drains) within
the rescan interval. Before the table's epoch, worker 0 then neither woke
worker 1 nor read its ring; wake-ups come only with new messages, so the
messages waited for the next publish, forever if none came (the end-to-end
test in test_cluster.py hung that way on a loaded machine).

The clock of the bus is frozen, so only the epoch can trigger a rescan.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from shardws.bus import BusLayout, ShmBus, shm
from shardws.bus.table import Slot, WorkerState, WorkerTable

SLOTS = 4
BUS_SIZE = 1 << 16


def never_claimed(slot: Slot) -> None:
    pass


def claimed_before_its_pid_is_written(slot: Slot) -> None:
    slot.claim(0, 0.0)  # what the supervisor does right before os.fork()


def previous_worker_exited(slot: Slot) -> None:
    slot.claim(os.getpid(), 0.0)
    slot.state = WorkerState.READY
    slot.state = WorkerState.EXITED  # reaped; the replacement is not claimed yet


def claim_and_start(slot: Slot) -> None:
    slot.claim(0, 0.0)
    slot.pid = os.getpid()  # the supervisor after fork(), the worker at its start
    slot.state = WorkerState.READY


def start_claimed(slot: Slot) -> None:
    slot.pid = os.getpid()
    slot.state = WorkerState.READY


# (slot 1 when worker 0 scans the table, what happens to slot 1 afterwards)
CASES: dict[str, tuple[Callable[[Slot], None], Callable[[Slot], None]]] = {
    "never claimed": (never_claimed, claim_and_start),
    "claimed, pid not written yet": (claimed_before_its_pid_is_written, start_claimed),
    "previous worker exited, replacement claimed later": (previous_worker_exited, claim_and_start),
}


@pytest.fixture
def layout(monkeypatch: pytest.MonkeyPatch) -> Iterator[BusLayout]:
    monkeypatch.setattr(shm, "time", SimpleNamespace(monotonic=lambda: 1000.0))
    table = WorkerTable.create(SLOTS, supervisor_pid=os.getpid(), extra=BusLayout.extra(SLOTS, BUS_SIZE))
    layout = BusLayout.create(table, BUS_SIZE)
    claim_and_start(table.slot(0))
    try:
        yield layout
    finally:
        layout.close()


def attach(layout: BusLayout, index: int) -> tuple[ShmBus, list[str | bytes]]:
    bus = layout.attach(index)
    got: list[str | bytes] = []
    bus._deliver = lambda topic, message: got.append(message)  # not started: drained by hand
    return bus, got


def woken(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


@pytest.mark.parametrize("before, after", CASES.values(), ids=CASES.keys())
def test_a_worker_started_after_the_scan_is_woken_and_read(
    layout: BusLayout, before: Callable[[Slot], None], after: Callable[[Slot], None]
) -> None:
    table = layout.table
    before(table.slot(1))
    worker0, got0 = attach(layout, 0)  # scans the table now
    after(table.slot(1))
    worker1, got1 = attach(layout, 1)

    worker1.publish("room", "from 1")  # no loop: flushed (wake-ups sent) at once
    assert woken(layout.eventfds[0]) >= 1
    assert worker0.drain() == 1, "worker 0 did not read the ring of slot 1"
    assert got0 == ["from 1"]

    worker0.publish("room", "from 0")
    assert woken(layout.eventfds[1]) >= 1, "worker 1 was not woken"
    assert worker1.drain() == 1
    assert got1 == ["from 1", "from 0"]  # its own message is delivered locally


def test_every_claim_bumps_the_epoch() -> None:
    table = WorkerTable.create(2)
    assert table.epoch == 0
    for expected, index in enumerate((0, 1, 0), start=1):
        table.slot(index).claim(0, 0.0)
        assert table.epoch == expected
        assert table.slot(index).state is WorkerState.BOOTING
