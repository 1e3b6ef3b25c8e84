"""Cluster message bus: shared-memory rings between workers, or in-process.

:func:`current` is the bus this process uses for :mod:`shardws.cluster`:
a :class:`LocalBus` unless a worker installed its :class:`ShmBus` with
:func:`install` at startup.
"""

from __future__ import annotations

from .base import Bus, BusStats, Deliver, Message, MessageTooLarge
from .delivery import deliver_local
from .local import LocalBus
from .shm import (
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
