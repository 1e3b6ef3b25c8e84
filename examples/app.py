"""The `make run` demo: an echo + broadcast chat, one handler per connection.

    shardws serve examples.app:handler --workers 2

Every text message is echoed back (``echo: ...``); a message starting with
``/all `` is sent to every connection of the same worker with
``broadcast()``. The greeting tells which worker holds the connection.
"""

import os

import shardws
from shardws import ConnectionClosed, broadcast

CONNECTIONS: set = set()


async def handler(websocket):
    """Greet, then echo each message; ``/all TEXT`` broadcasts TEXT.

    A rolling restart closes connections with 1012 (service restart): the
    client should reconnect; it is not an error of this handler.
    """
    CONNECTIONS.add(websocket)
    try:
        await websocket.send(f"hello from worker {shardws.current_worker()} (pid {os.getpid()})")
        async for message in websocket:
            if isinstance(message, str) and message.startswith("/all "):
                broadcast(CONNECTIONS, message[5:])
            else:
                await websocket.send(f"echo: {message}" if isinstance(message, str) else message)
    except ConnectionClosed:
        pass
    finally:
        CONNECTIONS.discard(websocket)
