"""Hot-path helpers: the C extension ``shardws._speedups`` or a pure twin.

Set ``SHARDWS_NO_SPEEDUPS=1`` to force the pure-Python path. When the C
extension was not built (no compiler at install time), shardws warns once,
at import, and runs on the pure path; behaviour is identical.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["C_SPEEDUPS", "apply_mask", "py_apply_mask"]


def py_apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3)."""
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    n = len(data)
    if n == 0:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


C_SPEEDUPS = False
apply_mask = py_apply_mask

if os.environ.get("SHARDWS_NO_SPEEDUPS", "") not in ("", "0"):
    pass
else:
    try:
        from shardws import _speedups  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - depends on the build
        warnings.warn(
            "shardws: C speedups not available, using the pure-Python fallback "
            "(reinstall with a C compiler for full speed)",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        apply_mask = _speedups.apply_mask
        C_SPEEDUPS = True
