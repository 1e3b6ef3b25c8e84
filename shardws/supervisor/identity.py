"""Which worker this process is: ``shardws.current_worker()``.

The supervisor's worker code calls :func:`set_current_worker` right after the
fork. The id lives in one place, ``shardws.asyncio.registry.worker_id``,
which ``ServerConnection.worker_id`` reads too, so the two never disagree.
"""

from __future__ import annotations

__all__ = ["current_worker", "set_current_worker"]


def current_worker() -> int | None:
    """The id (slot index) of the worker running this code, or ``None`` outside a supervisor."""
    from ..asyncio import registry

    return registry.worker_id


def set_current_worker(worker_id: int | None) -> None:
    """Record the worker id of this process (called once, in the worker, after the fork)."""
    from ..asyncio import registry

    registry.set_worker_id(worker_id)
    registry.stats.reset()  # counters of this process, not of the supervisor
