"""``broadcast()``: one message to many connections, framed once.

Policy (also in the README):

========================================  ===================================
connection                                what broadcast() does
========================================  ===================================
not OPEN (handshaking, closing, closed)   skipped silently (``skipped_closed``)
sending a fragmented message              skipped (``skipped_fragmented``);
                                          ``ConcurrencyError`` in the group
write buffer above its ``write_limit``    skipped (``skipped_slow``), never
(writing paused until it drains to the    buffered; ``RuntimeError`` in the group
low-water mark)
otherwise                                 the frame is written (``sent``)
========================================  ===================================

Frames: every connection without compression gets the SAME bytes object;
compressed connections whose ``frame_share_key`` are equal share one
compressed frame; the others (context takeover) compress their own.

Writes: the first broadcast of a loop iteration writes each frame at once;
a frame for a connection that already has something waiting for the end of
the iteration (what ``send()`` corked, or an earlier broadcast of the same
iteration) joins it. N broadcasts in one iteration cost a connection at most
two writes, in the order the messages were sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from .. import speedups
from ..exceptions import ConcurrencyError
from ..protocol.connection import State
from ..protocol.frames import OP_BINARY, OP_TEXT, serialize_final_frame
from . import registry
from .connection import ServerConnection

__all__ = ["broadcast", "BroadcastStats", "broadcast_stats"]

_OPEN = State.OPEN


class BroadcastStats:
    """Counters of :func:`broadcast` in this process (plain ints)."""

    __slots__ = ("sent", "skipped_closed", "skipped_slow", "skipped_fragmented")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Set every counter to 0."""
        self.sent = 0
        self.skipped_closed = 0
        self.skipped_slow = 0
        self.skipped_fragmented = 0

    @property
    def skipped(self) -> int:
        """Every connection a broadcast did not write to."""
        return self.skipped_closed + self.skipped_slow + self.skipped_fragmented

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict (for status reports)."""
        return {
            "sent": self.sent,
            "skipped": self.skipped,
            "skipped_closed": self.skipped_closed,
            "skipped_slow": self.skipped_slow,
            "skipped_fragmented": self.skipped_fragmented,
        }


broadcast_stats = BroadcastStats()


class _Delivery:
    """One broadcast: the frames it shares and the exceptions it collects."""

    __slots__ = ("opcode", "payload", "plain", "raise_exceptions", "shared", "exceptions")

    def __init__(self, opcode: int, payload: bytes, plain: bytes, raise_exceptions: bool) -> None:
        self.opcode = opcode
        self.payload = payload
        self.plain = plain
        self.raise_exceptions = raise_exceptions
        self.shared: dict[Any, bytes] = {}  # frame_share_key -> compressed frame
        self.exceptions: list[Exception] = []

    def deliver(self, connection: ServerConnection) -> int:
        """Write the message to one connection, or skip it (see the table): 1 if written."""
        stats = broadcast_stats
        protocol = connection._protocol
        if protocol is None or protocol.state is not _OPEN:
            stats.skipped_closed += 1
            return 0
        if connection._fragmented is not None:
            stats.skipped_fragmented += 1
            if connection._debug:
                connection.logger.debug("skipped broadcast: sending a fragmented message")
            if self.raise_exceptions:
                self.exceptions.append(ConcurrencyError("sending a fragmented message"))
            return 0
        # DESIGN: "a slow client must cost bounded memory; check
        # transport.get_write_buffer_size() before writing." The transport
        # calls pause_writing() as soon as its buffer passes write_limit (and
        # resume_writing() once it drained to the low-water mark):
        # _write_paused is that check, without a call per connection.
        if connection._write_paused:
            stats.skipped_slow += 1
            if connection._debug:
                connection.logger.debug("skipped broadcast: write buffer above write_limit")
            if self.raise_exceptions:
                self.exceptions.append(
                    RuntimeError("skipped broadcast: write buffer above write_limit")
                )
            return 0
        try:
            key = protocol.frame_share_key
            if key is None:
                frame = self.plain
            elif type(key) is object:
                # A compressor with context takeover: its frame is its own.
                frame = protocol.encode_message(self.opcode, self.payload)
            else:
                cached = self.shared.get(key)
                if cached is None:
                    cached = protocol.encode_message(self.opcode, self.payload)
                    self.shared[key] = cached
                frame = cached
            epoch = _epoch[0]
            if connection._corked or connection._broadcast_epoch is epoch:
                # Something waits for the end of this loop iteration already
                # (what send() corked, or the first broadcast of the
                # iteration went out): the frame joins it, one write.
                protocol.queue_frame(frame)
                connection._cork(len(frame))
            else:
                connection._broadcast_epoch = epoch
                connection._transport.write(frame)
        except Exception as exc:
            self.failed(connection, exc)
            return 0
        return 1

    def failed(self, connection: ServerConnection, exc: Exception) -> None:
        """Writing to ``connection`` raised ``exc``: collect or log it."""
        if self.raise_exceptions:
            failure = RuntimeError("failed to write message")
            failure.__cause__ = exc
            self.exceptions.append(failure)
        else:
            connection.logger.warning("skipped broadcast: failed to write message: %s", exc)


_broadcast_plain = speedups.broadcast_plain if speedups.connection_fast_paths else None

# The loop iteration, as an object: [the current epoch, the loop that will
# end it]. The first broadcast() of an iteration writes each connection's
# frame at once and marks the connection with the epoch; later broadcasts of
# the same iteration cork theirs behind it, so N broadcasts in one iteration
# cost each connection two writes, not N. The epoch only chooses between
# writing now and corking: corked frames are flushed by the connection's own
# server either way, so an epoch that ends early or late (another loop in
# another thread, a loop closed before its callback ran) changes how writes
# are grouped, never what is written.
_epoch: list[Any] = [object(), None]


def _next_epoch() -> None:
    _epoch[0] = object()
    _epoch[1] = None


def _advance_epoch() -> None:
    """Called by every broadcast(): make sure this iteration's epoch ends with it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # outside a loop: nothing to group with
        _next_epoch()
        return
    if _epoch[1] is not loop:
        loop.call_soon(_next_epoch)
        _epoch[1] = loop


