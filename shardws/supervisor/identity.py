"""Which worker this process is: ``shardws.current_worker()``.

The supervisor's worker code calls :func:`set_current_worker` right after the
fork; the server core reads the id for ``ServerConnection.worker_id``
(``shardws.asyncio.registry.worker_id``, set here too).
"""

from __future__ import annotations

__all__ = ["current_worker", "set_current_worker"]

_worker_id: int | None = None


def current_worker() -> int | None:
    """The id (slot index) of the worker running this code, or ``None`` outside a supervisor."""
    return _worker_id


def set_current_worker(worker_id: int | None) -> None:
    """Record the worker id of this process (called once, in the worker, after the fork)."""
    global _worker_id
    _worker_id = worker_id
    from ..asyncio import registry  # ServerConnection.worker_id reads it

    registry.set_worker_id(worker_id)
    registry.stats.reset()  # counters of this process, not of the supervisor
