"""Handlers that make a load test fail (served by tests/loadtest/test_loadtest.py)."""


async def close_1011(websocket):
    """Refuse every connection right after the handshake: close 1011 (internal error)."""
    await websocket.close(1011, "boom")
