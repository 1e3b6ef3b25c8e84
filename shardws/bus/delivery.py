"""Local fan-out of cluster messages: the frame-once broadcast over the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["deliver_local"]

_parts: tuple[Callable[..., Any], Any] | None = None


def deliver_local(topic: str | None, message: str | bytes) -> None:
    """Send ``message`` to this process's connections.

    ``topic`` ``None``: every open connection; otherwise the connections
    subscribed to ``topic``. Uses :func:`shardws.broadcast`, which builds the
    frame once and skips connections that are not open or too far behind.
    """
    global _parts
    if _parts is None:
        # Imported on first use: the server core imports nothing from the bus.
        from ..asyncio import broadcast, registry

        _parts = (broadcast, registry)
    broadcast, registry = _parts
    connections = registry.connections() if topic is None else registry.subscribers(topic)
    if connections:
        broadcast(connections, message)
