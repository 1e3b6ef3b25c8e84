"""The in-process bus: one worker, or plain ``shardws.serve()``.

Every message is delivered synchronously to this process's connections, so
code written against :mod:`shardws.cluster` behaves the same with one
process as with many. The size limit is the one a default shared-memory
ring has, so a message that works in development works in production.
"""

from __future__ import annotations

import asyncio

from ..config import SupervisorSettings
from .base import Bus, BusStats, Deliver, Message, MessageTooLarge, check_message
from .delivery import deliver_local
from .ring import max_payload
from .shm import ring_capacity

__all__ = ["LocalBus"]


class LocalBus(Bus):
    """A bus whose only worker is this process.

    Messages are limited to what a ``bus_size`` ring takes (default: the
    default ``--bus-size``), as on a :class:`ShmBus`.
    Before :meth:`start`, messages go to :func:`shardws.bus.deliver_local`.
    """

    def __init__(self, *, bus_size: int = SupervisorSettings.bus_size) -> None:
        self._capacity = ring_capacity(bus_size)  # the ring a ShmBus gets for bus_size
        self._deliver: Deliver | None = None
        self._out = 0

    def max_payload(self, topic: str | None = None) -> int:
        return max_payload(self._capacity, topic.encode() if topic else b"")

    def _send(self, topic: str | None, message: Message) -> None:
        _, payload = check_message(message)
        limit = self.max_payload(topic)
        if len(payload) > limit:
            raise MessageTooLarge(len(payload), limit)
        deliver = self._deliver or deliver_local
        self._out += 1
        if isinstance(message, str | bytes):
            deliver(topic, message)
        else:
            deliver(topic, bytes(payload))

    def publish(self, topic: str, message: Message) -> None:
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, not {type(topic).__name__}")
        self._send(topic, message)

    def broadcast(self, message: Message) -> None:
        self._send(None, message)

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver | None = None) -> None:
        self._deliver = deliver

    def close(self) -> None:
        self._deliver = None

    def stats(self) -> BusStats:
        return BusStats(messages_out=self._out)
