"""Basic Echo Server (spec/server-api.md, "Usage Examples").

Run it: ``python examples/echo.py``. ``main(host, port, started)`` lets a
test start it on port 0: ``started`` (a future) receives the server.
"""

import asyncio

import shardws as websockets


async def echo_handler(websocket):
    """Simple echo handler that returns received messages."""
    async for message in websocket:
        await websocket.send(f"Echo: {message}")


handler = echo_handler


async def main(host="localhost", port=8765, started=None):
    # Start server on localhost:8765
    async with websockets.serve(echo_handler, host, port) as server:
        print(f"WebSocket server started on ws://{host}:{port}")
        if started is not None:
            started.set_result(server)
        await asyncio.Future()  # Run forever


if __name__ == "__main__":
    asyncio.run(main())
