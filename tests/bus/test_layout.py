"""The bus inside the supervisor's mapping: rings after the worker table, counters, cluster API."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

import shardws.bus as bus_module
from shardws import cluster
from shardws.bus import BusLayout, LocalBus, ShmBus
from shardws.bus.table import WorkerState, WorkerTable

SLOTS = 4
BUS_SIZE = 1 << 16


@pytest.fixture
def layout() -> Iterator[BusLayout]:
    table = WorkerTable.create(SLOTS, supervisor_pid=os.getpid(), extra=bus_module.extra_size(SLOTS, BUS_SIZE))
    layout = bus_module.prepare(table, BUS_SIZE)
    for index, connections in ((0, 3), (1, 4)):  # two live workers, as the supervisor leaves them
        slot = table.slot(index)
        slot.claim(os.getpid(), 0.0)
        slot.state = WorkerState.READY
        slot.connections = connections
    try:
        yield layout
    finally:
        bus_module.install(None)
        bus_module.release()


def test_rings_start_after_the_table(layout: BusLayout) -> None:
    table = layout.table
    assert len(layout.regions) == SLOTS
    ring_magic = bytes(layout.regions[0][:4])
    assert bytes(table.buffer[table.nbytes : table.nbytes + 4]) == ring_magic == b"SWRG"
    assert len(table.buffer) == table.nbytes + bus_module.extra_size(SLOTS, BUS_SIZE)
    # Writing every ring leaves the table untouched.
    before = [slot.snapshot() for slot in table]
    buses = [layout.attach(i) for i in range(SLOTS)]
    for b in buses:
        for _ in range(100):
            b.broadcast(b"x" * 200)
    assert [slot.snapshot() for slot in table] == before


async def test_lapped_worker_reports_its_drops_in_the_table(layout: BusLayout) -> None:
    loop = asyncio.get_running_loop()
    writer, reader = layout.attach(0), layout.attach(1)
    got: list[str | bytes] = []
    writer.start(loop, lambda topic, message: None)
    reader._deliver = lambda topic, message: got.append(message)  # not started: drained by hand
    for i in range(3 * BUS_SIZE // 64):  # three rings' worth, reader asleep
        writer.publish("t", i.to_bytes(4, "big") * 8)
    while reader.drain():
        pass
    dropped = reader.stats().dropped
    assert dropped > 0 and len(got) + dropped == 3 * BUS_SIZE // 64
    assert layout.table.slot(1).bus_drops == dropped
    writer.close()


async def test_only_live_slots_are_woken(layout: BusLayout) -> None:
    bus = layout.attach(0)
    assert bus._wake_fds == [layout.eventfds[1]]
    layout.table.slot(2).claim(os.getpid(), 0.0)  # a worker starting in slot 2
    bus._refreshed = -1.0
    bus._refresh_slots()
    assert bus._wake_fds == [layout.eventfds[1], layout.eventfds[2]]


async def test_attach_worker_installs_the_bus_and_the_cluster_api_reads_the_table(
    layout: BusLayout,
) -> None:
    from shardws.asyncio import registry

    loop = asyncio.get_running_loop()
    bus = bus_module.attach_worker(1, loop)
    try:
        assert isinstance(bus, ShmBus) and bus_module.current() is bus
        rows = cluster.workers()
        assert [row["id"] for row in rows] == [0, 1]
        assert rows[0]["connections"] == 3 and rows[0]["state"] == "READY"
        registry.set_worker_id(1)  # this process plays worker 1: its count is live
        assert cluster.connection_count() == 3 + registry.count()
    finally:
        registry.set_worker_id(None)
        bus.close()


async def test_without_a_supervisor_the_cluster_is_this_process() -> None:
    bus_module.install(None)
    bus = bus_module.attach_worker(0, asyncio.get_running_loop())
    try:
        assert isinstance(bus, LocalBus)
        rows = cluster.workers()
        assert len(rows) == 1 and rows[0]["pid"] == os.getpid()
        assert cluster.connection_count() == 0
        cluster.broadcast("nobody listens")  # delivered locally: no connection, no error
        cluster.publish("room", b"nobody")
    finally:
        bus_module.install(None)
