"""The demo app that `make run` and `make loadtest` serve (examples/app.py), driven in one process."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

from websockets.asyncio.client import connect

import shardws

APP = Path(__file__).resolve().parents[2] / "examples" / "app.py"


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shardws_example_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: (who sends, what, {who receives: what it must receive next (a prefix)}), in order.
#: A receiver's next message proves it got nothing else before (e.g. after /leave).
STEPS: list[tuple[str, str | bytes, dict[str, str | bytes]]] = [
    ("a", "hello", {"a": "echo: hello"}),
    ("a", b"\x00\x01", {"a": b"\x00\x01"}),
    ("a", "/join lobby", {"a": "joined lobby on worker "}),
    ("b", "/join lobby", {"b": "joined lobby on worker "}),
    ("a", "/say lobby hi all", {"a": "[lobby] hi all", "b": "[lobby] hi all"}),
    ("b", "/say lobby and b", {"a": "[lobby] and b", "b": "[lobby] and b"}),
    ("c", "/say lobby from outside", {"a": "[lobby] from outside", "b": "[lobby] from outside"}),
    ("b", "/leave lobby", {"b": "left lobby"}),
    ("a", "/say lobby only a", {"a": "[lobby] only a"}),
    ("b", "still here", {"b": "echo: still here"}),
    ("c", "/all everyone", {"a": "everyone", "b": "everyone", "c": "everyone"}),
    ("a", "/join", {"a": "echo: /join"}),
    ("a", "/say lobby", {"a": "echo: /say lobby"}),
    ("a", "/unknown x", {"a": "echo: /unknown x"}),
]


async def test_app_commands() -> None:
    app = load_app()
    async with shardws.serve(app.handler, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with connect(url) as a, connect(url) as b, connect(url) as c:
            clients = {"a": a, "b": b, "c": c}
            for ws in clients.values():
                assert (await asyncio.wait_for(ws.recv(), 5)).startswith("hello from worker ")
            for sender, message, expected in STEPS:
                await clients[sender].send(message)
                for receiver, prefix in expected.items():
                    got = await asyncio.wait_for(clients[receiver].recv(), 5)
                    assert type(got) is type(prefix) and got[:len(prefix)] == prefix, \
                        (sender, message, receiver, got)
