"""Hot-path helpers: the C extension ``shardws._speedups`` or a pure twin.

Set ``SHARDWS_NO_SPEEDUPS=1`` to force the pure-Python path. When the C
extension was not built (no compiler at install time), shardws warns once,
at import, with a :class:`RuntimeWarning`, and runs on the pure path;
behaviour is identical.

Each public helper below is bound at import to the C function when the
extension loads, else to its ``py_`` twin. The twins are the specification:
for every input, including bad ones, the C function returns the same value
or raises the same exception (type and message; only the arity error
message of a wrong argument count differs). Bind the helper you use once, at
module level (``from shardws.speedups import apply_mask``): the binding is
made when this module is imported.

===================  ====================================================
``apply_mask``       ``(data, mask, /) -> bytes``: data XOR the 4-byte mask
``unmask_inplace``   ``(buffer, mask, offset=0, /) -> None``: same, in place,
                     on ``buffer[offset:]``
``parse_header``     ``(buf, offset, /) -> tuple | None``: decode one frame
                     header (see :func:`py_parse_header`)
``C_SPEEDUPS``       ``True`` when the helpers are the C ones
``MASK_IMPL``        the masking loop in use: ``"avx2"``, ``"sse2"``,
                     ``"words64"`` (C) or ``"python"``
===================  ====================================================

Common argument errors: a non bytes-like argument raises ``TypeError``, a
read-only ``buffer`` for ``unmask_inplace`` raises ``TypeError``, a view that
is not C-contiguous raises ``BufferError``, a mask that is not 4 bytes long
raises ``ValueError``, an offset outside ``[0, len]`` raises ``ValueError``
(``TypeError`` when it is not an integer).

Thread safety: the functions keep no state. The C masking releases the GIL
for large inputs; do not resize or write the buffer from another thread
meanwhile.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Callable
from typing import SupportsIndex

__all__ = [
    "C_SPEEDUPS",
    "MASK_IMPL",
    "apply_mask",
    "parse_header",
    "py_apply_mask",
    "py_parse_header",
    "py_unmask_inplace",
    "unmask_inplace",
]

BytesLike = bytes | bytearray | memoryview

#: ``(fin, rsv1, rsv2, rsv3, opcode, masked, payload_length, header_length,
#: mask_key)`` as returned by :func:`parse_header`.
Header = tuple[bool, bool, bool, bool, int, bool, int, int, bytes | None]

_FAST_TYPES = (bytes, bytearray)


def _view(obj: object, func: str, arg: str, writable: bool = False) -> memoryview:
    """A memoryview of ``obj`` after the checks the C code makes, in its order."""
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{func}() argument '{arg}' must be a bytes-like object, "
            f"not '{type(obj).__name__}'"
        ) from None
    if writable and view.readonly:
        raise TypeError(
            f"{func}() argument '{arg}' must be a writable bytes-like object, "
            f"not '{type(obj).__name__}'"
        )
    if not view.c_contiguous:
        raise BufferError(f"{func}() argument '{arg}' must be C-contiguous")
    return view


def _octets(view: memoryview) -> memoryview:
    """The same memory as a flat view of unsigned bytes."""
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B")


def _mask(obj: object, func: str) -> bytes:
    if type(obj) is bytes:
        mask = obj
    else:
        mask = _view(obj, func, "mask").tobytes()
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    return mask


def _offset(obj: SupportsIndex, length: int) -> int:
    offset = operator.index(obj)
    if not 0 <= offset <= length:
        raise ValueError("offset out of range")
    return offset


def _xor(data: BytesLike, mask: bytes) -> bytes:
    """``data`` (flat bytes) XOR ``mask`` repeated, mask octet 0 at data[0]."""
    n = len(data)
    if n == 0:
        return b""
    # RFC 6455 section 5.3: "octet i of the transformed data is the XOR of
    # octet i of the original data with octet at index i modulo 4 of the
    # masking key". One big-integer XOR does all octets at once.
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def py_apply_mask(data: BytesLike, mask: BytesLike, /) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).

    ``data`` is any C-contiguous bytes-like object; returns new bytes.
    Raises ``ValueError`` unless ``mask`` has 4 bytes (see the module
    docstring for the other argument errors).
    """
    if type(data) in _FAST_TYPES:
        flat: BytesLike = data
    else:
        flat = _octets(_view(data, "apply_mask", "data"))
    return _xor(flat, _mask(mask, "apply_mask"))


