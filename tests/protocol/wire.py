"""Raw frame builders for the protocol tests: any header bits, any declared length."""

from __future__ import annotations

import struct

from shardws.speedups import py_apply_mask

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # the key of RFC 6455 section 5.7


def raw(
    b0: int, payload: bytes = b"", *, mask: bytes | None = MASK, length: int | None = None
) -> bytes:
    """One frame with first byte ``b0``; ``length`` overrides the declared length
    (then only the header, mask key included, is returned)."""
    n = len(payload) if length is None else length
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 65536:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is not None:
        header += mask
    if length is not None:
        return header
    return header + (py_apply_mask(payload, mask) if mask is not None else payload)


def client(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked frame as a client sends it; ``rsv`` is 0..7 (RSV1 = 4)."""
    return raw((0x80 if fin else 0) | rsv << 4 | opcode, payload)


def server(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame as a server sends it."""
    return raw((0x80 if fin else 0) | rsv << 4 | opcode, payload, mask=None)
