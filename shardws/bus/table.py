"""The worker table: one slot per worker in a shared ``mmap``.

The supervisor creates the table (:meth:`WorkerTable.create`) *before* it
forks, in an anonymous ``MAP_SHARED`` mapping that every worker inherits.
Each worker writes its own slot (heartbeat, counters, state); the supervisor
and ``shardws status`` read every slot. The bus places its rings after the
table in the same mapping: :meth:`WorkerTable.size` tells how many bytes the
table takes, :meth:`WorkerTable.attach` reads a table at an offset of an
existing buffer.

Layout (little endian, every field 8 bytes and 8-byte aligned)::

    header (64 bytes)
      0  magic         8s   b"SHWSTBL\\0"
      8  version       q    TABLE_VERSION
     16  max_workers   q
     24  slot_size     q    SLOT_SIZE
     32  supervisor    q    pid of the supervisor
     40  epoch         q    +1 each time a slot is claimed (after its fields)
    slot i at 64 + i * SLOT_SIZE (128 bytes)
      0  pid           q    0: slot free
      8  generation    q    incarnation of this slot: +1 for each process it hosts
     16  state         q    WorkerState
     24  started_at    d    CLOCK_MONOTONIC seconds when the process was forked
     32  heartbeat     d    CLOCK_MONOTONIC seconds of the worker loop's last stamp
     40  connections   q    OPEN connections
     48  messages_in   q
     56  messages_out  q
     64  bus_drops     q    bus messages this worker lost (ring overrun)
     72  ready_at      d    CLOCK_MONOTONIC seconds when it became READY (0: not yet)
     80  (reserved up to 128)

Times are ``time.monotonic()`` values: on Linux ``CLOCK_MONOTONIC`` is one
clock for the whole system, so a value written by a worker is comparable
with one read by the supervisor or by ``shardws status``.

Concurrency: each slot has one writer at a time (the supervisor while the
slot is free or booting, then its worker). Every field is one aligned
8-byte store, so a reader sees either the old or the new value of a field;
a snapshot of several fields is not atomic (they are statistics).

The ``epoch`` lets a reader cache which slots host (or are about to host) a
process: :meth:`Slot.claim`, which only the supervisor calls, stores the
slot's fields and then the new epoch (x86-64 stores become visible in
program order), so a reader that loads the epoch *before* scanning the slots
and finds it unchanged later knows that no slot was claimed since its scan.
"""

from __future__ import annotations

import enum
import mmap
import struct
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

__all__ = [
    "TABLE_MAGIC",
    "TABLE_VERSION",
    "HEADER_SIZE",
    "SLOT_SIZE",
    "WorkerState",
    "Slot",
    "WorkerTable",
]

TABLE_MAGIC = b"SHWSTBL\x00"
TABLE_VERSION = 1
HEADER_SIZE = 64
SLOT_SIZE = 128

_HEADER = struct.Struct("<8sqqqq")
_EPOCH = struct.Struct("<q")
_OFF_EPOCH = 40

T = TypeVar("T", int, float)


class WorkerState(enum.IntEnum):
    """The state of a slot, as the worker (or the supervisor) last wrote it."""

    EMPTY = 0  # no process
    BOOTING = 1  # forked, loading the application, binding its socket
    READY = 2  # accepting connections
    DRAINING = 3  # stopped accepting, closing its connections
    EXITED = 4  # the process is gone (reaped)


class _Field(Generic[T]):
    """One 8-byte field of a slot, read and written with ``struct``."""

    def __init__(self, offset: int, fmt: str) -> None:
        self.offset = offset
        self.struct = struct.Struct("<" + fmt)

    def __get__(self, slot: Slot, owner: type | None = None) -> T:
        value: T = self.struct.unpack_from(slot.buffer, slot.offset + self.offset)[0]
        return value

    def __set__(self, slot: Slot, value: T) -> None:
        self.struct.pack_into(slot.buffer, slot.offset + self.offset, value)


