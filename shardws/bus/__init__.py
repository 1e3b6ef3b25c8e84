"""Cluster message bus: shared-memory rings between workers, or in-process.

:func:`current` is the bus this process uses for :mod:`shardws.cluster`:
a :class:`LocalBus` unless a worker installed its :class:`ShmBus` with
:func:`install` at startup.
"""

from __future__ import annotations

import asyncio

from .base import Bus, BusStats, Deliver, Message, MessageTooLarge
from .delivery import deliver_local
from .local import LocalBus
from .shm import (
    BusLayout,
    SharedRings,
    ShmBus,
    create_eventfds,
    init_rings,
    ring_capacity,
    ring_regions,
    rings_size,
)
from .table import WorkerTable

__all__ = [
    "Bus",
    "BusStats",
    "Deliver",
    "Message",
    "MessageTooLarge",
    "LocalBus",
    "ShmBus",
    "SharedRings",
    "current",
    "current_table",
    "prepare",
    "release",
    "attach_worker",
    "extra_size",
    "install",
    "BusLayout",
    "deliver_local",
    "create_eventfds",
    "init_rings",
    "ring_capacity",
    "ring_regions",
    "rings_size",
]

_current: Bus | None = None
_table: WorkerTable | None = None
_layout: BusLayout | None = None


def current() -> Bus:
    """The bus of this process (a :class:`LocalBus` until one is installed)."""
    global _current
    if _current is None:
        _current = LocalBus()
    return _current


def install(bus: Bus | None, table: WorkerTable | None = None) -> Bus | None:
    """Make ``bus`` this process's bus (``None``: back to a fresh LocalBus); return the old one.

    ``table`` is the supervisor's worker table (read by
    :func:`shardws.cluster.workers`). A worker calls it once after the fork,
    before serving.
    """
    global _current, _table
    old, _current, _table = _current, bus, table
    return old


def current_table() -> WorkerTable | None:
    """The worker table installed with the bus (``None`` outside a supervisor)."""
    return _table


def prepare(table: WorkerTable, bus_size: int) -> BusLayout:
    """Supervisor, before forking: format the rings after ``table`` and open the eventfds.

    ``table`` must have been created with
    ``WorkerTable.create(n, extra=BusLayout.extra(n, bus_size))``. Every
    worker forked afterwards inherits the layout and calls :func:`attach_worker`;
    the supervisor calls :func:`release` at exit.
    """
    global _layout
    _layout = BusLayout.create(table, bus_size)
    return _layout


def release() -> None:
    """Supervisor, at exit: close the eventfds :func:`prepare` opened and forget its layout.

    The mapping (table and rings) goes with the last reference to the table;
    without this, ``shardws.run()`` returning would keep both for the life of
    the process.
    """
    global _layout
    if _layout is not None:
        _layout.close()
        _layout = None


def attach_worker(worker_id: int, loop: asyncio.AbstractEventLoop) -> Bus:
    """Worker, after the fork: install and start this worker's bus; return it.

    Uses the layout :func:`prepare` made in the supervisor (a replacement
    worker takes over its slot's ring); without one (a worker not forked by
    a supervisor that prepared a bus), a :class:`LocalBus`. Close the bus when
    the worker stops.
    """
    bus: Bus
    if _layout is None:
        bus = LocalBus()
        install(bus)
    else:
        bus = _layout.attach(worker_id)
        install(bus, _layout.table)
    bus.start(loop)
    return bus


def extra_size(max_workers: int, bus_size: int) -> int:
    """Bytes the supervisor adds after its worker table for the rings."""
    return BusLayout.extra(max_workers, bus_size)
