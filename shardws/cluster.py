"""The cluster API: messages and numbers across every worker of the box.

Works the same with one process (plain :func:`shardws.serve`: everything is
local) and under the supervisor (``shardws serve --workers N``: messages
travel through the shared-memory bus to the other workers).

* :func:`publish` -- to every connection subscribed to a topic
  (:meth:`ServerConnection.subscribe`), on every worker;
* :func:`broadcast` -- to every open connection on every worker;
* :func:`workers` -- the worker table;
* :func:`connection_count` -- open connections on every worker.

Semantics: at most once per connection; in publish order per publishing
worker; :func:`publish` and :func:`broadcast` never block, and a message is
lost only when a worker falls a whole ring (``--bus-size``) behind, in which
case the loss is counted (``bus_drops`` in :func:`workers` and ``shardws
status``). Call them from the worker's event-loop thread (e.g. a handler).
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import bus as _bus

__all__ = ["publish", "broadcast", "workers", "connection_count"]


def publish(topic: str, message: str | bytes | bytearray | memoryview) -> None:
    """Send ``message`` to the subscribers of ``topic`` on every worker; never blocks.

    ``str`` goes out as a text message, bytes-likes as binary.

    Raises:
        shardws.bus.MessageTooLarge: (a ``ValueError``) the message does not
            fit in the bus ring (raise ``--bus-size``).
        TypeError: ``topic`` is not a str or ``message`` neither str nor bytes-like.
    """
    _bus.current().publish(topic, message)


def broadcast(message: str | bytes | bytearray | memoryview) -> None:
    """Send ``message`` to every open connection on every worker; never blocks.

    Raises like :func:`publish`.
    """
    _bus.current().broadcast(message)


def _local_row() -> dict[str, Any]:
    from .asyncio import registry

    bus_stats = _bus.current().stats()
    now = time.monotonic()
    return {
        "id": 0,
        "pid": os.getpid(),
        "generation": 1,
        "state": "READY",
        "started_at": now,
        "heartbeat": now,
        "connections": registry.count(),
        "messages_in": registry.stats.messages_in,
        "messages_out": registry.stats.messages_out,
        "bus_drops": bus_stats.dropped,
        "ready_at": now,
    }


def workers() -> list[dict[str, Any]]:
    """One dict per live worker, from the worker table.

    Keys: ``id``, ``pid``, ``generation``, ``state`` (name), ``started_at``,
    ``heartbeat``, ``ready_at`` (``time.monotonic()`` seconds),
    ``connections``, ``messages_in``, ``messages_out``, ``bus_drops``.
    Each worker refreshes its row about every second; this worker's
    ``connections`` is exact. Outside a supervisor: one row for this process.
    """
    table = _bus.current_table()
    if table is None:
        return [_local_row()]
    from .asyncio import registry

    rows = []
    for slot in table:
        if slot.pid and slot.state.name not in ("EMPTY", "EXITED"):
            row = slot.snapshot()
            if slot.index == registry.worker_id:
                row["connections"] = registry.count()
            rows.append(row)
    return rows


def connection_count() -> int:
    """Open connections on every worker (the others' counts are up to a second old)."""
    return sum(int(row["connections"]) for row in workers())
