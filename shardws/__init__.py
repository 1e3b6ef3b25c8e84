"""shardws: a WebSocket server for Python that scales across every core.

``import shardws as websockets`` runs code written for the websockets asyncio
server unchanged. Every public name is listed in ``__all__``.
"""

from __future__ import annotations

from .exceptions import *  # noqa: F403
from .exceptions import __all__ as _exceptions_all

__version__ = "0.1.0"

__all__ = [
    "__version__",
    *_exceptions_all,
]
