"""Process-wide registry of open connections and of their topic subscriptions.

The asyncio server adds every connection here once its opening handshake
succeeds and removes it when the connection closes. The cluster layer
(``shardws.bus`` / ``shardws.cluster``) reads it for local delivery through
:func:`shardws.broadcast`:

* :func:`connections` -- every open connection of this process;
* :func:`subscribers` -- the connections subscribed to one topic;
* :func:`count` -- how many connections are open;
* :data:`stats` -- ``messages_in`` / ``messages_out`` counters of this process;
* :data:`worker_id` -- ``None`` outside a supervisor; a worker sets it with
  :func:`set_worker_id` before serving, and every
  :attr:`ServerConnection.worker_id <shardws.ServerConnection.worker_id>`
  reports it.

Thread safety: none. Call these functions from the event loop's thread only
(one loop per process, which is how workers run).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import ServerConnection

__all__ = [
    "Stats",
    "stats",
    "worker_id",
    "set_worker_id",
    "add",
    "remove",
    "subscribe",
    "unsubscribe",
    "subscribers",
    "connections",
    "count",
]


class Stats:
    """Counters of this process (plain ints, read them at any time)."""

    __slots__ = ("messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0

    def reset(self) -> None:
        """Set every counter back to 0 (a worker does it after fork)."""
        self.messages_in = 0
        self.messages_out = 0


stats = Stats()

#: The supervisor's worker number of this process; ``None`` when not clustered.
worker_id: int | None = None

_connections: set[ServerConnection] = set()
_topics: dict[Hashable, set[ServerConnection]] = {}
# connection -> the topics it subscribed to, so that remove() is O(its topics)
_subscriptions: dict[ServerConnection, set[Hashable]] = {}


def set_worker_id(value: int | None) -> None:
    """Record the worker number that every connection's ``worker_id`` reports."""
    global worker_id
    worker_id = value


def add(connection: ServerConnection) -> None:
    """Register an open connection (called by the server after the handshake)."""
    _connections.add(connection)


def remove(connection: ServerConnection) -> None:
    """Forget a connection and all its subscriptions (called when it closes)."""
    _connections.discard(connection)
    for topic in _subscriptions.pop(connection, ()):
        members = _topics.get(topic)
        if members is not None:
            members.discard(connection)
            if not members:
                del _topics[topic]


def subscribe(connection: ServerConnection, topic: Hashable) -> bool:
    """Subscribe a registered connection to ``topic``.

    Returns ``False`` (and records nothing) when the connection is not
    registered: before its opening handshake succeeded, or once its TCP
    connection is closed (a closed connection never receives anything).
    A closing one is still registered until then; broadcast() skips it.
    """
    if connection not in _connections:
        return False
    _topics.setdefault(topic, set()).add(connection)
    _subscriptions.setdefault(connection, set()).add(topic)
    return True


def unsubscribe(connection: ServerConnection, topic: Hashable) -> None:
    """Remove ``connection`` from ``topic``; nothing happens if it was not subscribed."""
    members = _topics.get(topic)
    if members is not None:
        members.discard(connection)
        if not members:
            del _topics[topic]
    subscribed = _subscriptions.get(connection)
    if subscribed is not None:
        subscribed.discard(topic)
        if not subscribed:
            del _subscriptions[connection]


def subscribers(topic: Hashable) -> set[ServerConnection]:
    """The connections subscribed to ``topic`` (a new set: safe to iterate while closing)."""
    return set(_topics.get(topic, ()))


def connections() -> set[ServerConnection]:
    """Every open connection of this process (a new set)."""
    return set(_connections)


def count() -> int:
    """How many connections of this process are open."""
    return len(_connections)
