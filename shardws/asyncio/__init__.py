"""The asyncio server core: ``serve``, ``unix_serve``, ``Server``,
``ServerConnection``, ``broadcast``, ``basic_auth``.

Built on :class:`asyncio.Protocol` and transports (no streams, no task per
read); runs on the default event loop and on uvloop.
"""

from __future__ import annotations

from . import registry
from .auth import basic_auth
from .broadcast import BroadcastStats, broadcast, broadcast_stats
from .connection import Data, ServerConnection
from .server import Server, serve, unix_serve

__all__ = [
    "serve",
    "unix_serve",
    "Server",
    "ServerConnection",
    "Data",
    "broadcast",
    "broadcast_stats",
    "BroadcastStats",
    "basic_auth",
    "registry",
]
