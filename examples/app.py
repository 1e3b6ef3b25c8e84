"""The `make run` / `make loadtest` demo: echo, per-worker broadcast, and rooms across workers.

    shardws serve examples.app:handler --workers 2

Text messages (one handler per connection):

======================  ==========================================================
message                 what happens
======================  ==========================================================
``/all TEXT``           TEXT goes to every connection of the same worker
                        (``broadcast()``)
``/join ROOM``          this connection joins ROOM (on any worker); the answer is
                        ``joined ROOM on worker N``
``/leave ROOM``         it leaves ROOM; the answer is ``left ROOM``
``/say ROOM TEXT``      every member of ROOM, on every worker, receives
                        ``[ROOM] TEXT`` (``cluster.publish()``; the sender too when
                        it is a member); no answer
anything else           echoed back as ``echo: ...`` (binary: echoed unchanged)
======================  ==========================================================

The greeting tells which worker holds the connection. ``loadtests/locustfile.py``
drives the echo (``echo`` scenario) and the rooms (``chat`` scenario).
"""

import os

import shardws
from shardws import ConnectionClosed, broadcast, cluster

CONNECTIONS: set = set()


async def command(websocket, message: str) -> bool:
    """Run ``message`` if it is one of the room commands; False when it is not."""
    verb, _, rest = message.partition(" ")
    if verb == "/join" and rest:
        websocket.subscribe(rest)
        await websocket.send(f"joined {rest} on worker {shardws.current_worker()}")
    elif verb == "/leave" and rest:
        websocket.unsubscribe(rest)
        await websocket.send(f"left {rest}")
    elif verb == "/say" and " " in rest:
        room, _, text = rest.partition(" ")
        cluster.publish(room, f"[{room}] {text}")
    else:
        return False
    return True


async def handler(websocket):
    """Greet, then echo each message; ``/all``, ``/join``, ``/leave``, ``/say`` as above.

    A rolling restart closes connections with 1012 (service restart): the
    client should reconnect; it is not an error of this handler.
    """
    CONNECTIONS.add(websocket)
    try:
        await websocket.send(f"hello from worker {shardws.current_worker()} (pid {os.getpid()})")
        async for message in websocket:
            if isinstance(message, str) and message.startswith("/all "):
                broadcast(CONNECTIONS, message[5:])
            elif not (isinstance(message, str) and await command(websocket, message)):
                await websocket.send(f"echo: {message}" if isinstance(message, str) else message)
    except ConnectionClosed:
        pass
    finally:
        CONNECTIONS.discard(websocket)
