"""The shared memory the supervisor maps for the bus, and the worker limit it implies."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from shardws import bus
from shardws.bus.table import WorkerTable
from shardws.config import SupervisorSettings, worker_limit, worker_slots

from .conftest import ROOT, env

MIB = 2**20

# (workers, max_workers, bus_size, limit, slots, bytes mapped) as docs/operations.md
# states them: slots = limit + 1; bytes = 64 + 128 * slots + slots * (64 + C + 64).
SIZING_CASES = [
    (2, 0, 4 * MIB, 6, 7, 64 + 128 * 7 + 7 * (128 + 4 * MIB)),  # the docs' "28.0 MiB"
    (1, 0, 4 * MIB, 5, 6, 64 + 128 * 6 + 6 * (128 + 4 * MIB)),
    (8, 0, 4 * MIB, 16, 17, 64 + 128 * 17 + 17 * (128 + 4 * MIB)),
    (2, 3, 4 * MIB, 3, 4, 64 + 128 * 4 + 4 * (128 + 4 * MIB)),
    (4, 2, 1 * MIB, 4, 5, 64 + 128 * 5 + 5 * (128 + MIB)),  # never below --workers
    (2, 0, 1000 + 4096, 6, 7, 64 + 128 * 7 + 7 * (128 + 5056)),  # C rounded down to 64
]


@pytest.mark.parametrize(("workers", "max_workers", "bus_size", "limit", "slots", "mapped"), SIZING_CASES)
def test_mapping_size_follows_the_worker_limit(
    workers: int, max_workers: int, bus_size: int, limit: int, slots: int, mapped: int
) -> None:
    settings = SupervisorSettings(workers=workers, max_workers=max_workers, bus_size=bus_size)
    assert (worker_limit(settings), worker_slots(settings)) == (limit, slots)
    table = WorkerTable.create(slots, extra=bus.extra_size(slots, bus_size))
    assert len(table.buffer) == mapped
    layout = bus.BusLayout.create(table, bus_size)  # the rings fit the mapping exactly
    assert len(layout.regions) == slots
    assert bytes(table.buffer[mapped - layout.regions[-1].nbytes : mapped - layout.regions[-1].nbytes + 4]) \
        == b"SWRG"  # the last ring ends where the mapping ends
    layout.close()


def test_default_workers_2_maps_28_mib() -> None:
    settings = SupervisorSettings(workers=2)
    slots = worker_slots(settings)
    assert f"{(WorkerTable.size(slots) + bus.extra_size(slots, settings.bus_size)) / MIB:.1f}" == "28.0"


def shardws_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shardws", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=20)


def test_scaling_past_the_limit_is_refused_and_the_supervisor_keeps_running(supervised) -> None:
    server = supervised("echo", "--max-workers", "3", workers=2)
    server.wait_ready(2)
    assert "worker limit 3: 4 slots, 16.0 MiB of shared memory mapped for the bus" in server.stderr
    assert server.status()["supervisor"]["max_workers"] == 3

    refused = shardws_cli("scale", "4", "--control", server.control)
    assert refused.returncode == 1
    assert "cannot scale to 4 workers: the limit is 3" in refused.stderr
    assert server.status()["supervisor"]["workers"] == 2

    server.signal(signal.SIGTTIN)  # 2 -> 3: at the limit
    server.wait_ready(3)
    server.signal(signal.SIGTTIN)  # refused: logged, nothing changes
    server.wait_for(lambda s: "cannot scale to 4 workers" in server.stderr, 10.0, "the refusal logged")
    status = server.status()
    assert status["supervisor"]["workers"] == 3 and len(status["workers"]) == 3
    assert server.proc.poll() is None

    # At the limit a rolling restart still goes through, one spare slot at a time.
    assert shardws_cli("reload", "--control", server.control).returncode == 0
    server.wait_for(lambda s: "rolling restart done" in server.stderr, 20.0, "the rolling restart")
    server.wait_ready(3)
    assert shardws_cli("stop", "--control", server.control).returncode == 0
    assert server.wait_exit(10.0) == 0
