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
``scan_frames``      ``(buf, offset, require_mask, max_size, rsv1_allowed, /)
                     -> (frames, end)``: decode every complete valid frame
                     in a row (see :func:`py_scan_frames`)
``scan_messages``    ``(buf, offset, require_mask, max_size, /)
                     -> (messages, end)``: decode every complete
                     single-frame text/binary message in a row (see
                     :func:`py_scan_messages`)
``parse_head``       ``(data, max_head, max_headers, max_line, names,
                     values, /) -> tuple | None``: parse a complete usual
                     HTTP/1.1 request head (see :func:`py_parse_head`)
``connection_fast_paths``
                     C versions of ``ServerConnection.data_received``,
                     ``send``, ``_flush``, ``recv`` and ``__anext__`` for the
                     common case (whole messages, str / bytes sent on an
                     OPEN connection); ``None`` on the pure path. The
                     Python methods are its specification: it calls them
                     for every other case
``broadcast_plain``  the loop of ``broadcast()`` for plain connections
                     (``None`` on the pure path)
``flush_corked``     the loop of ``Server._flush_corked()`` (``None`` on the
                     pure path)
``batched_sends``    ``(enable=None, /) -> (bool, int)``: whether
                     ``broadcast_plain`` and ``flush_corked`` hand the
                     kernel their direct writes in batches through
                     io_uring (Linux 5.19+), and
                     how many sends went that way in this process; turns
                     batching on or off first when given a flag.
                     ``SHARDWS_NO_IO_URING=1`` turns it off at import.
                     ``(False, 0)`` on the pure path
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
from typing import Any, SupportsIndex

__all__ = [
    "C_SPEEDUPS",
    "MASK_IMPL",
    "apply_mask",
    "batched_sends",
    "parse_head",
    "parse_header",
    "py_apply_mask",
    "py_batched_sends",
    "py_parse_head",
    "py_parse_header",
    "py_scan_frames",
    "py_scan_messages",
    "py_unmask_inplace",
    "scan_frames",
    "scan_messages",
    "unmask_inplace",
]

BytesLike = bytes | bytearray | memoryview

#: ``(fin, rsv1, rsv2, rsv3, opcode, masked, payload_length, header_length,
#: mask_key)`` as returned by :func:`parse_header`.
Header = tuple[bool, bool, bool, bool, int, bool, int, int, bytes | None]

#: ``(opcode, payload, fin, rsv1)`` as returned by :func:`scan_frames`.
FrameTuple = tuple[int, bytes, bool, bool]

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


def _flat(obj: object, func: str, arg: str) -> BytesLike:
    """``obj`` itself when it is bytes or bytearray, else a flat view of its bytes."""
    if type(obj) in _FAST_TYPES:
        return obj  # type: ignore[return-value]
    return _octets(_view(obj, func, arg))


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


_IDENTITY = int.from_bytes(bytes(range(256)), "big")
# _XOR_TABLES[k] maps each byte b to b ^ k, for bytes.translate.
_XOR_TABLES = [(_IDENTITY ^ int.from_bytes(bytes((k,)) * 256, "big")).to_bytes(256, "big") for k in range(256)]
# Below this size one big-integer XOR is faster; above, four translations.
_TRANSLATE_AT = 512


def _xor(data: BytesLike, mask: bytes) -> bytes:
    """``data`` (flat bytes) XOR ``mask`` repeated, mask octet 0 at data[0]."""
    n = len(data)
    if n == 0:
        return b""
    # RFC 6455 section 5.3: "octet i of the transformed data is the XOR of
    # octet i of the original data with octet at index i modulo 4 of the
    # masking key".
    if n < _TRANSLATE_AT:
        # All octets at once, as one big-integer XOR.
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
        return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")
    # The octets with index i modulo 4 == j, all through one table.
    out = bytearray(data)
    for j in range(4):
        out[j::4] = out[j::4].translate(_XOR_TABLES[mask[j]])
    return bytes(out)


