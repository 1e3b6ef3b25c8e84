"""A chat with rooms that works across every worker, through the shared-memory bus.

    shardws serve examples.cluster_chat:handler --workers 4

Protocol (text messages):

* the first message is ``join <room>``; the server answers
  ``joined <room> on worker <n>``;
* every later message is published to the room: every member, on every
  worker, receives it (the sender too), in the order each worker sent them;
* ``/count`` answers ``connections: <n>`` (every worker);
* ``/workers`` answers one line per worker: id, pid, connections, bus drops.

Try it with two terminals: ``python -m websockets ws://127.0.0.1:8000/``,
send ``join lobby`` in both, then talk.
"""

from __future__ import annotations

import shardws
from shardws import ConnectionClosed, cluster


async def handler(websocket: shardws.ServerConnection) -> None:
    """Join a room, then publish every message to it (see the module docstring)."""
    try:
        first = await websocket.recv()
        if not isinstance(first, str) or not first.startswith("join ") or not first[5:].strip():
            await websocket.close(1008, "first message must be: join <room>")
            return
        room = first[5:].strip()
        websocket.subscribe(room)
        await websocket.send(f"joined {room} on worker {websocket.worker_id}")
        async for message in websocket:
            if message == "/count":
                await websocket.send(f"connections: {cluster.connection_count()}")
            elif message == "/workers":
                rows = cluster.workers()
                await websocket.send(
                    "\n".join(
                        f"worker {r['id']} pid {r['pid']} connections {r['connections']} "
                        f"drops {r['bus_drops']}"
                        for r in rows
                    )
                )
            else:
                cluster.publish(room, message)
    except ConnectionClosed:
        pass
