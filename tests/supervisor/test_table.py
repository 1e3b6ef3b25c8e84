"""The worker table in its shared mmap (shardws.bus.table)."""

from __future__ import annotations

import os

import pytest

from shardws.bus.table import HEADER_SIZE, SLOT_SIZE, WorkerState, WorkerTable

FIELDS = [  # (field, value written, value read back)
    ("pid", 4242, 4242),
    ("generation", 7, 7),
    ("state", WorkerState.DRAINING, WorkerState.DRAINING),
    ("started_at", 123.25, 123.25),
    ("heartbeat", 456.5, 456.5),
    ("connections", 10_000, 10_000),
    ("messages_in", 2**40, 2**40),
    ("messages_out", 2**41, 2**41),
    ("bus_drops", 3, 3),
    ("ready_at", 789.0, 789.0),
]


@pytest.mark.parametrize(("name", "value", "expected"), FIELDS)
def test_field_round_trip_and_neighbours_untouched(name, value, expected):
    table = WorkerTable.create(4)
    setattr(table.slot(2), name, value)
    assert getattr(table.slot(2), name) == expected
    for other in (1, 3):
        assert table.slot(other).snapshot() == {"id": other, **dict.fromkeys(
            ("pid", "generation", "connections", "messages_in", "messages_out", "bus_drops"), 0),
            "started_at": 0.0, "heartbeat": 0.0, "ready_at": 0.0, "state": "EMPTY"}


def test_layout_size_and_attach():
    table = WorkerTable.create(8, supervisor_pid=99, extra=4096)
    assert WorkerTable.size(8) == table.nbytes == HEADER_SIZE + 8 * SLOT_SIZE
    assert len(table.buffer) >= table.nbytes + 4096
    table.slot(5).connections = 12
    again = WorkerTable.attach(table.buffer)
    assert (again.max_workers, again.supervisor_pid, again.slot(5).connections) == (8, 99, 12)


@pytest.mark.parametrize(("offset", "data"), [
    (0, b"NOTATABL"),       # magic
    (8, (2).to_bytes(8, "little")),   # version
    (24, (64).to_bytes(8, "little")),  # slot size
])
def test_attach_refuses_a_foreign_header(offset, data):
    table = WorkerTable.create(2)
    table.buffer[offset:offset + len(data)] = data
    with pytest.raises(ValueError):
        WorkerTable.attach(table.buffer)


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_slot_out_of_range(index):
    with pytest.raises(IndexError):
        WorkerTable.create(3).slot(index)


def test_claim_bumps_generation_and_resets_counters():
    slot = WorkerTable.create(1).slot(0)
    slot.messages_in, slot.connections, slot.state = 5, 6, WorkerState.EXITED
    slot.claim(1234, now=10.0)
    slot.claim(1235, now=11.0)
    assert (slot.pid, slot.generation, slot.state, slot.started_at, slot.heartbeat) == (
        1235, 2, WorkerState.BOOTING, 11.0, 11.0)
    assert (slot.messages_in, slot.connections, slot.ready_at) == (0, 0, 0.0)


def test_unknown_state_value_reads_as_empty():
    slot = WorkerTable.create(1).slot(0)
    slot._state = 99
    assert slot.state is WorkerState.EMPTY


def test_a_forked_child_writes_what_the_parent_reads():
    table = WorkerTable.create(2)
    pid = os.fork()
    if pid == 0:  # child: write its slot, exit without running pytest's teardown
        table.slot(1).heartbeat = 1.5
        table.slot(1).state = WorkerState.READY
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (table.slot(1).heartbeat, table.slot(1).state) == (1.5, WorkerState.READY)


def test_create_needs_one_slot():
    with pytest.raises(ValueError):
        WorkerTable.create(0)
