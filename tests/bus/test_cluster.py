"""End to end: ``shardws serve examples.cluster_chat:handler --workers 2``.

Clients on different workers talk through the shared-memory bus; the
public cluster API (``shardws.cluster``) is exercised by the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from shardws.cli import request

from ..supervisor.conftest import ROOT, env, free_port

DEADLINE = 20.0


class ChatServer:
    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.port = free_port()
        self.control = str(tmp_path / "ctl")
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.stderr_path = tmp_path / "stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shardws", "serve", "examples.cluster_chat:handler",
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
                 "--control", self.control, "--bus-size", str(1 << 20)],
                cwd=ROOT, env=env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=stderr, start_new_session=True,
            )

    def status(self) -> dict[str, Any]:
        return request(self.control, {"command": "status"}, timeout=2.0)

    def wait_ready(self, n: int) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr_path.read_text()
            with contextlib.suppress(OSError, ValueError):
                status = self.status()
                if sum(w["state"] == "READY" for w in status["workers"]) == n:
                    return status
            time.sleep(0.02)  # polling interval, bounded by the deadline
        pytest.fail(f"workers not ready:\n{self.stderr_path.read_text()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(tmp_path, workers=2)
    try:
        server.wait_ready(2)
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


async def test_publish_on_one_worker_reaches_a_subscriber_on_another(chat: ChatServer) -> None:
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


async def test_rooms_are_separate_across_workers(chat: ChatServer) -> None:
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


async def test_killed_worker_is_replaced_and_its_slot_talks_again(chat: ChatServer) -> None:
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
    deadline = time.monotonic() + DEADLINE
    while True:  # the supervisor respawns a worker into slot 1
        with contextlib.suppress(OSError, ValueError):
            rows = {w["id"]: w for w in chat.status()["workers"]}
            if 1 in rows and rows[1]["pid"] != victim["pid"] and rows[1]["state"] == "READY":
                break
        assert time.monotonic() < deadline, "worker 1 was not replaced"
        await asyncio.sleep(0.02)  # polling the control socket, bounded by the deadline
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
