"""ShmBus details the conformance suite does not reach: errors, caches, wake-ups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from shardws.bus import SharedRings, ShmBus, shm


@pytest.fixture
def rings() -> Iterator[SharedRings]:
    value = SharedRings(2, 1 << 16)
    yield value
    value.close()


def pair(rings: SharedRings) -> tuple[ShmBus, ShmBus, list[tuple[str | None, str | bytes]]]:
    got: list[tuple[str | None, str | bytes]] = []
    writer, reader = rings.bus(0), rings.bus(1)
    writer._deliver = lambda topic, message: None
    reader._deliver = lambda topic, message: got.append((topic, message))
    return writer, reader, got


def test_a_failing_delivery_is_logged_and_never_repeated(
    rings: SharedRings, caplog: pytest.LogCaptureFixture
) -> None:
    writer, reader, got = pair(rings)

    def deliver(topic: str | None, message: str | bytes) -> None:
        if message == "bad":
            raise RuntimeError("handler bug")
        got.append((topic, message))

    reader._deliver = deliver
    for message in ("one", "bad", "two"):
        writer.publish("t", message)
    with caplog.at_level(logging.ERROR, logger="shardws.bus"):
        assert reader.drain() == 3
    assert got == [("t", "one"), ("t", "two")]
    assert "bus delivery failed" in caplog.text
    assert reader.drain() == 0


@pytest.mark.parametrize(
    ("message", "delivered"),
    [(bytearray(b"ba"), b"ba"), (memoryview(b"mv"), b"mv"), ("text", "text"), (b"bytes", b"bytes")],
    ids=["bytearray", "memoryview", "str", "bytes"],
)
def test_broadcast_message_types(rings: SharedRings, message: object, delivered: str | bytes) -> None:
    writer, reader, got = pair(rings)
    local: list[object] = []
    writer._deliver = lambda topic, m: local.append(m)
    writer.broadcast(message)  # type: ignore[arg-type]
    reader.drain()
    assert got == [(None, delivered)] and local == [delivered]


def test_topic_caches_stay_bounded(rings: SharedRings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm, "_TOPIC_CACHE", 4)
    writer, reader, got = pair(rings)
    for i in range(10):
        writer.publish(f"topic {i}", b"x")
        reader.drain()
    assert [topic for topic, _ in got] == [f"topic {i}" for i in range(10)]
    assert len(writer._topics_out) <= 4 and len(reader._topics_in) <= 4


def test_topic_longer_than_a_record_allows_is_refused(rings: SharedRings) -> None:
    writer, _, _ = pair(rings)
    with pytest.raises(ValueError, match="topic"):
        writer.publish("t" * 70_000, b"")


async def test_start_twice_is_refused_and_a_report_hook_sees_the_counters(rings: SharedRings) -> None:
    reports = []
    bus = ShmBus(rings.regions, rings.eventfds, 1, report=reports.append)
    loop = asyncio.get_running_loop()
    bus.start(loop, lambda topic, message: None)
    with pytest.raises(RuntimeError):
        bus.start(loop)
    writer = rings.bus(0)
    writer._deliver = lambda topic, message: None
    writer.publish("t", b"x")  # not started: wakes the reader at once
    async with asyncio.timeout(10):
        while not reports:
            await asyncio.sleep(0)  # the reader's eventfd callback runs on the loop
    assert reports[-1].messages_in == 1
    bus.close()
    bus.close()  # idempotent


@pytest.mark.parametrize(("slots", "worker_id", "fds"), [(2, 2, 2), (2, -1, 2), (2, 0, 1)])
def test_bad_attachment_is_refused(rings: SharedRings, slots: int, worker_id: int, fds: int) -> None:
    with pytest.raises(ValueError):
        ShmBus(rings.regions[:slots], rings.eventfds[:fds], worker_id)
