"""Chat Server with Broadcasting (spec/server-api.md, "Usage Examples").

Run it: ``python examples/chat.py``. ``main(host, port, started)`` lets a
test start it on port 0: ``started`` (a future) receives the server.
"""

import asyncio
import json

import shardws as websockets

# Keep track of connected clients
clients: set[websockets.ServerConnection] = set()


async def chat_handler(websocket):
    """Chat server handler with broadcasting."""
    # Register client
    clients.add(websocket)
    print(f"Client connected: {websocket.remote_address}")

    try:
        async for message in websocket:
            try:
                # Parse JSON message
                data = json.loads(message)
                chat_message = {
                    "user": data.get("user", "Anonymous"),
                    "message": data.get("message", ""),
                    "timestamp": asyncio.get_event_loop().time(),
                }

                # Broadcast to all connected clients
                broadcast_message = json.dumps(chat_message)
                websockets.broadcast(clients, broadcast_message)

            except json.JSONDecodeError:
                # Send error response
                error = {"error": "Invalid JSON format"}
                await websocket.send(json.dumps(error))

    except websockets.ConnectionClosedError:
        pass
    finally:
        # Unregister client
        clients.discard(websocket)
        print(f"Client disconnected: {websocket.remote_address}")


handler = chat_handler


async def main(host="localhost", port=8765, started=None):
    async with websockets.serve(
        chat_handler,
        host,
        port,
        ping_interval=30,
        ping_timeout=10,
        max_size=1024 * 10,  # 10KB max message
    ) as server:
        print(f"Chat server started on ws://{host}:{port}")
        if started is not None:
            started.set_result(server)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
