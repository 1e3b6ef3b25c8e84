"""The shared-memory bus: one ring per worker, one eventfd per worker.

The supervisor creates the rings (in its ``MAP_SHARED`` mapping) and the
eventfds before it forks; every worker inherits them and attaches a
:class:`ShmBus` to its slot:

* it is the only writer of its slot's ring (a replacement worker takes the
  ring over, continuing from the committed position and sequence number);
* it reads every other slot's ring with cursors of its own;
* after a batch of writes (once per event-loop iteration) it signals every
  other worker's eventfd; each worker waits on its own eventfd with
  ``loop.add_reader`` and drains everything available per wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .base import Bus, BusStats, Deliver, Message, check_message
from .delivery import deliver_local
from .ring import (
    MAX_TOPIC,
    RingReader,
    RingWriter,
    init_region,
    region_size,
)
from .table import WorkerState, WorkerTable

__all__ = [
    "ShmBus",
    "BusLayout",
    "SharedRings",
    "ring_capacity",
    "rings_size",
    "ring_regions",
    "init_rings",
    "create_eventfds",
]

logger = logging.getLogger("shardws.bus")

_TOPIC_CACHE = 4096
#: Slot states that host a process, or will once the supervisor has forked it.
_LIVE = frozenset({WorkerState.BOOTING, WorkerState.READY, WorkerState.DRAINING})


def ring_capacity(bus_size: int) -> int:
    """The data-area size used for a ``--bus-size`` of ``bus_size`` bytes (64-aligned)."""
    return max(1024, bus_size - bus_size % 64)


def rings_size(slots: int, capacity: int) -> int:
    """Bytes the rings of ``slots`` workers take in the shared mapping."""
    return slots * region_size(capacity)


def ring_regions(view: memoryview, offset: int, slots: int, capacity: int) -> list[memoryview]:
    """The ring region of every slot, laid out from ``offset`` in ``view``."""
    step = region_size(capacity)
    if offset % 64 or offset + slots * step > len(view):
        raise ValueError("rings do not fit the mapping at this offset")
    return [view[offset + i * step : offset + (i + 1) * step] for i in range(slots)]


def init_rings(view: memoryview, offset: int, slots: int, capacity: int) -> list[memoryview]:
    """Format empty rings for ``slots`` workers (before the fork); return the regions."""
    regions = ring_regions(view, offset, slots, capacity)
    for region in regions:
        init_region(region, capacity)
    return regions


def create_eventfds(slots: int) -> list[int]:
    """One non-blocking eventfd per slot (inherited across fork)."""
    return [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(slots)]


def close_eventfds(fds: Sequence[int]) -> None:
    """Close the eventfds of :func:`create_eventfds` (already closed ones are skipped)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class SharedRings:
    """A stand-alone mapping holding only rings, plus the eventfds.

    The supervisor puts the rings after its worker table in its own mapping
    (with :func:`init_rings`); this class is for tests, benchmarks and
    embedders that fork workers themselves. Create before forking.
    """

    def __init__(self, slots: int, bus_size: int) -> None:
        self.slots = slots
        self.capacity = ring_capacity(bus_size)
        self.mapping = mmap.mmap(-1, rings_size(slots, self.capacity))
        self.view = memoryview(self.mapping)
        self.regions = init_rings(self.view, 0, slots, self.capacity)
        self.eventfds = create_eventfds(slots)

    def bus(self, worker_id: int, **kwargs: object) -> ShmBus:
        """Attach a :class:`ShmBus` for ``worker_id`` (in the worker process)."""
        return ShmBus(self.regions, self.eventfds, worker_id, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the eventfds; the mapping goes when the last process drops it."""
        close_eventfds(self.eventfds)
        self.eventfds = []
        for region in self.regions:
            region.release()
        self.view.release()
        try:
            self.mapping.close()
        except BufferError:  # a bus still holds a view; the GC unmaps it
            pass


class ShmBus(Bus):
    """One worker's end of the shared-memory bus.

    ``regions[i]`` is the ring of slot ``i`` and ``eventfds[i]`` its
    wake-up eventfd; this worker writes ``regions[worker_id]`` and reads the
    others. ``report`` (optional) is called with the counters after every
    batch sent or received, e.g. to copy them into the worker table.

    Thread safety: use from the worker's event-loop thread only.
    """

    def __init__(
        self,
        regions: Sequence[memoryview],
        eventfds: Sequence[int],
        worker_id: int,
        *,
        batch: int = 4096,
        report: Callable[[BusStats], None] | None = None,
        table: WorkerTable | None = None,
    ) -> None:
        if not 0 <= worker_id < len(regions) or len(eventfds) != len(regions):
            raise ValueError("worker_id out of range, or one eventfd per ring needed")
        self.worker_id = worker_id
        self._writer = RingWriter(regions[worker_id], pid=os.getpid())
        self._write = self._writer.write
        self._all_readers = [(i, RingReader(r)) for i, r in enumerate(regions) if i != worker_id]
        self._all_fds = [(i, fd) for i, fd in enumerate(eventfds) if i != worker_id]
        self._readers = [reader for _, reader in self._all_readers]
        self._wake_fds = [fd for _, fd in self._all_fds]
        self._table = table
        self._dropped_reported = 0
        self._refreshed = -1.0
        self._epoch = -1
        self._refresh_slots()
        self._efd = eventfds[worker_id]
        self._batch_limit = batch
        self._report = report
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver = deliver_local
        self._flush_pending = False
        self._drain_pending = False
        self._topics_out: dict[str, bytes] = {}
        self._topics_in: dict[bytes, str] = {}

    # ------------------------------------------------------------ sending

    def max_payload(self, topic: str | None = None) -> int:
        return self._writer.max_payload(topic.encode() if topic else b"")

    def _topic(self, topic: str) -> bytes:
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, not {type(topic).__name__}")
        topic_bytes = topic.encode()
        if len(topic_bytes) > MAX_TOPIC:
            raise ValueError(f"topic longer than {MAX_TOPIC} bytes")
        if len(self._topics_out) >= _TOPIC_CACHE:
            self._topics_out.clear()
        self._topics_out[topic] = topic_bytes
        return topic_bytes

    def publish(self, topic: str, message: Message) -> None:
        topic_bytes = self._topics_out.get(topic)
        if topic_bytes is None:
            topic_bytes = self._topic(topic)
        # Kinds and opcodes as literals on this hot path: 2 = KIND_PUBLISH,
        # 1 = OPCODE_TEXT, 2 = OPCODE_BINARY.
        if type(message) is bytes:
            self._write(2, 2, topic_bytes, message)
            self._deliver(topic, message)
        elif type(message) is str:
            self._write(2, 1, topic_bytes, message.encode())
            self._deliver(topic, message)
        else:
            is_text, payload = check_message(message)
            self._write(2, 1 if is_text else 2, topic_bytes, payload)
            self._deliver(topic, message if is_text else bytes(payload))  # type: ignore[arg-type]
        if not self._flush_pending:
            self._schedule_flush()

    def broadcast(self, message: Message) -> None:
        if type(message) is bytes:
            self._write(1, 2, b"", message)
            self._deliver(None, message)
        elif type(message) is str:
            self._write(1, 1, b"", message.encode())
            self._deliver(None, message)
        else:
            is_text, payload = check_message(message)
            self._write(1, 1 if is_text else 2, b"", payload)
            self._deliver(None, message if is_text else bytes(payload))  # type: ignore[arg-type]
        if not self._flush_pending:
            self._schedule_flush()

    def _refresh_slots(self) -> None:
        # With a worker table, wake only the slots that host a process (or are
        # claimed for one) and read only the rings of slots that ever had one
        # (a table has many spare slots). The view is a cache that must never
        # miss a reader or a writer: a slot is claimed (state BOOTING, the
        # generation bumped, then the table's epoch) before its process is
        # forked, so a new worker exists only after the epoch changed, and the
        # view is rescanned on every flush and drain that finds a new epoch.
        # A cached slot whose process exited only costs a spurious wake-up; the
        # periodic rescan (every 50 ms) drops it. (A rescan by time alone let a
        # worker that scanned just before another's claim publish for up to
        # 50 ms without waking it, or drain without reading its ring: the
        # messages then waited for the next publish, forever if none came.)
        table = self._table
        if table is None:
            return
        epoch = table.epoch  # loaded before the slots (see WorkerTable)
        now = time.monotonic()
        if epoch == self._epoch and now - self._refreshed < 0.05:
            return
        self._epoch = epoch
        self._refreshed = now
        live = set()
        used = set()
        for slot in table:
            if slot.generation:
                used.add(slot.index)
                if slot.state in _LIVE:  # from claim() on: the pid may not be written yet
                    live.add(slot.index)
        self._wake_fds = [fd for i, fd in self._all_fds if i in live]
        self._readers = [reader for i, reader in self._all_readers if i in used]

    def _schedule_flush(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        # One wake-up per batch: everything published during this loop
        # iteration is already committed.
        self._flush_pending = False
        if self._table is not None:
            self._refresh_slots()
        for fd in self._wake_fds:
            try:
                os.eventfd_write(fd, 1)
            except BlockingIOError:  # counter saturated: the reader is awake anyway
                pass
            except OSError:  # pragma: no cover - eventfd closed during shutdown
                pass
        if self._report is not None:
            self._report(self.stats())

    # ---------------------------------------------------------- receiving

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Deliver | None = None) -> None:
        if self._loop is not None:
            raise RuntimeError("bus already started")
        self._loop = loop
        self._deliver = deliver or deliver_local
        loop.add_reader(self._efd, self._on_wake)
        # Whatever other workers committed since we attached (and a wake-up
        # they sent before we listened) must not wait for the next signal.
        self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_pending and self._loop is not None:
            self._drain_pending = True
            self._loop.call_soon(self.drain)

    def _on_wake(self) -> None:
        try:
            os.eventfd_read(self._efd)  # reset before draining: no lost wake-up
        except BlockingIOError:
            pass
        self.drain()

    def drain(self) -> int:
        """Deliver everything the other workers committed (up to one batch each).

        Schedules itself again when a ring had more than a batch waiting.
        Returns how many messages were delivered.
        """
        self._drain_pending = False
        if self._table is not None:
            self._refresh_slots()
        limit = self._batch_limit
        handle = self._handle
        more = False
        n = 0
        for reader in self._readers:
            n += reader.drain(handle, limit)
            if reader.pending():  # a bounded batch: come back next iteration
                more = True
        if n and self._table is not None:
            dropped = sum(r.dropped for r in self._readers)
            if dropped != self._dropped_reported:
                self._dropped_reported = dropped
                self._table.slot(self.worker_id).bus_drops = dropped
        if n and self._report is not None:
            self._report(self.stats())
        if more:
            self._schedule_drain()
        return n

    def _handle(self, kind: int, opcode: int, topic_bytes: bytes, payload: bytes) -> None:
        # One record from another worker (1 = text opcode; kinds: 2 publish, 1 broadcast).
        try:
            if kind == 2:
                topic = self._topics_in.get(topic_bytes)
                if topic is None:
                    topic = self._new_topic(topic_bytes)
                self._deliver(topic, payload.decode() if opcode == 1 else payload)
            elif kind == 1:
                self._deliver(None, payload.decode() if opcode == 1 else payload)
        except Exception:
            logger.exception("bus delivery failed")

    def _new_topic(self, topic_bytes: bytes) -> str:
        topics = self._topics_in
        if len(topics) >= _TOPIC_CACHE:
            topics.clear()
        topic = topics[topic_bytes] = topic_bytes.decode()
        return topic

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._efd)
        self._loop = None

    def stats(self) -> BusStats:
        return BusStats(
            messages_out=self._writer.records,
            messages_in=sum(r.received for _, r in self._all_readers),
            dropped=sum(r.dropped for _, r in self._all_readers),
        )


class BusLayout:
    """The bus of a supervisor: rings after the worker table, one eventfd per slot.

    The supervisor creates it before forking (:meth:`create`, with a table
    made by ``WorkerTable.create(n, extra=BusLayout.extra(n, bus_size))``);
    each worker, including a replacement, calls :meth:`attach` for its slot
    after the fork.
    """

    def __init__(self, table: WorkerTable, capacity: int, eventfds: list[int]) -> None:
        self.table = table
        self.capacity = capacity
        self.eventfds = eventfds
        self.regions = ring_regions(
            memoryview(table.buffer), table.offset + table.nbytes, len(table), capacity
        )

    @staticmethod
    def extra(max_workers: int, bus_size: int) -> int:
        """Bytes the rings of ``max_workers`` slots need after the table."""
        return rings_size(max_workers, ring_capacity(bus_size))

    @classmethod
    def create(cls, table: WorkerTable, bus_size: int) -> BusLayout:
        """Format the rings in ``table``'s mapping and open the eventfds (before fork)."""
        capacity = ring_capacity(bus_size)
        layout = cls(table, capacity, create_eventfds(len(table)))
        for region in layout.regions:
            init_region(region, capacity)
        return layout

    def attach(self, worker_id: int, **kwargs: Any) -> ShmBus:
        """This worker's :class:`ShmBus` (in the worker, after fork)."""
        return ShmBus(self.regions, self.eventfds, worker_id, table=self.table, **kwargs)

    def close(self) -> None:
        """Close the eventfds (the supervisor, at exit)."""
        close_eventfds(self.eventfds)
        self.eventfds = []
