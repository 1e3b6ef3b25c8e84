"""A single-writer / multi-reader message ring over shared memory.

One ring lives in a region of a ``MAP_SHARED`` mapping (a ``memoryview``
slice of it, inherited across ``fork``). Exactly one process writes it (its
worker); every other worker reads it with a cursor of its own. Nothing on the
hot path takes a lock and the writer never waits for a reader.

Layout of a region (every offset and every record size is a multiple of 8)::

    0   ring header (64 bytes)
          0  magic u32, version u16, unused u16
          8  capacity u64        bytes of the data area (C)
         16  tail u64            oldest intact record (absolute position)
         24  reserved u64        end of the record being written
         32  next_seq u64        sequence number of the next record
         40  committed u64       end of the last complete record
         48  writer pid u64      informational
    64  data area (C bytes)
    64+C guard (64 bytes): lets a reader unpack a whole record header at any
         aligned offset without a second bounds check

Positions are absolute byte counts since the ring was created (they never
wrap in 64 bits); a position ``p`` lives at ``p % C`` in the data area.

Record (``RECORD_HEADER`` = 24 bytes, then the topic, then the payload, padded to 8)::

    size u32, kind u8, opcode u8, topic_len u16, seq u64, payload_len u32, pad u32

A record never wraps: when it does not fit before the end of the data area,
the writer fills the rest with a ``KIND_PAD`` record (which takes no
sequence number) and writes the record at offset 0.

Commit protocol (a seqlock by position)::

    writer: store tail, then reserved (>= the end of the record; reserved
            runs up to min(64 KiB, C/16) ahead, so this store is rare), before touching
            any byte of the data area
            write the record bytes (header and topic in one pack, payload)
            store next_seq, then committed = end of the record
    reader: load committed, copy [cursor, committed) out in one piece
            (bounded per drain), then load reserved: if the copy starts before
            reserved - C the writer may have overwritten it meanwhile: throw it
            away and resync to tail (the oldest intact record); otherwise
            parse the private copy, bounds-checking every length.

A reader more than C behind ``committed`` was lapped: it resyncs to tail
too. Losses are counted from the gap in sequence numbers (``dropped``).

A record is visible only once ``committed`` covers it, so a writer killed in
the middle of a record leaves nothing visible; its replacement continues from
``committed`` / ``next_seq`` found in the header, so sequence numbers never go
backwards for the readers.

Memory model assumption (exercised by tests/bus with real processes): the
writer stores each header word through a ``memoryview`` cast to ``"Q"``
(``header[i] = v``: one aligned 8-byte ``memcpy``, a single store), and
``unpack_from`` is a single aligned 8-byte load. NOT ``struct.pack_into``:
it first zeroes the whole struct (``memset``) and then packs the fields, so
a reader could load a transient 0 -- a ``committed`` of 0 looked like a lap
and cost a reader its place (found by tests/bus under heavy CPU load). On x86-64 such loads and stores
are atomic and stores become visible in program order (TSO), which is all the
protocol needs. Weakly ordered CPUs (ARM64) would need barriers that Python
cannot express; the bus is supported on x86-64 only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from .base import MessageTooLarge

__all__ = [
    "KIND_PAD",
    "KIND_BROADCAST",
    "KIND_PUBLISH",
    "KIND_CONTROL",
    "OPCODE_TEXT",
    "OPCODE_BINARY",
    "RING_HEADER",
    "RECORD_HEADER",
    "GUARD",
    "region_size",
    "max_payload",
    "init_region",
    "RingWriter",
    "RingReader",
    "Record",
    "Handler",
]

MAGIC: Final = 0x47525753  # "SWRG"
VERSION: Final = 1

KIND_PAD: Final = 0
KIND_BROADCAST: Final = 1
KIND_PUBLISH: Final = 2
KIND_CONTROL: Final = 3
_KINDS: Final = frozenset({KIND_BROADCAST, KIND_PUBLISH, KIND_CONTROL})

# WebSocket opcodes of the message (RFC 6455 section 5.2): 0x1 text, 0x2 binary.
OPCODE_TEXT: Final = 0x1
OPCODE_BINARY: Final = 0x2

RING_HEADER: Final = 64
GUARD: Final = 64
RECORD_HEADER: Final = 24
MAX_TOPIC: Final = 0xFFFF

_OFF_MAGIC: Final = 0
_OFF_CAPACITY: Final = 8
_OFF_TAIL: Final = 16  # tail, reserved: one pack of two words
_OFF_NEXT_SEQ: Final = 32  # next_seq, committed: one pack of two words
_OFF_COMMITTED: Final = 40
_OFF_PID: Final = 48

_U64: Final = struct.Struct("<Q")
_U32: Final = struct.Struct("<I")
_PAIR: Final = struct.Struct("<QQ")
_MAGIC: Final = struct.Struct("<IHH")
_RECORD: Final = struct.Struct("<IBBHQI4x")
_PAD: Final = struct.Struct("<IB3x")
assert _RECORD.size == RECORD_HEADER

#: One record as a reader hands it out: (kind, opcode, topic, payload).
Record = tuple[int, int, bytes, bytes]
#: ``handle(kind, opcode, topic, payload)``, called by :meth:`RingReader.drain`.
Handler = Callable[[int, int, bytes, bytes], None]


def _align(n: int) -> int:
    return (n + 7) & ~7


def region_size(capacity: int) -> int:
    """Bytes a ring with a data area of ``capacity`` bytes occupies (64-aligned)."""
    return RING_HEADER + _check_capacity(capacity) + GUARD


def _check_capacity(capacity: int) -> int:
    if capacity < 1024 or capacity % 64:
        raise ValueError(f"ring capacity must be a multiple of 64, at least 1024: {capacity}")
    return capacity


def max_record(capacity: int) -> int:
    """The largest record (header, topic, payload, padding) a ring of ``capacity`` takes.

    Half the ring: a record plus the padding before it always fits, and a
    reader one record behind is never lapped by a single publish.
    """
    return capacity // 2


def max_payload(capacity: int, topic: bytes = b"") -> int:
    """The largest payload a ring of ``capacity`` bytes accepts with ``topic``."""
    return max_record(capacity) - RECORD_HEADER - len(topic)


def init_region(region: memoryview, capacity: int) -> None:
    """Format an empty ring in ``region`` (zeroed shared memory, before any fork)."""
    if len(region) < region_size(capacity):
        raise ValueError("region too small for the ring")
    _MAGIC.pack_into(region, _OFF_MAGIC, MAGIC, VERSION, 0)
    _U64.pack_into(region, _OFF_CAPACITY, capacity)
    _PAIR.pack_into(region, _OFF_TAIL, 0, 0)
    _PAIR.pack_into(region, _OFF_NEXT_SEQ, 0, 0)


def _check_region(region: memoryview) -> int:
    magic, version, _ = _MAGIC.unpack_from(region, _OFF_MAGIC)
    if magic != MAGIC or version != VERSION:
        raise ValueError("not a shardws ring (bad magic or version)")
    (capacity,) = _U64.unpack_from(region, _OFF_CAPACITY)
    _check_capacity(capacity)
    if len(region) < region_size(capacity):
        raise ValueError("region smaller than the ring it holds")
    return int(capacity)


class RingWriter:
    """The single writer of one ring.

    Attaching continues from the header (``committed``, ``next_seq``,
    ``tail``, ``reserved``), so a replacement worker takes over the ring of
    the worker it replaces without readers seeing sequence numbers go back.

    Not thread-safe; one writer per ring across all processes.
    """

    __slots__ = (
        "_buf",
        "_cap",
        "_head",
        "_seq",
        "_seq0",
        "_tail",
        "_reserved",
        "_limit",
        "_base",
        "_max_record",
        "_chunk",
        "_heads",
        "_hdr",
    )

    def __init__(self, region: memoryview, *, pid: int = 0) -> None:
        self._buf = region
        self._cap = _check_region(region)
        self._max_record = max_record(self._cap)
        self._chunk = min(1 << 16, self._cap // 16)
        self._heads: dict[int, Callable[..., None]] = {}
        tail, reserved = _PAIR.unpack_from(region, _OFF_TAIL)
        next_seq, committed = _PAIR.unpack_from(region, _OFF_NEXT_SEQ)
        # A writer killed mid-record left reserved > committed: the bytes in
        # between are garbage nobody can see; we overwrite them. reserved never
        # moves back, so readers keep distrusting what the dead writer touched.
        self._head: int = committed
        self._seq: int = next_seq
        self._seq0: int = next_seq
        self._tail: int = tail
        self._reserved: int = reserved
        # The header as 8-byte words: every store is one word (see the module doc).
        self._hdr = region[:RING_HEADER].cast("Q")
        self._set_limit()
        self._hdr[_OFF_PID // 8] = pid

    def _set_limit(self) -> None:
        # The fast path of write() needs one comparison: a record ending at or
        # before _limit is inside the reservation and does not cross the end
        # of the data area. _base turns a position into a buffer offset there.
        head = self._head
        lap_start = head - head % self._cap
        self._limit = min(self._reserved, lap_start + self._cap)
        self._base = lap_start - RING_HEADER

    @property
    def records(self) -> int:
        """Records written by this writer (pads excluded)."""
        return self._seq - self._seq0

    @property
    def capacity(self) -> int:
        """Size of the data area in bytes."""
        return self._cap

    @property
    def committed(self) -> int:
        """Absolute position of the end of the last complete record."""
        return self._head

    @property
    def next_seq(self) -> int:
        """Sequence number the next record gets."""
        return self._seq

    def max_payload(self, topic: bytes = b"") -> int:
        """The largest payload :meth:`write` accepts with ``topic``."""
        return max_payload(self._cap, topic)

    def _reserve(self, end: int) -> None:
        # Advance tail past every record the bytes up to `end` will overwrite,
        # then publish tail and reserved before the first byte is written.
        # Reserving a chunk ahead amortizes this over many records (readers
        # treat the chunk as being overwritten: they get C - chunk of slack).
        end = max(end, min(end + self._chunk, self._head + self._max_record))
        low = end - self._cap
        tail = self._tail
        if tail < low:
            buf = self._buf
            cap = self._cap
            unpack = _U32.unpack_from
            while tail < low:
                tail += unpack(buf, RING_HEADER + tail % cap)[0]
            self._tail = tail
        if end > self._reserved:
            self._reserved = end
        hdr = self._hdr
        hdr[2] = tail  # _OFF_TAIL, then _OFF_RESERVED: one store each, in this order
        hdr[3] = self._reserved

    def _make_room(self, kind: int, topic: bytes, plen: int, size: int) -> None:
        # Slow path of write(): checks, padding to the end of the data area,
        # reservation; leaves _head where the record goes and _limit past it.
        tlen = len(topic)
        if tlen > MAX_TOPIC:
            raise ValueError(f"topic longer than {MAX_TOPIC} bytes")
        if size > self._max_record:
            raise MessageTooLarge(plen, max_payload(self._cap, topic))
        if kind not in _KINDS:
            raise ValueError(f"unknown record kind: {kind}")
        head = self._head
        off = head % self._cap
        if off + size > self._cap:
            pad = self._cap - off
            self._reserve(head + pad + size)
            _PAD.pack_into(self._buf, RING_HEADER + off, pad, KIND_PAD)
            self._head = head + pad
        elif head + size > self._reserved:
            self._reserve(head + size)
        self._set_limit()

    def write(
        self,
        kind: int,
        opcode: int,
        topic: bytes,
        payload: bytes | bytearray | memoryview,
    ) -> int:
        """Append one record and commit it; return its sequence number.

        Never blocks and never waits for readers: a reader more than a ring
        behind loses the oldest records (and counts them).

        Raises :class:`MessageTooLarge` when the record exceeds half the
        ring (see :func:`max_payload`), ``ValueError`` for a topic longer
        than 65535 bytes or an unknown kind.
        """
        # Runs once per message: literals instead of the module constants
        # (24 = RECORD_HEADER, 32 = _OFF_NEXT_SEQ, 65535 = MAX_TOPIC, kinds 1..3).
        tlen = len(topic)
        plen = len(payload)
        size = (31 + tlen + plen) & -8
        end = self._head + size
        if end > self._limit or not 0 < kind < 4 or tlen > 65535:
            self._make_room(kind, topic, plen, size)
            end = self._head + size
        buf = self._buf
        seq = self._seq
        start = self._head - self._base
        # The record header and the topic in one pack (a Struct per topic length).
        pack_head = self._heads.get(tlen)
        if pack_head is None:
            pack_head = self._heads[tlen] = struct.Struct(f"{_RECORD.format}{tlen}s").pack_into
        pack_head(buf, start, size, kind, opcode, tlen, seq, plen, topic)
        start += 24 + tlen
        buf[start : start + plen] = payload
        self._head = end
        self._seq = seq + 1
        # next_seq then committed (words 4 and 5): the commit is the last store.
        hdr = self._hdr
        hdr[4] = seq + 1
        hdr[5] = end
        return seq

    def _write_torn(self, kind: int, opcode: int, topic: bytes, payload: bytes) -> None:
        """Test hook: reserve and write half a record, then stop before committing.

        Simulates a worker killed in the middle of a write. Leaves the writer
        unusable (its state is not advanced, as for a dead process).
        """
        size = _align(RECORD_HEADER + len(topic) + len(payload))
        head = self._head
        off = head % self._cap
        if off + size > self._cap:
            self._reserve(head + (self._cap - off) + size)
            off = 0
        else:
            self._reserve(head + size)
        record = _RECORD.pack(size, kind, opcode, len(topic), self._seq, len(payload)) + topic + payload
        half = len(record) // 2
        start = RING_HEADER + off
        self._buf[start : start + half] = record[:half]


class RingReader:
    """One reader's cursor over a ring written by another process.

    A new reader starts at the current end of the ring (it sees what is
    written after it attached). ``dropped`` counts the records this reader
    lost because the writer lapped it; ``received`` the records it read.

    Not thread-safe; one cursor per reading process and ring.
    """

    __slots__ = (
        "_buf",
        "_cap",
        "_span",
        "_pos",
        "_expected",
        "_soft",
        "dropped",
        "received",
        "resyncs",
    )

    def __init__(self, region: memoryview) -> None:
        self._buf = region
        self._cap = _check_region(region)
        # bytes copied per drain at most (a larger first record is copied whole)
        self._span = min(self._cap // 4, 1 << 18)
        self._pos: int = _U64.unpack_from(region, _OFF_COMMITTED)[0]
        # next_seq is stored before committed, so it may already count a
        # record not yet committed at our position: until the first record
        # is read, a sequence number below the expected one is accepted.
        self._expected: int = _U64.unpack_from(region, _OFF_NEXT_SEQ)[0]
        self._soft = True
        self.dropped = 0
        self.received = 0
        self.resyncs = 0

    @property
    def position(self) -> int:
        """Absolute position of the next record this reader reads."""
        return self._pos

    def pending(self) -> bool:
        """True when the writer has committed records this reader has not read."""
        return int(_U64.unpack_from(self._buf, _OFF_COMMITTED)[0]) != self._pos

    def _resync(self) -> int:
        # The oldest intact record, as published by the writer before it
        # reserved the space it is writing (tail >= reserved - C).
        (tail,) = _U64.unpack_from(self._buf, _OFF_TAIL)
        self.resyncs += 1
        return int(tail)

    def drain(self, handle: Handler, limit: int = 4096) -> int:
        """Call ``handle(kind, opcode, topic, payload)`` for up to ``limit`` records.

        Returns how many were handled. Records come in the writer's order,
        each handled at most once (also when ``handle`` raises: the error
        propagates after the record counts as read). The committed span is copied out
        of shared memory in one piece, then checked against the writer's
        reservation: a span the writer may have overwritten while it was
        copied is discarded, the reader resyncs to the oldest intact record
        and counts what it lost in ``dropped`` (from the gap in sequence
        numbers). Every length read is bounds-checked before it is used.
        """
        buf = self._buf
        cap = self._cap
        for _attempt in range(8):
            (committed,) = _U64.unpack_from(buf, _OFF_COMMITTED)
            pos = self._pos
            if committed == pos:
                return 0
            if committed - pos > cap or committed < pos:
                # Lapped: everything from pos on may be overwritten.
                pos = self._pos = self._resync()
                if committed - pos > cap or committed < pos:
                    continue
            off = pos % cap
            # Records never wrap: the span ends at the end of the data area.
            end = min(committed, pos + cap - off)
            span = end - pos
            if span > self._span:
                # Copy a bounded span, but at least the first record.
                (first_size,) = _U32.unpack_from(buf, RING_HEADER + off)
                span = max(self._span, min(first_size, span))
                end = pos + span
            start = RING_HEADER + off
            # + RECORD_HEADER: the guard lets us unpack a header at any offset < span.
            chunk = buf[start : start + span + RECORD_HEADER].tobytes()
            (reserved,) = _U64.unpack_from(buf, _OFF_TAIL + 8)
            if pos < reserved - cap:
                # The writer reserved space over part of what we copied.
                self._pos = self._resync()
                continue
            return self._parse(chunk, span, off, end == committed or end == pos + cap - off, handle, limit)
        return 0

    def _parse(
        self,
        chunk: bytes,
        span: int,
        off: int,
        exact: bool,
        handle: Handler,
        limit: int,
        _unpack: Callable[[bytes, int], tuple[int, ...]] = _RECORD.unpack_from,
    ) -> int:
        # Parse the private copy of [pos, pos + span). `exact`: span ends on a
        # record boundary (committed or the end of the data area), so a record
        # crossing it is corrupt rather than cut by the copy limit.
        expected = self._expected
        soft = self._soft  # until the first record: a sequence number may go back
        dropped = 0
        n = 0
        o = 0
        corrupt = False
        # The loop runs once per message: one test covers the usual record
        # (next sequence number, lengths inside it, inside the copy, a data
        # kind); pads, gaps and damage take the branch. Literals: 24 is
        # RECORD_HEADER, 0 KIND_PAD, kinds 1..3 the data kinds.
        try:
            while o < span and n < limit:
                size, kind, opcode, tlen, seq, plen = _unpack(chunk, o)
                end = o + size
                t = o + 24 + tlen  # where the payload starts
                if seq != expected or t + plen > end or end > span or size & 7 or not 0 < kind < 4:
                    if end > span or size < 8 or size & 7:
                        corrupt = exact or o == 0 or size < 8 or bool(size & 7)
                        break
                    if kind == 0:
                        if off + end != self._cap:
                            corrupt = True
                            break
                        o = end
                        continue
                    if t + plen > end or kind > 3:
                        corrupt = True
                        break
                    if seq > expected:
                        dropped += seq - expected
                    elif seq < expected and not (soft and n == 0):
                        corrupt = True  # a sequence number going back
                        break
                expected = seq + 1
                n += 1
                o = end  # read before handled: at most once
                handle(kind, opcode, chunk[t - tlen : t], chunk[t : t + plen])
        finally:
            self._pos += o
            self._expected = expected
            self._soft = soft and n == 0
            self.dropped += dropped
            self.received += n
        if corrupt:
            # Committed yet inconsistent (never expected): skip what is
            # committed; the next record's sequence number counts the loss.
            (self._pos,) = _U64.unpack_from(self._buf, _OFF_COMMITTED)
            self.resyncs += 1
        return n
