"""shardws: a WebSocket server for Python that scales across every core.

``import shardws as websockets`` runs code written for the websockets asyncio
server unchanged. Every public name is listed in ``__all__``.
"""

from __future__ import annotations

from .exceptions import *  # noqa: F403
from .exceptions import __all__ as _exceptions_all

__version__ = "0.1.0"

from . import cluster  # noqa: E402
from .asyncio import (  # noqa: E402  (__version__ first: the handshake reads it)
    BroadcastStats,
    Data,
    Server,
    ServerConnection,
    basic_auth,
    broadcast,
    broadcast_stats,
    serve,
    unix_serve,
)
from .protocol.connection import State  # noqa: E402
from .protocol.frames import Close  # noqa: E402
from .protocol.headers import Headers, HeadersLike, MultipleValuesError  # noqa: E402
from .protocol.http11 import Request, Response  # noqa: E402
from .supervisor import current_worker, run  # noqa: E402

__all__ = [
    "__version__",
    *_exceptions_all,
    # server (shardws.asyncio)
    "serve",
    "unix_serve",
    "Server",
    "ServerConnection",
    "Data",
    "broadcast",
    "broadcast_stats",
    "BroadcastStats",
    "basic_auth",
    # HTTP and protocol data types
    "Request",
    "Response",
    "Headers",
    "HeadersLike",
    "MultipleValuesError",
    "State",
    "Close",
    # multiprocess (shardws.supervisor)
    "run",
    "current_worker",
    # cluster API (shardws.cluster)
    "cluster",
]
