"""Bus harness: every bus implementation behind one fixture.

A *node* is one worker's end of a bus plus a miniature registry (fake
connections by name, topic subscriptions) fed by the bus's ``deliver``
callback, the way :func:`shardws.bus.deliver_local` feeds the real registry.
The conformance suite runs on each implementation listed in ``BUSES``; a
broker (Redis bridge) joins by adding a factory here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from shardws.bus import Bus, LocalBus, SharedRings

DEADLINE = 10.0  # seconds: a generous bound for a loaded 2-core box


@dataclass
class Node:
    """One worker: its bus, its connections and what each received."""

    bus: Bus
    subscriptions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    connections: set[str] = field(default_factory=set)
    inbox: dict[str, list[str | bytes]] = field(default_factory=lambda: defaultdict(list))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def connect(self, name: str) -> str:
        self.connections.add(name)
        return name

    def subscribe(self, name: str, topic: str) -> None:
        self.subscriptions[topic].add(self.connect(name))

    def unsubscribe(self, name: str, topic: str) -> None:
        self.subscriptions[topic].discard(name)

    def deliver(self, topic: str | None, message: str | bytes) -> None:
        targets = self.connections if topic is None else self.subscriptions.get(topic, ())
        for name in targets:
            self.inbox[name].append(message)
        self.changed.set()

    async def wait_for(self, name: str, count: int) -> list[str | bytes]:
        """The messages of ``name`` once it has at least ``count`` (deadline: DEADLINE)."""
        async with asyncio.timeout(DEADLINE):
            while len(self.inbox[name]) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.inbox[name]


@dataclass
class Cluster:
    """``publisher`` sends; ``remote`` is another worker (the same node for LocalBus)."""

    publisher: Node
    remote: Node
    nodes: list[Node]


async def local_cluster() -> Cluster:
    node = Node(LocalBus())
    node.bus.start(asyncio.get_running_loop(), node.deliver)
    return Cluster(node, node, [node])


async def shm_cluster(rings: SharedRings) -> Cluster:
    loop = asyncio.get_running_loop()
    nodes = [Node(rings.bus(i)) for i in range(rings.slots)]
    for node in nodes:
        node.bus.start(loop, node.deliver)
    return Cluster(nodes[0], nodes[1], nodes)


BUSES: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[Cluster]]] = {}


def bus_factory(name: str):  # type: ignore[no-untyped-def]
    def register(func):  # type: ignore[no-untyped-def]
        BUSES[name] = contextlib.asynccontextmanager(func)
        return func

    return register


@bus_factory("local")
async def _local() -> AsyncIterator[Cluster]:
    cluster = await local_cluster()
    yield cluster
    cluster.publisher.bus.close()


@bus_factory("shm")
async def _shm() -> AsyncIterator[Cluster]:
    rings = SharedRings(3, 1 << 20)
    cluster = await shm_cluster(rings)
    try:
        yield cluster
    finally:
        for node in cluster.nodes:
            node.bus.close()
        rings.close()


@pytest.fixture(params=sorted(BUSES))
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    async with BUSES[request.param]() as value:
        yield value
