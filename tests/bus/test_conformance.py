"""One conformance suite for every bus implementation (see conftest.BUSES).

Each test publishes on ``cluster.publisher`` and checks what the connections
of ``cluster.remote`` (another worker; the same one for the in-process bus)
and of the publisher itself received.
"""

from __future__ import annotations

import pytest

from shardws.bus import MessageTooLarge

from .conftest import Cluster

N_ORDER = 2000


async def test_messages_arrive_in_publish_order(cluster: Cluster) -> None:
    cluster.remote.subscribe("alice", "room")
    cluster.publisher.subscribe("bob", "room")
    for i in range(N_ORDER):
        cluster.publisher.bus.publish("room", f"{i}")
    expected = [f"{i}" for i in range(N_ORDER)]
    assert await cluster.remote.wait_for("alice", N_ORDER) == expected
    assert await cluster.publisher.wait_for("bob", N_ORDER) == expected


async def test_broadcast_and_publish_interleave_in_order(cluster: Cluster) -> None:
    cluster.remote.subscribe("alice", "room")
    for i in range(100):
        if i % 2:
            cluster.publisher.bus.broadcast(f"b{i}")
        else:
            cluster.publisher.bus.publish("room", f"p{i}")
    got = await cluster.remote.wait_for("alice", 100)
    assert got == [f"b{i}" if i % 2 else f"p{i}" for i in range(100)]


# (connection, its topics, what it must receive) after publishing one message
# per topic "a", "b", "c" (in that order) and one broadcast "all".
TOPIC_CASES = [
    ("sub-a", ["a"], ["to a", "all"]),
    ("sub-ab", ["a", "b"], ["to a", "to b", "all"]),
    ("sub-none", [], ["all"]),
    ("sub-c", ["c"], ["to c", "all"]),
]


async def test_topics_reach_only_their_subscribers(cluster: Cluster) -> None:
    for name, topics, _ in TOPIC_CASES:
        cluster.remote.connect(name)
        for topic in topics:
            cluster.remote.subscribe(name, topic)
    for topic in ("a", "b", "c"):
        cluster.publisher.bus.publish(topic, f"to {topic}")
    cluster.publisher.bus.broadcast("all")
    for name, _, expected in TOPIC_CASES:
        assert await cluster.remote.wait_for(name, len(expected)) == expected


async def test_unsubscribed_connection_gets_nothing_more(cluster: Cluster) -> None:
    cluster.remote.subscribe("alice", "room")
    cluster.remote.subscribe("alice", "marker")
    cluster.publisher.bus.publish("room", "before")
    assert await cluster.remote.wait_for("alice", 1) == ["before"]
    cluster.remote.unsubscribe("alice", "room")
    cluster.publisher.bus.publish("room", "after")
    # In order per publisher: once the marker arrived, "after" was handled.
    cluster.publisher.bus.publish("marker", "end")
    assert await cluster.remote.wait_for("alice", 2) == ["before", "end"]


def sizes(limit: int) -> list[int]:
    return sorted({0, 1, 125, 126, 127, 65535, 65536, limit - 1, limit})


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_sizes_from_empty_to_the_maximum(cluster: Cluster, binary: bool) -> None:
    limit = cluster.publisher.bus.max_payload("room")
    cases = [n for n in sizes(limit) if n <= limit]
    cluster.remote.subscribe("alice", "room")
    messages: list[str | bytes] = [
        bytes(i % 251 for i in range(n)) if binary else "é" * (n // 2) + "x" * (n % 2)
        for n in cases
    ]
    # One at a time: two maximum-size messages fill a ring.
    for count, message in enumerate(messages, 1):
        cluster.publisher.bus.publish("room", message)
        got = await cluster.remote.wait_for("alice", count)
        assert type(got[-1]) is type(message) and got[-1] == message, len(message)
    assert len(cluster.remote.inbox["alice"]) == len(messages)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_too_large_is_refused_at_publish(cluster: Cluster, binary: bool) -> None:
    limit = cluster.publisher.bus.max_payload("room")
    message: str | bytes = b"x" * (limit + 1) if binary else "x" * (limit + 1)
    cluster.remote.subscribe("alice", "room")
    with pytest.raises(MessageTooLarge) as info:
        cluster.publisher.bus.publish("room", message)
    assert isinstance(info.value, ValueError)
    assert info.value.limit == limit and info.value.size == limit + 1
    limit = cluster.publisher.bus.max_payload(None)
    with pytest.raises(MessageTooLarge):
        cluster.publisher.bus.broadcast(b"x" * (limit + 1) if binary else "x" * (limit + 1))
    cluster.publisher.bus.publish("room", "next")
    assert await cluster.remote.wait_for("alice", 1) == ["next"]


@pytest.mark.parametrize(
    ("message", "delivered"),
    [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"view"), b"view"),
        ("text \u00e9\U0001f600", "text \u00e9\U0001f600"),
    ],
    ids=["bytes", "bytearray", "memoryview", "str"],
)
async def test_message_types(cluster: Cluster, message: object, delivered: str | bytes) -> None:
    cluster.remote.subscribe("alice", "room")
    cluster.publisher.bus.publish("room", message)  # type: ignore[arg-type]
    got = await cluster.remote.wait_for("alice", 1)
    assert got == [delivered] and type(got[0]) is type(delivered)


@pytest.mark.parametrize(("topic", "message"), [(1, "x"), ("room", 1), ("room", None)])
async def test_bad_arguments_raise_type_error(cluster: Cluster, topic: object, message: object) -> None:
    with pytest.raises(TypeError):
        cluster.publisher.bus.publish(topic, message)  # type: ignore[arg-type]


async def test_stats_count_messages_out(cluster: Cluster) -> None:
    before = cluster.publisher.bus.stats().messages_out
    cluster.remote.subscribe("alice", "room")
    for i in range(10):
        cluster.publisher.bus.publish("room", str(i))
    cluster.publisher.bus.broadcast("all")
    await cluster.remote.wait_for("alice", 11)
    assert cluster.publisher.bus.stats().messages_out == before + 11
    if cluster.remote is not cluster.publisher:
        stats = cluster.remote.bus.stats()
        assert (stats.messages_in, stats.dropped) == (11, 0)
