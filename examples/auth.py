"""Authenticated Server (spec/server-api.md, "Usage Examples").

Run it: ``python examples/auth.py``. ``main(host, port, started)`` lets a
test start it on port 0: ``started`` (a future) receives the server.
"""

import asyncio

import shardws as websockets
from shardws import basic_auth


@basic_auth("admin", "secret123")
async def protected_handler(websocket):
    """Handler that requires authentication."""
    await websocket.send("Welcome! You are authenticated.")

    async for message in websocket:
        if message.lower() == "status":
            await websocket.send("Server is running normally")
        else:
            await websocket.send(f"Received: {message}")


handler = protected_handler


async def main(host="localhost", port=8765, started=None):
    async with websockets.serve(
        protected_handler,
        host,
        port,
        extra_headers={"Server": "MyWebSocketServer/1.0"},
    ) as server:
        print(f"Protected server started on ws://{host}:{port}")
        print("Use Authorization: Basic YWRtaW46c2VjcmV0MTIz")
        if started is not None:
            started.set_result(server)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