class Slot:
    """A view of one worker's slot; the attributes read and write the mapping."""

    pid: _Field[int] = _Field(0, "q")
    generation: _Field[int] = _Field(8, "q")
    _state: _Field[int] = _Field(16, "q")
    started_at: _Field[float] = _Field(24, "d")
    heartbeat: _Field[float] = _Field(32, "d")
    connections: _Field[int] = _Field(40, "q")
    messages_in: _Field[int] = _Field(48, "q")
    messages_out: _Field[int] = _Field(56, "q")
    bus_drops: _Field[int] = _Field(64, "q")
    ready_at: _Field[float] = _Field(72, "d")

    FIELDS = (
        "pid", "generation", "state", "started_at", "heartbeat", "connections",
        "messages_in", "messages_out", "bus_drops", "ready_at",
    )

    def __init__(self, buffer: Any, offset: int, index: int, header: int | None = None) -> None:
        self.buffer = buffer
        self.offset = offset
        self.index = index
        self._header = header  # offset of the table header (its epoch), if any

    @property
    def state(self) -> WorkerState:
        value = self._state
        try:
            return WorkerState(value)
        except ValueError:  # a torn or foreign value: treat as unknown
            return WorkerState.EMPTY

    @state.setter
    def state(self, value: WorkerState) -> None:
        self._state = int(value)

    def claim(self, pid: int, now: float) -> None:
        """Give the slot to a new process: bump the generation, zero the counters.

        The state becomes BOOTING before the process exists (the bus wakes the
        slot from now on); the table's epoch is bumped last.
        """
        self.pid = pid
        self.generation = self.generation + 1
        self.started_at = now
        self.heartbeat = now
        self.ready_at = 0.0
        self.connections = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bus_drops = 0
        self.state = WorkerState.BOOTING
        if self._header is not None:
            # Last store: whoever sees the new epoch sees the fields above.
            offset = self._header + _OFF_EPOCH
            _EPOCH.pack_into(self.buffer, offset, _EPOCH.unpack_from(self.buffer, offset)[0] + 1)

    def snapshot(self) -> dict[str, Any]:
        """Every field as a plain dict (``state`` by name), plus ``id``."""
        out: dict[str, Any] = {"id": self.index}
        for name in self.FIELDS:
            out[name] = getattr(self, name)
        out["state"] = self.state.name
        return out


class WorkerTable:
    """A fixed number of worker slots in a buffer shared by every process.

    Use :meth:`create` in the supervisor (before ``fork``) or :meth:`attach`
    to read a table that already exists in a buffer.
    """

    def __init__(self, buffer: Any, offset: int, max_workers: int) -> None:
        self.buffer = buffer
        self.offset = offset
        self.max_workers = max_workers
        self._slots = [
            Slot(buffer, offset + HEADER_SIZE + i * SLOT_SIZE, i, offset) for i in range(max_workers)
        ]

    @staticmethod
    def size(max_workers: int) -> int:
        """Bytes taken by a table of ``max_workers`` slots (a multiple of 64)."""
        return HEADER_SIZE + max_workers * SLOT_SIZE

    @property
    def nbytes(self) -> int:
        """Bytes taken by this table in its buffer; free space starts at ``offset + nbytes``."""
        return self.size(self.max_workers)

    @classmethod
    def create(cls, max_workers: int, *, supervisor_pid: int = 0, extra: int = 0) -> WorkerTable:
        """A new zeroed table in an anonymous shared mapping (inherited across ``fork``).

        ``extra`` bytes are added after the table (for the bus rings).
        Raises ``ValueError`` when ``max_workers < 1``.
        """
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        length = cls.size(max_workers) + extra
        buffer = mmap.mmap(-1, length, flags=mmap.MAP_SHARED)
        _HEADER.pack_into(buffer, 0, TABLE_MAGIC, TABLE_VERSION, max_workers, SLOT_SIZE, supervisor_pid)
        return cls(buffer, 0, max_workers)

    @classmethod
    def attach(cls, buffer: Any, offset: int = 0) -> WorkerTable:
        """The table written at ``offset`` of ``buffer``.

        Raises ``ValueError`` when the magic, version or slot size differ.
        """
        magic, version, max_workers, slot_size, _ = _HEADER.unpack_from(buffer, offset)
        if magic != TABLE_MAGIC or version != TABLE_VERSION or slot_size != SLOT_SIZE:
            raise ValueError(f"not a shardws worker table (v{TABLE_VERSION}) at offset {offset}")
        if offset + cls.size(max_workers) > len(buffer):
            raise ValueError("worker table is larger than its buffer")
        return cls(buffer, offset, max_workers)

    @property
    def supervisor_pid(self) -> int:
        value: int = _HEADER.unpack_from(self.buffer, self.offset)[4]
        return value

    @property
    def epoch(self) -> int:
        """How many slots were claimed (:meth:`Slot.claim`) since the table was created.

        Load it before reading the slots: an unchanged value later means no
        slot was claimed since (see the module docstring).
        """
        value: int = _EPOCH.unpack_from(self.buffer, self.offset + _OFF_EPOCH)[0]
        return value

    def slot(self, index: int) -> Slot:
        """The slot of worker ``index`` (``0 <= index < max_workers``); IndexError otherwise."""
        if not 0 <= index < self.max_workers:
            raise IndexError(f"worker {index} is outside the table (0..{self.max_workers - 1})")
        return self._slots[index]

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots)

    def __len__(self) -> int:
        return self.max_workers
