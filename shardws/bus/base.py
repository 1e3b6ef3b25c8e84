"""The bus interface shared by every implementation.

A bus carries cluster messages between the workers of one box (or, through
a broker, between boxes). Two kinds of message travel on it:

* a *broadcast* goes to every open connection of every worker;
* a *publish* goes to every connection subscribed to its topic, on every
  worker.

A bus never delivers to connections itself: each worker's bus hands every
message to the ``deliver`` callback given to :meth:`Bus.start`, which does
the local fan-out (by default :func:`shardws.bus.deliver_local`: the
frame-once :func:`shardws.broadcast` over the process registry). The
publishing worker's bus calls its own ``deliver`` directly at publish time;
other workers get the message through the transport.

Guarantees every implementation gives (and ``tests/bus/`` checks):

* at most once per connection;
* in publish order per publishing worker;
* ``publish`` / ``broadcast`` never block and never wait for a slow worker;
  messages are lost only when a worker falls a whole buffer behind, and then
  every loss is counted in :attr:`BusStats.dropped`.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ..exceptions import WebSocketException

__all__ = ["Bus", "BusStats", "Deliver", "Message", "MessageTooLarge", "check_message"]

#: A cluster message: ``str`` travels as a text message, bytes-like as binary.
Message = str | bytes | bytearray | memoryview

#: ``deliver(topic, message)``: hand one message to this worker's connections;
#: ``topic`` is ``None`` for a broadcast.
Deliver = Callable[[str | None, str | bytes], None]


class MessageTooLarge(WebSocketException, ValueError):
    """A message does not fit in the bus; raised by ``publish``/``broadcast``.

    ``size`` is the payload size in bytes, ``limit`` the largest accepted.
    Raise the ring size (``--bus-size``) to carry larger messages.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"message of {size} bytes is larger than the bus accepts ({limit} bytes); "
            "raise --bus-size (bus_size) to carry it"
        )


@dataclass(frozen=True, slots=True)
class BusStats:
    """Counters of one worker's bus.

    ``messages_out``: messages this worker published or broadcast;
    ``messages_in``: messages received from other workers;
    ``dropped``: messages from other workers lost because this worker fell a
    whole ring behind.
    """

    messages_out: int = 0
    messages_in: int = 0
    dropped: int = 0


def check_message(message: object) -> tuple[bool, bytes | bytearray | memoryview]:
    """Split a message into (is_text, payload bytes); ``TypeError`` otherwise."""
    if isinstance(message, str):
        return True, message.encode()
    if isinstance(message, bytes | bytearray | memoryview):
        return False, message
    raise TypeError(f"message must be str or bytes-like, not {type(message).__name__}")


class Bus(abc.ABC):
    """One worker's end of a cluster bus.

    Thread safety: call every method from the thread running the worker's
    event loop (``publish``/``broadcast`` before :meth:`start` are allowed:
    they deliver locally and queue the wake-up of the other workers).
    """

    @abc.abstractmethod
    def publish(self, topic: str, message: Message) -> None:
        """Send ``message`` to every connection subscribed to ``topic`` on every worker.

        Never blocks. Raises :class:`MessageTooLarge` when it cannot fit,
        ``TypeError`` for a message that is neither str nor bytes-like.
        """

    @abc.abstractmethod
    def broadcast(self, message: Message) -> None:
        """Send ``message`` to every open connection on every worker. Never blocks."""

    @abc.abstractmethod
    def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver | None = None) -> None:
        """Start receiving: messages from other workers go to ``deliver``.

        ``deliver`` defaults to :func:`shardws.bus.deliver_local`.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving and release this worker's resources (idempotent)."""

    @abc.abstractmethod
    def stats(self) -> BusStats:
        """This worker's counters."""

    @abc.abstractmethod
    def max_payload(self, topic: str | None = None) -> int:
        """The largest message payload (in bytes, encoded) accepted for ``topic``."""
