"""Small handlers served by the supervisor tests (imported in each worker)."""

import asyncio
import json
import os
import time

import shardws

# A bad deploy: importing this module fails while the file named by
# SHARDWS_TEST_BROKEN exists (workers import it after the fork).
if os.path.exists(os.environ.get("SHARDWS_TEST_BROKEN", "/nonexistent")):
    raise RuntimeError("broken deploy")


async def hello(websocket):
    """Tell the client which worker holds the connection."""
    await websocket.send(json.dumps({
        "pid": os.getpid(),
        "worker": shardws.current_worker(),
        "worker_id": getattr(websocket, "worker_id", None),
    }))


async def echo(websocket):
    """Hello, then echo every message."""
    await hello(websocket)
    async for message in websocket:
        await websocket.send(message)


async def stubborn(websocket):
    """Hello, then ignore the connection (and its closing) for an hour."""
    await hello(websocket)
    await asyncio.sleep(3600)


async def blocker(websocket):
    """Hello, then echo; the message "block" blocks the event loop for a minute."""
    await hello(websocket)
    async for message in websocket:
        if message == "block":
            time.sleep(60)
        await websocket.send(message)
