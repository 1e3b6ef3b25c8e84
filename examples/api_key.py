"""Server with Custom Request Processing (spec/server-api.md, "Usage Examples").

Run it: ``python examples/api_key.py``. ``main(host, port, started)`` lets a
test start it on port 0: ``started`` (a future) receives the server.
"""

import asyncio

import shardws as websockets
from shardws import Request, Response


async def process_request(connection, request: Request):
    """Custom request processing before WebSocket upgrade."""
    # Check custom header
    api_key = request.headers.get("X-API-Key")
    if not api_key or api_key != "valid-api-key":
        return Response(403, "Forbidden", b"Invalid API key")

    # Allow upgrade to proceed
    return None


async def api_handler(websocket):
    """API handler for authenticated clients."""
    await websocket.send("API connection established")

    async for message in websocket:
        # Process API commands
        if message.startswith("GET /"):
            await websocket.send('{"status": "success", "data": "..."}')
        else:
            await websocket.send('{"error": "Unknown command"}')


handler = api_handler


async def main(host="localhost", port=8765, started=None):
    async with websockets.serve(
        api_handler,
        host,
        port,
        process_request=process_request,
        compression="deflate",
    ) as server:
        print(f"API server started on ws://{host}:{port}")
        if started is not None:
            started.set_result(server)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