def py_apply_mask(data: BytesLike, mask: BytesLike, /) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3).

    ``data`` is any C-contiguous bytes-like object; returns new bytes.
    Raises ``ValueError`` unless ``mask`` has 4 bytes (see the module
    docstring for the other argument errors).
    """
    return _xor(_flat(data, "apply_mask", "data"), _mask(mask, "apply_mask"))


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
    data = _flat(buf, "parse_header", "buf")
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


def _scan_table(rsv1_allowed: bool) -> tuple[bool, ...]:
    """For each first header byte: may :func:`scan_frames` take the frame?"""
    table = []
    for b0 in range(256):
        opcode = b0 & 0x0F
        table.append(
            opcode in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA)
            and not b0 & 0x30
            and (not b0 & 0x40 or (rsv1_allowed and opcode in (0x1, 0x2)))
            and (opcode < 0x8 or b0 & 0x80 != 0)
        )
    return tuple(table)


_SCAN_OK = _scan_table(False)
_SCAN_OK_RSV1 = _scan_table(True)


def _payload_extent(data: BytesLike, pos: int, mask_bit: int) -> tuple[int, int] | None:
    """``(start, stop)`` of the payload of the frame at ``pos`` (after its mask
    key when ``mask_bit``), or None -- the scan stops there -- when the frame is
    incomplete or its 64-bit length has the most significant bit set."""
    end = len(data)
    length = data[pos + 1] & 0x7F
    start = pos + 2
    if length == 126:
        if end - pos < 4:
            return None
        length = (data[start] << 8) | data[start + 1]
        start += 2
    elif length == 127:
        if end - pos < 10:
            return None
        length = int.from_bytes(data[start : start + 8], "big")
        start += 8
        if length >> 63:
            return None
    if mask_bit:
        start += 4
    stop = start + length
    return None if stop > end else (start, stop)


def _payload(data: BytesLike, start: int, stop: int, mask_bit: int) -> bytes:
    """The payload ``data[start:stop]``, unmasked with the 4 bytes before it when ``mask_bit``."""
    if mask_bit:
        return _xor(data[start:stop], bytes(data[start - 4 : start]))
    return bytes(data[start:stop])


def py_scan_frames(
    buf: BytesLike,
    offset: SupportsIndex,
    require_mask: object,
    max_size: SupportsIndex | None,
    rsv1_allowed: object,
    /,
) -> tuple[list[FrameTuple], int]:
    """Decode the run of complete, valid frames that starts at ``buf[offset]``.

    Returns ``(frames, end)``: the frames as ``(opcode, payload, fin, rsv1)``
    tuples, payloads unmasked (``bytes``), and the offset after the last one.

    The scan stops *before* the first frame that is incomplete or breaks a
    rule -- unknown opcode; RSV2 or RSV3 set; RSV1 set unless
    ``rsv1_allowed``, and then only on text/binary frames; a fragmented
    control frame; the mask bit differing from ``require_mask``; a control
    payload over 125 bytes; a 64-bit length with its most significant bit
    set; a data payload over ``max_size`` (``None``: unbounded) -- and never
    raises for it: the frame parser that calls it re-reads that frame and
    reports the error. It stops *after* a frame with FIN clear or a close
    frame, whose receiver may change ``max_size`` or stop reading. Raises
    ``ValueError`` for an offset outside ``[0, len(buf)]``, ``TypeError``
    when ``max_size`` is neither ``None`` nor an integer.
    """
    data = _flat(buf, "scan_frames", "buf")
    pos = _offset(offset, len(data))
    mask_bit = 0x80 if require_mask else 0
    limit = None if max_size is None else operator.index(max_size)
    allowed = _SCAN_OK_RSV1 if rsv1_allowed else _SCAN_OK
    frames: list[FrameTuple] = []
    end = len(data)
    while end - pos >= 2:
        b0 = data[pos]
        b1 = data[pos + 1]
        if not allowed[b0] or b1 & 0x80 != mask_bit:
            break
        if b0 & 0x08 and b1 & 0x7F > 125:
            break
        extent = _payload_extent(data, pos, mask_bit)
        if extent is None:
            break
        start, stop = extent
        if limit is not None and stop - start > limit and not b0 & 0x08:
            break
        payload = _payload(data, start, stop, mask_bit)
        frames.append((b0 & 0x0F, payload, b0 > 0x7F, b0 & 0x40 != 0))
        pos = stop
        if b0 < 0x80 or b0 & 0x0F == 0x8:
            break
    return frames, pos


def py_scan_messages(
    buf: BytesLike,
    offset: SupportsIndex,
    require_mask: object,
    max_size: SupportsIndex | None,
    /,
) -> tuple[list[str | bytes], int]:
    """Decode the run of whole single-frame messages that starts at ``buf[offset]``.

    Returns ``(messages, end)``: ``str`` for text, ``bytes`` for binary,
    payloads unmasked, and the offset after the last one. Only frames that
    are a whole uncompressed message are taken -- FIN set, RSV1-3 clear,
    opcode text or binary, the mask bit equal to ``require_mask``, a payload
    of at most ``max_size`` bytes (``None``: unbounded), valid UTF-8 for
    text. The scan stops *before* the first other frame (incomplete,
    fragmented, compressed, control, or breaking a rule) and never raises
    for it: the frame parser decodes that one. Raises like
    :func:`py_scan_frames` for bad arguments.
    """
    data = _flat(buf, "scan_messages", "buf")
    pos = _offset(offset, len(data))
    mask_bit = 0x80 if require_mask else 0
    limit = None if max_size is None else operator.index(max_size)
    messages: list[str | bytes] = []
    end = len(data)
    while end - pos >= 2:
        b0 = data[pos]
        b1 = data[pos + 1]
        if (b0 != 0x81 and b0 != 0x82) or b1 & 0x80 != mask_bit:
            break
        extent = _payload_extent(data, pos, mask_bit)
        if extent is None:
            break
        start, stop = extent
        if limit is not None and stop - start > limit:
            break
        payload = _payload(data, start, stop, mask_bit)
        if b0 == 0x81:
            try:
                messages.append(payload.decode())
            except UnicodeDecodeError:
                break
        else:
            messages.append(payload)
        pos = stop
    return messages, pos


# ------------------------------------------------------ request head

# RFC 9110 section 5.6.2 tchar; section 5.5: the CTLs a field value may not
# hold (every CTL but HTAB, and DEL); RFC 9112 section 3.2: bytes a
# request-target may not hold (controls, SP, DEL, non-ASCII). Copies of
# shardws.protocol.headers / http11 constants (a test checks they are equal):
# importing them here would be circular.
_HEAD_TCHAR = (
    b"!#$%&'*+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz|~"
)
_HEAD_CTL = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])
_HEAD_TARGET_FORBIDDEN = bytes([*range(0x00, 0x21), *range(0x7F, 0x100)])

#: What :func:`py_parse_head` returns for a usual complete head.
Head = tuple[int, tuple[str, str, str], list[tuple[str, str]], dict[str, list[str]]]


def py_parse_head(
    data: bytes,
    max_head: SupportsIndex,
    max_headers: SupportsIndex,
    max_line: SupportsIndex,
    names: dict[bytes, tuple[str, str]],
    values: dict[bytes, str],
    /,
) -> Head | None:
    """Parse a complete, usual HTTP/1.1 request head at the start of ``data``.

    Returns ``(end, (method, target, "HTTP/1.1"), pairs, index)`` -- ``end``
    the offset of the ``CRLF CRLF`` ending the head, ``pairs`` the
    ``(name, value)`` header lines in order, ``index`` lowercase name ->
    values -- or ``None`` when the head is not complete within ``max_head``
    bytes or anything in it is unusual: more than ``max_headers`` header
    lines, a line over ``max_line`` bytes, a CTL other than the line ends
    (bare CR or LF included), a request line other than ``token SP target
    SP HTTP/1.1`` (target: visible ASCII, starting with ``/`` or holding
    ``://``), a header name that is not a token (obs-fold, whitespace
    before the colon), a line without a colon, a negative limit. The
    caller's line-by-line parser then gives the exact answer.

    ``names`` maps usual header names (bytes) to their ``(name, lowercase
    name)`` strings, ``values`` usual raw values (after the colon, before
    stripping) to their string: those are shared, not decoded again. Other
    names are decoded as ASCII, values stripped of SP and HTAB and decoded
    as ISO-8859-1. Raises ``TypeError`` when ``data`` is not ``bytes``,
    ``names`` or ``values`` not a ``dict``, an entry used of ``names`` not a
    tuple of two ``str``, an entry used of ``values`` not a ``str``.
    """
    if type(data) is not bytes:
        raise TypeError(f"parse_head() argument 'data' must be bytes, not '{type(data).__name__}'")
    max_head = operator.index(max_head)
    max_headers = operator.index(max_headers)
    max_line = operator.index(max_line)
    if type(names) is not dict:
        raise TypeError(f"parse_head() argument 'names' must be dict, not '{type(names).__name__}'")
    if type(values) is not dict:
        raise TypeError(
            f"parse_head() argument 'values' must be dict, not '{type(values).__name__}'"
        )
    if max_head < 0 or max_headers < 0 or max_line < 0:
        return None
    end = data.find(b"\r\n\r\n", 0, max_head)
    if end < 0:
        return None
    head = data[:end]
    lines = head.split(b"\r\n")
    count = len(lines) - 1  # header lines
    if (
        count > max_headers
        or max(map(len, lines)) > max_line
        # no CR or LF but the line ends, and no other CTL anywhere
        or len(head.translate(None, _HEAD_CTL)) != len(head) - 2 * count
    ):
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    if (
        not method
        or method.translate(None, _HEAD_TCHAR)
        or not target
        or target.translate(None, _HEAD_TARGET_FORBIDDEN) != target
        or not (target.startswith(b"/") or b"://" in target)
        or version != b"HTTP/1.1"
    ):
        return None
    pairs = []
    index: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, raw = line.partition(b":")
        known = names.get(name)
        if known is not None:
            if not (
                type(known) is tuple
                and len(known) == 2
                and type(known[0]) is str
                and type(known[1]) is str
            ):
                raise TypeError("parse_head() entries of 'names' must be tuples of two str")
            text, key = known
        elif not name or name.translate(None, _HEAD_TCHAR):
            return None
        else:
            text = name.decode("ascii")
            key = text.lower()
        if not colon:
            return None
        value = values.get(raw)
        if value is None:
            value = raw.strip(b" \t").decode("iso-8859-1")
        elif type(value) is not str:
            raise TypeError("parse_head() entries of 'values' must be str")
        pairs.append((text, value))
        found = index.get(key)
        if found is None:
            index[key] = [value]
        else:
            found.append(value)
    return end, (method.decode("ascii"), target.decode("ascii"), "HTTP/1.1"), pairs, index


C_SPEEDUPS = False
MASK_IMPL = "python"
apply_mask: Callable[[BytesLike, BytesLike], bytes] = py_apply_mask
unmask_inplace: Callable[..., None] = py_unmask_inplace
parse_header: Callable[[BytesLike, int], Header | None] = py_parse_header
scan_frames: Callable[
    [BytesLike, int, bool, int | None, bool], tuple[list[FrameTuple], int]
] = py_scan_frames
scan_messages: Callable[
    [BytesLike, int, bool, int | None], tuple[list[str | bytes], int]
] = py_scan_messages
parse_head: Callable[..., Head | None] = py_parse_head
# No twin: the Python methods it replaces are the specification (see
# shardws.asyncio.server._install_fast_paths).
connection_fast_paths: Callable[..., dict[str, Any]] | None = None
broadcast_plain: Callable[..., int] | None = None
flush_corked: Callable[..., None] | None = None


def py_batched_sends(enable: bool | None = None, /) -> tuple[bool, int]:
    """The pure path sends nothing in batches."""
    return False, 0


batched_sends: Callable[..., tuple[bool, int]] = py_batched_sends

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
        scan_frames = _speedups.scan_frames
        scan_messages = _speedups.scan_messages
        # A build from before parse_head keeps the twin for it.
        parse_head = getattr(_speedups, "parse_head", py_parse_head)
        connection_fast_paths = getattr(_speedups, "connection_fast_paths", None)
        broadcast_plain = getattr(_speedups, "broadcast_plain", None)
        flush_corked = getattr(_speedups, "flush_corked", None)
        if hasattr(_speedups, "batched_sends"):
            batched_sends = _speedups.batched_sends
            if os.environ.get("SHARDWS_NO_IO_URING", "") not in ("", "0"):
                batched_sends(False)
        MASK_IMPL = _speedups.MASK_IMPL
        C_SPEEDUPS = True