def py_unmask_inplace(
    buffer: bytearray | memoryview, mask: BytesLike, offset: SupportsIndex = 0, /
) -> None:
    """XOR ``buffer[offset:]`` in place with the 4-byte ``mask`` repeated.

    Mask octet 0 applies at ``buffer[offset]``. ``buffer`` is a writable
    C-contiguous bytes-like object. Raises ``ValueError`` for a bad mask
    length or an offset outside ``[0, len(buffer)]``.
    """
    view = _octets(_view(buffer, "unmask_inplace", "buffer", writable=True))
    key = _mask(mask, "unmask_inplace")
    start = _offset(offset, view.nbytes)
    if start < view.nbytes:
        view[start:] = _xor(view[start:], key)


def py_parse_header(buf: BytesLike, offset: SupportsIndex, /) -> Header | None:
    """Decode the frame header at ``buf[offset]`` (RFC 6455 section 5.2).

    Returns ``(fin, rsv1, rsv2, rsv3, opcode, masked, payload_length,
    header_length, mask_key)`` -- the flags as bools, ``mask_key`` 4 bytes
    or ``None`` -- or ``None`` when ``buf`` holds fewer bytes than the
    header. Nothing is validated (opcode, RSV bits, the most significant
    bit of a 64-bit length): that is the frame parser's job. Raises
    ``ValueError`` for an offset outside ``[0, len(buf)]``.
    """
    data: BytesLike
    if type(buf) in _FAST_TYPES:
        data = buf
    else:
        data = _octets(_view(buf, "parse_header", "buf"))
    start = _offset(offset, len(data))
    avail = len(data) - start
    if avail < 2:
        return None
    first = data[start]
    second = data[start + 1]
    masked = second & 0x80 != 0
    length = second & 0x7F
    header_length = 2
    if length == 126:
        header_length = 4
    elif length == 127:
        header_length = 10
    if masked:
        header_length += 4
    if avail < header_length:
        return None
    if length == 126:
        length = int.from_bytes(data[start + 2 : start + 4], "big")
    elif length == 127:
        length = int.from_bytes(data[start + 2 : start + 10], "big")
    mask_key = bytes(data[start + header_length - 4 : start + header_length]) if masked else None
    return (
        first & 0x80 != 0,
        first & 0x40 != 0,
        first & 0x20 != 0,
        first & 0x10 != 0,
        first & 0x0F,
        masked,
        length,
        header_length,
        mask_key,
    )


C_SPEEDUPS = False
MASK_IMPL = "python"
apply_mask: Callable[[BytesLike, BytesLike], bytes] = py_apply_mask
unmask_inplace: Callable[..., None] = py_unmask_inplace
parse_header: Callable[[BytesLike, int], Header | None] = py_parse_header

if os.environ.get("SHARDWS_NO_SPEEDUPS", "") in ("", "0"):
    try:
        from shardws import _speedups  # type: ignore[attr-defined]
    except ImportError:
        warnings.warn(
            "shardws: C speedups not available, using the pure-Python fallback "
            "(reinstall with a C compiler for full speed)",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        apply_mask = _speedups.apply_mask
        unmask_inplace = _speedups.unmask_inplace
        parse_header = _speedups.parse_header
        MASK_IMPL = _speedups.MASK_IMPL
        C_SPEEDUPS = True
