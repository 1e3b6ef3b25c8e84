"""The ring on its own: commit protocol, wrap-around, lapped readers, torn and corrupt records."""

from __future__ import annotations

import mmap
import struct

import pytest

from shardws.bus import MessageTooLarge
from shardws.bus.ring import (
    KIND_BROADCAST,
    KIND_PUBLISH,
    OPCODE_BINARY,
    OPCODE_TEXT,
    RECORD_HEADER,
    RING_HEADER,
    Record,
    RingReader,
    RingWriter,
    init_region,
    max_payload,
    region_size,
)

CAPACITY = 4096


@pytest.fixture
def region() -> memoryview:
    mapping = mmap.mmap(-1, region_size(CAPACITY))
    view = memoryview(mapping)
    init_region(view, CAPACITY)
    return view


def drain_all(reader: RingReader) -> list[Record]:
    out: list[Record] = []
    while reader.drain(lambda *record: out.append(record)):
        pass
    return out


def payloads(records: list[Record]) -> list[bytes]:
    return [payload for _, _, _, payload in records]


def test_records_round_trip_with_kind_opcode_topic(region: memoryview) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    cases = [
        (KIND_PUBLISH, OPCODE_TEXT, b"room", b"hello"),
        (KIND_BROADCAST, OPCODE_BINARY, b"", b"\x00\xff"),
        (KIND_PUBLISH, OPCODE_BINARY, b"t" * 100, b""),
    ]
    for case in cases:
        writer.write(*case)
    assert drain_all(reader) == cases
    assert (reader.received, reader.dropped) == (3, 0)