def broadcast(
    connections: Iterable[ServerConnection],
    message: str | bytes | bytearray | memoryview,
    raise_exceptions: bool = False,
) -> None:
    """Send ``message`` to every OPEN connection of ``connections``; never waits.

    ``str`` is sent as text, bytes-likes as binary. Connections are skipped
    as the module's table says, and counted in :data:`broadcast_stats`;
    skips are logged at DEBUG on the connection's logger.

    Raises:
        TypeError: ``message`` is neither str nor bytes-like.
        ExceptionGroup: with ``raise_exceptions=True``, when some OPEN
            connections were skipped or failed (after writing to the others).
    """
    if isinstance(message, str):
        opcode = OP_TEXT
        payload = message.encode()
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode = OP_BINARY
        payload = bytes(message)
    else:
        raise TypeError("data must be str or bytes-like")

    plain = serialize_final_frame(opcode, payload)  # the one uncompressed frame
    delivery = _Delivery(opcode, payload, plain, raise_exceptions)
    _advance_epoch()
    if _broadcast_plain is not None:
        # The C loop writes (or corks) ``plain`` itself where deliver() would
        # do only that, and calls deliver() (or failed()) for every other
        # connection.
        sent = _broadcast_plain(
            connections, plain, delivery.deliver, delivery.failed, _epoch[0]
        )
    else:
        sent = 0
        for connection in connections:
            sent += delivery.deliver(connection)
    exceptions = delivery.exceptions
    stats = broadcast_stats
    stats.sent += sent
    registry.stats.messages_out += sent
    if exceptions:
        raise ExceptionGroup("skipped broadcast", exceptions)
