"""End to end: ``shardws serve examples.cluster_chat:handler --workers 2``.

Clients on different workers talk through the shared-memory bus; the
public cluster API (``shardws.cluster``) is exercised by the example.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..supervisor.conftest import Supervised

DEADLINE = 20.0


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Supervised]:
    server = Supervised(tmp_path, "examples.cluster_chat:handler", "--bus-size", str(1 << 20), workers=2)
    try:
        server.wait_ready(2, timeout=DEADLINE)
        yield server
    finally:
        server.kill()


async def join(url: str, room: str) -> tuple[ClientConnection, int]:
    ws = await connect(url, open_timeout=DEADLINE, ping_interval=None, max_queue=None)
    await ws.send(f"join {room}")
    reply = await ws.recv()
    assert isinstance(reply, str) and reply.startswith(f"joined {room} on worker ")
    return ws, int(reply.rsplit(" ", 1)[1])


async def one_client_per_worker(url: str, room: str, n: int) -> dict[int, ClientConnection]:
    """Connect until each of ``n`` workers holds one client (the kernel spreads them)."""
    found: dict[int, ClientConnection] = {}
    spare: list[ClientConnection] = []
    for _ in range(200):
        ws, worker = await join(url, room)
        if worker in found:
            spare.append(ws)
        else:
            found[worker] = ws
        if len(found) == n:
            break
    for ws in spare:
        await ws.close()
    assert len(found) == n, "the kernel never hashed a client to every worker"
    return found


N = 10_000
WINDOW = 500  # messages in flight: keeps each client within the server's write limit


async def test_publish_on_one_worker_reaches_a_subscriber_on_another(chat: Supervised) -> None:
    clients = await one_client_per_worker(chat.url, "lobby", 2)
    (w0, publisher), (w1, subscriber) = sorted(clients.items())
    assert w0 != w1
    own: list[str] = []

    async def read(ws: ClientConnection, out: list[str], n: int) -> None:
        while len(out) < n:
            out.append(str(await ws.recv()))

    got: list[str] = []
    async with asyncio.timeout(60):
        echo = asyncio.ensure_future(read(publisher, own, N))
        for start in range(0, N, WINDOW):
            for i in range(start, start + WINDOW):
                await publisher.send(str(i))
            await read(subscriber, got, start + WINDOW)
        await echo
    assert got == [str(i) for i in range(N)]
    assert own == got  # the publisher's worker delivers locally too

    status = chat.status()
    assert [w["bus_drops"] for w in status["workers"]] == [0, 0]
    await publisher.send("/workers")
    rows = str(await publisher.recv()).splitlines()
    assert sorted(int(r.split()[1]) for r in rows) == [0, 1]
    for ws in (publisher, subscriber):
        await ws.close()


async def test_rooms_are_separate_across_workers(chat: Supervised) -> None:
    a = await one_client_per_worker(chat.url, "a", 2)
    b = await one_client_per_worker(chat.url, "b", 2)
    await a[0].send("to a")
    await b[1].send("to b")
    async with asyncio.timeout(DEADLINE):
        assert [await a[1].recv(), await b[0].recv()] == ["to a", "to b"]
        # Nothing from room b reached room a: the next message in a is a's own.
        await a[1].send("again a")
        assert await a[0].recv() == "to a"  # its own first message came back first
        assert await a[0].recv() == "again a"
        await a[0].send("/count")
        assert (await a[0].recv()).startswith("connections: ")
    for ws in [*a.values(), *b.values()]:
        await ws.close()


async def test_killed_worker_is_replaced_and_its_slot_talks_again(chat: Supervised) -> None:
    status = chat.status()
    victim = next(w for w in status["workers"] if w["id"] == 1)
    # Traffic first, so the ring of slot 1 holds committed records when it dies.
    clients = await one_client_per_worker(chat.url, "lobby", 2)
    for i in range(100):
        await clients[1].send(f"before {i}")
    async with asyncio.timeout(DEADLINE):
        for i in range(100):
            assert await clients[0].recv() == f"before {i}"
    os.kill(victim["pid"], signal.SIGKILL)
    status = await asyncio.to_thread(  # the supervisor respawns a worker into slot 1
        chat.wait_for,
        lambda s: any(w["id"] == 1 and w["pid"] != victim["pid"] and w["state"] == "READY"
                      for w in s["workers"]),
        DEADLINE, "worker 1 replaced",
    )
    rows = {w["id"]: w for w in status["workers"]}
    assert rows[1]["generation"] > victim["generation"]
    for ws in clients.values():
        await ws.close()
    clients = await one_client_per_worker(chat.url, "lobby", 2)
    async with asyncio.timeout(DEADLINE):
        for i in range(100):  # the replacement writes slot 1's ring on from where it was
            await clients[1].send(f"after {i}")
        for i in range(100):
            assert await clients[0].recv() == f"after {i}"
        await clients[0].send("back")
        while (message := await clients[1].recv()) != "back":
            assert message.startswith("after ")  # its own messages come back first
    assert [w["bus_drops"] for w in chat.status()["workers"]] == [0, 0]
    for ws in clients.values():
        await ws.close()
