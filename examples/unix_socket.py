"""Unix Domain Socket Server (spec/server-api.md, "Usage Examples").

Run it: ``python examples/unix_socket.py``. ``main(socket_path, started)``
lets a test start it on a temporary path: ``started`` (a future) receives
the server.
"""

import asyncio
import os

import shardws as websockets


async def unix_handler(websocket):
    """Handler for Unix socket connections."""
    await websocket.send("Connected via Unix socket")

    async for message in websocket:
        await websocket.send(f"Unix echo: {message}")


handler = unix_handler


async def main(socket_path="/tmp/websocket.sock", started=None):
    # Remove existing socket file
    if os.path.exists(socket_path):
        os.unlink(socket_path)

    async with websockets.unix_serve(unix_handler, socket_path) as server:
        print(f"Unix WebSocket server started on {socket_path}")
        if started is not None:
            started.set_result(server)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