# Payload sizes written in a repeating pattern across many wraps of the ring:
# each pattern makes the padding at the end of the data area take other sizes.
WRAP_PATTERNS = [[0], [1, 7, 8, 9], [100], [500, 3], [max_payload(CAPACITY) // 3]]


@pytest.mark.parametrize("pattern", WRAP_PATTERNS, ids=str)
def test_wrap_around_keeps_every_record_in_order(region: memoryview, pattern: list[int]) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    sent: list[bytes] = []
    received: list[Record] = []
    for i in range(800):
        size = pattern[i % len(pattern)]
        payload = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
        writer.write(KIND_BROADCAST, OPCODE_BINARY, b"", payload)
        sent.append(payload)
        if i % 2:  # the reader stays within the ring
            received += drain_all(reader)
    received += drain_all(reader)
    assert payloads(received) == sent
    assert reader.dropped == 0
    assert writer.committed > 4 * CAPACITY  # it did wrap


@pytest.mark.parametrize("rings", [1, 2, 10])
def test_lapped_reader_skips_to_the_oldest_record_and_counts_the_loss(
    region: memoryview, rings: int
) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    total = rings * CAPACITY // 64
    for i in range(total):
        writer.write(KIND_BROADCAST, OPCODE_BINARY, b"", i.to_bytes(8, "big") * 5)  # 64-byte records
    got = [int.from_bytes(p[:8], "big") for p in payloads(drain_all(reader))]
    assert got == list(range(total - len(got), total))  # the newest ones, consecutive
    assert reader.dropped == total - len(got) > 0
    assert reader.received == len(got)
    writer.write(KIND_BROADCAST, OPCODE_BINARY, b"", b"later")
    assert payloads(drain_all(reader)) == [b"later"]


def test_reader_attached_later_starts_at_the_end(region: memoryview) -> None:
    writer = RingWriter(region)
    writer.write(KIND_BROADCAST, OPCODE_TEXT, b"", b"old")
    reader = RingReader(region)
    writer.write(KIND_BROADCAST, OPCODE_TEXT, b"", b"new")
    assert payloads(drain_all(reader)) == [b"new"]
    assert reader.dropped == 0


def test_torn_record_is_invisible_and_a_new_writer_takes_over(region: memoryview) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    for i in range(3):
        writer.write(KIND_BROADCAST, OPCODE_TEXT, b"", b"%d" % i)
    writer._write_torn(KIND_BROADCAST, OPCODE_TEXT, b"", b"half written" * 10)
    assert payloads(drain_all(reader)) == [b"0", b"1", b"2"]
    assert not reader.pending()
    replacement = RingWriter(region)  # the respawned worker
    assert replacement.next_seq == 3
    for i in range(3, 6):
        replacement.write(KIND_BROADCAST, OPCODE_TEXT, b"", b"%d" % i)
    assert payloads(drain_all(reader)) == [b"3", b"4", b"5"]
    assert reader.dropped == 0


# Garbage written over the header of a committed record the reader has not
# read yet (not by the writer: a stray store). (field offset, packed value)
CORRUPTIONS = [
    (0, struct.pack("<I", 0)),  # size 0
    (0, struct.pack("<I", 13)),  # size not a multiple of 8
    (0, struct.pack("<I", 1 << 30)),  # size beyond the ring
    (4, bytes([9])),  # unknown kind
    (6, struct.pack("<H", 60000)),  # topic longer than the record
    (16, struct.pack("<I", 1 << 31)),  # payload longer than the record
    (8, struct.pack("<Q", 0)),  # sequence number going back
]


@pytest.mark.parametrize(("field", "value"), CORRUPTIONS, ids=[c[1].hex() for c in CORRUPTIONS])
def test_corrupt_committed_record_never_crashes_the_reader(
    region: memoryview, field: int, value: bytes
) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    for i in range(4):
        writer.write(KIND_PUBLISH, OPCODE_TEXT, b"t", b"%d" % i)
    assert payloads(drain_all(reader)) == [b"0", b"1", b"2", b"3"]
    start = writer.committed
    for i in range(4, 8):
        writer.write(KIND_PUBLISH, OPCODE_TEXT, b"t", b"%d" % i)
    offset = RING_HEADER + start % CAPACITY + field
    region[offset : offset + len(value)] = value
    received = payloads(drain_all(reader))
    assert all(p in {b"4", b"5", b"6", b"7"} for p in received)
    assert reader.resyncs >= 1
    writer.write(KIND_PUBLISH, OPCODE_TEXT, b"t", b"8")
    assert payloads(drain_all(reader)) == [b"8"]
    assert reader.received + reader.dropped == 9


def test_largest_record_fits_and_one_byte_more_is_refused(region: memoryview) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    limit = writer.max_payload(b"topic")
    assert limit == CAPACITY // 2 - RECORD_HEADER - 5
    for _ in range(3):  # the second one needs padding and wraps
        writer.write(KIND_PUBLISH, OPCODE_BINARY, b"topic", b"x" * limit)
        assert payloads(drain_all(reader)) == [b"x" * limit]
    with pytest.raises(MessageTooLarge):
        writer.write(KIND_PUBLISH, OPCODE_BINARY, b"topic", b"x" * (limit + 1))
    assert reader.dropped == 0


@pytest.mark.parametrize(
    ("kind", "topic", "error"),
    [(7, b"", ValueError), (KIND_PUBLISH, b"t" * 70000, ValueError)],
    ids=["unknown kind", "topic too long"],
)
def test_writer_refuses_bad_records(kind: int, topic: bytes, error: type[Exception]) -> None:
    mapping = mmap.mmap(-1, region_size(1 << 18))
    region = memoryview(mapping)
    init_region(region, 1 << 18)
    with pytest.raises(error):
        RingWriter(region).write(kind, OPCODE_BINARY, topic, b"")


@pytest.mark.parametrize("capacity", [0, 1000, 1030])
def test_bad_capacity_is_refused(capacity: int) -> None:
    with pytest.raises(ValueError):
        init_region(memoryview(bytearray(1 << 16)), capacity)


def test_region_without_a_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="magic"):
        RingReader(memoryview(bytearray(region_size(CAPACITY))))


# A reader may read next_seq one ahead of committed (the writer stores it
# first): until its first record, a sequence number below the expected one is
# the record it missed the commit of, not damage. After that record, one
# going back is damage, also within the same drain.
# (patch the second record's seq to the first one's, payloads read, resyncs)
SOFT_START_CASES = [
    (False, [b"0", b"1", b"2"], 0),
    (True, [b"0"], 1),
]


@pytest.mark.parametrize(("repeat_seq", "expected", "resyncs"), SOFT_START_CASES)
def test_sequence_number_may_go_back_only_before_the_first_record(
    region: memoryview, repeat_seq: bool, expected: list[bytes], resyncs: int
) -> None:
    writer, reader = RingWriter(region), RingReader(region)
    reader._expected += 1  # next_seq was read while a record was not committed yet
    first = writer.committed
    for i in range(3):
        writer.write(KIND_PUBLISH, OPCODE_TEXT, b"t", b"%d" % i)
    if repeat_seq:
        second = RING_HEADER + first % CAPACITY + (RECORD_HEADER + 1 + 1 + 7) // 8 * 8
        region[second + 8 : second + 16] = struct.pack("<Q", 0)
    assert payloads(drain_all(reader)) == expected
    assert (reader.dropped, reader.resyncs) == (0, resyncs)
