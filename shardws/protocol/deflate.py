"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

Three public classes:

* :class:`ServerPerMessageDeflateFactory` -- the server's configuration. The
  handshake calls :meth:`~ServerPerMessageDeflateFactory.process_request_params`
  once per offer in the client's ``Sec-WebSocket-Extensions`` header, in
  order, until one returns; a :class:`~shardws.exceptions.NegotiationError`
  means "decline this offer, try the next one".
* :class:`PerMessageDeflate` -- one per connection, after negotiation. The
  connection calls :meth:`~PerMessageDeflate.decompress` for every frame of a
  message whose first frame had RSV1 set, and :meth:`~PerMessageDeflate.compress`
  for every frame it sends.
* :class:`ContextPool` -- bounds how many connections of a server keep
  their zlib streams alive between messages.

Memory (``docs/compression.md`` has the measured cost per connection):

* zlib streams are created on first use, so a connection that negotiated
  permessage-deflate and exchanged no message holds no zlib state;
* a side without context takeover drops its stream at the end of every
  message;
* a side with context takeover keeps its stream while the connection is
  among the :class:`ContextPool`'s most recently active; otherwise it keeps
  only the last ``2**max_window_bits`` bytes of the stream (its LZ77
  window) and rebuilds the stream from them, as a preset dictionary, on the
  next message.

A preset dictionary holding the last window of the stream is exactly what
the peer's LZ77 window holds, so RFC 7692 context takeover is unchanged: the
bytes on the wire may differ from what one long-lived compressor would emit,
what they decode to does not.

No class is thread-safe; a :class:`PerMessageDeflate` belongs to one
connection. Pure computation: no I/O.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from shardws.exceptions import (
    DuplicateParameter,
    InvalidParameterName,
    InvalidParameterValue,
    NegotiationError,
    PayloadTooBig,
    RemoteProtocolError,
)

__all__ = [
    "ContextPool",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
    "enable_server_permessage_deflate",
    "ExtensionParameter",
]

ExtensionParameter = tuple[str, str | None]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 section 7.2.1: the compressed payload ends without "4 octets (that
# are 0x00 0x00 0xff 0xff)"; section 7.2.2: the receiver appends them back.
_TAIL = b"\x00\x00\xff\xff"
_INFLATE_STEP = 2**18  # bytes inflated per zlib call when a limit applies

# RFC 7692 section 7.1.2.1: "This parameter has a decimal integer value without
# leading zeroes between 8 to 15, inclusive". Matching the exact strings
# rejects "08", "+9", " 9", "9.0", "0x9" without parsing anything.
_WINDOW_BITS_VALUES = {str(bits): bits for bits in range(8, 16)}

# zlib cannot deflate with a raw 256-byte window (deflateInit2 rejects -8 since
# zlib 1.2.9, https://github.com/madler/zlib/issues/171); inflating with 8 works.
MIN_LOCAL_WINDOW_BITS = 9
MIN_REMOTE_WINDOW_BITS = 8
MAX_WINDOW_BITS = 15

# compress_settings: the keyword arguments of zlib.compressobj that may be
# tuned, with the values deflateInit2() accepts. wbits is negotiated and
# zdict (a preset dictionary) is unknown to the peer, so neither is accepted.
_COMPRESS_SETTINGS: dict[str, range] = {
    "level": range(zlib.Z_DEFAULT_COMPRESSION, 10),  # -1 (zlib's default, 6) .. 9
    "method": range(zlib.DEFLATED, zlib.DEFLATED + 1),
    "memLevel": range(1, 10),
    "strategy": range(zlib.Z_DEFAULT_STRATEGY, zlib.Z_FIXED + 1),
}

# Default size of a server's ContextPool (ServerPerMessageDeflateFactory).
MAX_LIVE_CONTEXTS = 256


def _check_compress_settings(settings: Mapping[str, int] | None) -> dict[str, int]:
    """Copy ``settings`` (keyword arguments of :func:`zlib.compressobj`), validated.

    Raises ValueError for keys other than ``level``, ``method``,
    ``memLevel``, ``strategy`` (``wbits`` is negotiated) and for values zlib
    refuses, at configuration time rather than on the first message. Creates
    no zlib object (it runs once per negotiated connection).
    """
    settings = dict(settings or {})
    unknown = set(settings).difference(_COMPRESS_SETTINGS)
    if unknown:
        raise ValueError(
            f"compress_settings accepts {', '.join(_COMPRESS_SETTINGS)}, "
            f"not {', '.join(sorted(unknown))} (the window size is negotiated)"
        )
    for name, value in settings.items():
        valid = _COMPRESS_SETTINGS[name]
        if not isinstance(value, int) or value not in valid:
            raise ValueError(f"compress_settings: {name} must be in {valid.start}..{valid.stop - 1}")
    return settings


def _new_compressor(
    window_bits: int, settings: Mapping[str, int], window: bytearray | None = None
) -> zlib._Compress:
    """A raw DEFLATE compressor (no zlib header) with a 2**window_bits window.

    ``window``: the last bytes already sent in this stream, preset as the
    dictionary (the peer's window holds them).
    """
    get = settings.get
    args = (
        get("level", zlib.Z_DEFAULT_COMPRESSION),
        get("method", zlib.DEFLATED),
        -window_bits,
        get("memLevel", zlib.DEF_MEM_LEVEL),
        get("strategy", zlib.Z_DEFAULT_STRATEGY),
    )
    if window:
        # A copy: zlib's docs ask that a mutable zdict stay unchanged.
        return zlib.compressobj(*args, zdict=bytes(window))
    return zlib.compressobj(*args)


def _new_decompressor(window_bits: int, window: bytearray) -> zlib._Decompress:
    """A raw DEFLATE decompressor whose window starts as ``window``."""
    if window:
        return zlib.decompressobj(wbits=-window_bits, zdict=bytes(window))
    return zlib.decompressobj(wbits=-window_bits)


def _slide(window: bytearray, data: bytes | bytearray | memoryview, size: int) -> None:
    """Append ``data`` to ``window``, keeping its last ``size`` bytes.

    In place: deleting from the front of a bytearray moves its start, so a
    small message costs about its own length, not the window's.
    """
    n = len(data)
    if n >= size:
        window[:] = data[n - size :]
        return
    window += data
    excess = len(window) - size
    if excess > 0:
        del window[:excess]


class ContextPool:
    """Which connections keep live zlib streams between messages: the ``size`` most recent.

    One per :class:`ServerPerMessageDeflateFactory`, shared by the
    :class:`PerMessageDeflate` instances it negotiates that take over their
    context in at least one direction. Each of them enters the pool (or
    moves to its recent end) whenever it compresses or inflates a frame with
    context takeover; beyond ``size`` entries the least recently used one
    drops its zlib streams (about 38 KiB for a compressor, 11 KiB for a
    decompressor with 12-bit windows and ``memLevel`` 5) and rebuilds them
    from its windows on its next message (measured: about 8 microseconds for
    a compressor on a full 4 KiB window, 1.5 for a decompressor). A
    decompressor in the middle of a fragmented message stays until the
    message ends. ``size`` 0: every stream is rebuilt at every message.

    Bounds the memory of live zlib streams to ``size`` connections whatever
    the number of idle ones; a connection that closed stays in the pool
    until pushed out. Not thread-safe: one event loop.
    """

    __slots__ = ("size", "_lru")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("max_live_contexts must be >= 0")
        self.size = size
        self._lru: OrderedDict[PerMessageDeflate, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def __repr__(self) -> str:
        return f"ContextPool(size={self.size}, live={len(self._lru)})"

    def use(self, extension: PerMessageDeflate) -> None:
        """Mark ``extension``'s streams as just used; evict beyond ``size``.

        The evicted instance may be ``extension`` itself (``size`` 0): a
        stream already in use finishes its frame, the next message rebuilds.
        """
        lru = self._lru
        try:
            lru.move_to_end(extension)
        except KeyError:
            lru[extension] = None
            extension._live = True
            while len(lru) > self.size:
                victim, _ = lru.popitem(last=False)
                victim._evict()


class PerMessageDeflate:
    """The negotiated permessage-deflate state of one connection.

    ``remote_*`` parameters describe what the peer does when it compresses
    (so how we must inflate), ``local_*`` what we do when we compress. On a
    server, remote is the client: ``remote_no_context_takeover`` is the
    negotiated ``client_no_context_takeover`` and so on.

    :attr:`share_key` is not None exactly when we reset our compressor for
    every message (``local_no_context_takeover``); two instances with equal
    keys then produce identical bytes for the same message, so a broadcast can
    compress once per key.

    ``pool``: the :class:`ContextPool` that decides whether the zlib
    streams of a direction with context takeover stay alive between
    messages (None: they always do, and no window is kept).

    Raises ValueError for window bits outside 8..15 (remote) or 9..15 (local:
    zlib cannot deflate with 8) and for bad ``compress_settings``.
    """

    name = EXTENSION_NAME

    __slots__ = (
        "remote_no_context_takeover",
        "local_no_context_takeover",
        "remote_max_window_bits",
        "local_max_window_bits",
        "compress_settings",
        "share_key",
        "_decoder",
        "_encoder",
        "_pool_in",
        "_pool_out",
        "_live",
        "_in_message",
        "_received",
        "_sent",
    )

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: Mapping[str, int] | None = None,
        pool: ContextPool | None = None,
    ) -> None:
        if not MIN_REMOTE_WINDOW_BITS <= remote_max_window_bits <= MAX_WINDOW_BITS:
            raise ValueError("remote_max_window_bits must be between 8 and 15")
        if not MIN_LOCAL_WINDOW_BITS <= local_max_window_bits <= MAX_WINDOW_BITS:
            raise ValueError("local_max_window_bits must be between 9 and 15")
        self.remote_no_context_takeover = bool(remote_no_context_takeover)
        self.local_no_context_takeover = bool(local_no_context_takeover)
        self.remote_max_window_bits = remote_max_window_bits
        self.local_max_window_bits = local_max_window_bits
        self.compress_settings = _check_compress_settings(compress_settings)
        self.share_key: tuple[object, ...] | None = (
            (EXTENSION_NAME, local_max_window_bits, tuple(sorted(self.compress_settings.items())))
            if self.local_no_context_takeover
            else None
        )
        # Created on first use (nothing of zlib for a connection that
        # exchanged no message); dropped after each message without context
        # takeover, or between messages once the pool evicts them.
        self._decoder: zlib._Decompress | None = None
        self._encoder: zlib._Compress | None = None
        # The pool, per direction with context takeover.
        self._pool_in = None if self.remote_no_context_takeover else pool
        self._pool_out = None if self.local_no_context_takeover else pool
        self._live = pool is None  # False: evicted, streams go at message end
        self._in_message = False  # the decoder is inside a fragmented message
        # The last 2**bits bytes inflated / sent (the LZ77 window both ends
        # hold), preset when a stream is rebuilt.
        self._received = bytearray()
        self._sent = bytearray()

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate("
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_max_window_bits={self.local_max_window_bits})"
        )

    def _evict(self) -> None:
        """Called by the pool: drop the zlib streams, keep the windows.

        A decoder inside a fragmented message holds state that the window
        cannot rebuild (a partial block): it goes at the end of the message.
        """
        self._live = False
        self._encoder = None
        if not self._in_message:
            self._decoder = None

    # ------------------------------------------------------------ receiving

    def decompress(self, data: bytes, fin: bool, max_length: int | None) -> bytes:
        """Inflate one frame's payload of a compressed message.

        Call it for every frame of a message whose first frame had RSV1 set,
        ``fin`` as in the frame. ``max_length`` caps what this call returns
        (None: no cap); the caller passes what is left of its message size
        limit (``max_size`` minus what earlier frames of the message
        produced), as :class:`~shardws.protocol.connection.Connection` does.
        zlib is never asked for more than ``max_length + 1`` bytes, so a
        decompression bomb costs at most that much memory whatever the
        compression ratio.

        Raises :class:`~shardws.exceptions.PayloadTooBig` (1009) when the
        frame inflates to more than ``max_length`` (the flush of the appended
        tail included), :class:`~shardws.exceptions.RemoteProtocolError`
        (1002) on data that is not valid DEFLATE. After either, this object
        must not be used again (the connection fails).
        """
        bits = self.remote_max_window_bits
        pool = self._pool_in
        if pool is not None:
            pool.use(self)
        decoder = self._decoder
        if decoder is None or decoder.eof:
            # First frame of a message, or the previous frame ended the
            # stream with a BFINAL block (no more input accepted): a new
            # stream on the same window.
            decoder = self._decoder = _new_decompressor(bits, self._received)
        if fin:
            # RFC 7692 section 7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff
            # to the tail end of the payload of the message."
            data = data + _TAIL
        # zlib is asked for limit + 1 bytes: a message of exactly max_length
        # bytes passes, one byte more is seen and refused.
        limit = -1 if max_length is None else max_length
        size = 1 << bits
        try:
            out = self._inflate(decoder, data, limit)
            window = self._received
            _slide(window, out, size)
            # RFC 7692 section 7.2.3.4: a peer may end a block with BFINAL set
            # to 1; what follows (at least the appended tail, normally
            # 0x00 0x00 0x00 0xff 0xff) starts a new DEFLATE stream at the
            # next octet, whose window is preset to what came before.
            while decoder.eof and decoder.unused_data:
                rest = decoder.unused_data
                decoder = self._decoder = _new_decompressor(bits, window)
                more = self._inflate(decoder, rest, -1 if limit < 0 else limit - len(out))
                _slide(window, more, size)
                out = out + more if out else more
        except zlib.error as exc:
            self._decoder = None
            raise RemoteProtocolError(f"invalid compressed data: {exc}") from None
        self._in_message = not fin
        if not fin:
            return out
        # RFC 7692 section 7.2.2: "If the "agreed parameters" contain the
        # "client_no_context_takeover" extension parameter, the server MAY
        # decompress each new message with an empty LZ77 sliding window.
        # Otherwise, the server MUST decompress each new message using the
        # LZ77 sliding window used to process the last compressed message."
        if self.remote_no_context_takeover:
            self._decoder = None
            window.clear()
            return out
        if not self._live:
            # Evicted: a valid message ends on a block boundary (the
            # appended tail completes an empty stored block, section
            # 7.2.1), so the decoder holds nothing but its window, which
            # the next message rebuilds from self._received.
            self._decoder = None
        return out

    def _inflate(self, decoder: zlib._Decompress, data: bytes, limit: int) -> bytes:
        """Inflate ``data``; ``limit`` < 0: unbounded, else at most ``limit`` bytes.

        Raises PayloadTooBig when the output would exceed ``limit``.
        """
        if limit < 0:
            return decoder.decompress(data)
        # Inflate in steps of at most _INFLATE_STEP bytes, never more than
        # limit + 1 in all: one decompress(data, limit + 1) call builds its
        # result from blocks and joins them, so a bomb would peak at twice
        # the limit (measured: 16 MiB for max_size 8 MiB; stepped: 8.4 MiB).
        parts: list[bytes] = []
        size = 0
        while True:
            want = min(_INFLATE_STEP, limit + 1 - size)
            part = decoder.decompress(data, want)
            size += len(part)
            if size > limit:
                self._decoder = None
                raise PayloadTooBig("decompressed message over max_size")
            parts.append(part)
            data = decoder.unconsumed_tail
            # A full step may leave output pending in zlib even when all the
            # input is consumed: ask again until a step comes back short.
            if decoder.eof or (not data and len(part) < want):
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -------------------------------------------------------------- sending

    def compress(self, data: bytes | bytearray | memoryview, fin: bool = True) -> bytes:
        """Deflate one frame's payload; ``fin`` True for the last frame of a message.

        Every frame is flushed (``Z_SYNC_FLUSH``) so the peer can inflate it
        on arrival; the last frame of a message has the 0x00 0x00 0xff 0xff
        tail removed (RFC 7692 section 7.2.1). Set RSV1 on the first frame
        of the message only.
        """
        encoder = self._encoder
        if encoder is None:
            # Our first message, a new message without context takeover, or
            # a compressor the pool evicted: built on the window the peer
            # holds (empty without context takeover).
            encoder = self._encoder = _new_compressor(
                self.local_max_window_bits, self.compress_settings, self._sent
            )
        pool = self._pool_out
        if pool is not None:
            # Context takeover with a pool: keep the window, in case the
            # compressor is evicted before the next message.
            pool.use(self)
            _slide(self._sent, data, 1 << self.local_max_window_bits)
        out = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            # A sync flush always ends with an empty stored block, even with
            # no new input (RFC 7692 section 7.2.3.6: the last fragment is then
            # the single octet 0x00).
            assert out[-4:] == _TAIL
            # RFC 7692 section 7.2.1: "Remove 4 octets (that are 0x00 0x00
            # 0xff 0xff) from the tail end."
            out = out[:-4]
            # RFC 7692 section 7.2.1: with "server_no_context_takeover" the
            # server "MUST start compressing each new message with an empty
            # LZ77 sliding window".
            if self.local_no_context_takeover:
                self._encoder = None
        return out


# --------------------------------------------------------------- negotiation


def _parse_params(
    params: Iterable[ExtensionParameter],
) -> tuple[bool, bool, int | None, int | Literal[True] | None]:
    """Parse one offer's parameters (RFC 7692 section 7.1).

    Returns (server_no_context_takeover, client_no_context_takeover,
    server_max_window_bits, client_max_window_bits); client_max_window_bits
    is True when offered without a value.

    RFC 7692 section 7: "A server MUST decline an extension negotiation offer
    for this extension if any of the following conditions are met: The
    negotiation offer contains an extension parameter not defined for use in
    an offer. The negotiation offer contains an extension parameter with an
    invalid value. The negotiation offer contains multiple extension
    parameters with the same name." Raises DuplicateParameter,
    InvalidParameterName, InvalidParameterValue accordingly.
    """
    seen: set[str] = set()
    flags = {"server_no_context_takeover": False, "client_no_context_takeover": False}
    bits: dict[str, int | Literal[True] | None] = {
        "server_max_window_bits": None,
        "client_max_window_bits": None,
    }
    for raw_name, value in params:
        # Extension parameter names are tokens, compared case-insensitively
        # like every other token of the header.
        name = raw_name.lower()
        if name in seen:
            raise DuplicateParameter(name)
        seen.add(name)
        if name in flags:
            # Sections 7.1.1.1 / 7.1.1.2: the context takeover parameters
            # "have no value".
            if value is not None:
                raise InvalidParameterValue(name, value)
            flags[name] = True
        elif name in bits:
            if value is None and name == "client_max_window_bits":
                # Section 7.1.2.2: "the "client_max_window_bits" extension
                # parameter ... may have no value", meaning the client
                # supports it; server_max_window_bits always has one.
                bits[name] = True
            elif value is not None and value in _WINDOW_BITS_VALUES:
                bits[name] = _WINDOW_BITS_VALUES[value]
            else:
                raise InvalidParameterValue(name, value)
        else:
            raise InvalidParameterName(name)
    server_bits = bits["server_max_window_bits"]
    assert server_bits is not True
    return (
        flags["server_no_context_takeover"],
        flags["client_no_context_takeover"],
        server_bits,
        bits["client_max_window_bits"],
    )


class ServerPerMessageDeflateFactory:
    """Server configuration of permessage-deflate (RFC 7692 section 7.1).

    * ``server_no_context_takeover``: compress each message from scratch
      (memory: no compressor is kept between messages; broadcasts share one
      compressed frame per configuration).
    * ``client_no_context_takeover``: ask the client to do the same, so no
      decompressor is kept between messages.
    * ``server_max_window_bits`` (9..15, None: 15 unless the client asks for
      less): our window. 8 is not supported (zlib cannot deflate with it): an
      offer that asks for it is declined.
    * ``client_max_window_bits`` (8..15, None: don't ask): the client's
      window, imposed when the client advertises ``client_max_window_bits``.
    * ``compress_settings``: keyword arguments of :func:`zlib.compressobj`
      (``level``, ``memLevel``, ``strategy``), not ``wbits``.
    * ``require_client_max_window_bits``: decline offers from clients that
      cannot limit their window (they would inflate with 15 bits here).
    * ``max_live_contexts`` (>= 0, None: no limit): how many connections
      with context takeover keep their zlib streams alive between messages,
      the most recently active ones (:class:`ContextPool`); the others keep
      only their windows and rebuild the streams on their next message.

    Raises ValueError on invalid settings.
    """

    name = EXTENSION_NAME

    def __init__(
        self,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | None = None,
        compress_settings: Mapping[str, int] | None = None,
        require_client_max_window_bits: bool = False,
        max_live_contexts: int | None = MAX_LIVE_CONTEXTS,
    ) -> None:
        if server_max_window_bits is not None and not (
            MIN_LOCAL_WINDOW_BITS <= server_max_window_bits <= MAX_WINDOW_BITS
        ):
            raise ValueError("server_max_window_bits must be between 9 and 15")
        if client_max_window_bits is not None and not (
            MIN_REMOTE_WINDOW_BITS <= client_max_window_bits <= MAX_WINDOW_BITS
        ):
            raise ValueError("client_max_window_bits must be between 8 and 15")
        if require_client_max_window_bits and client_max_window_bits is None:
            raise ValueError("require_client_max_window_bits needs client_max_window_bits")
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compress_settings = _check_compress_settings(compress_settings)
        self.require_client_max_window_bits = require_client_max_window_bits
        self.max_live_contexts = max_live_contexts
        self._pool = None if max_live_contexts is None else ContextPool(max_live_contexts)

    def __repr__(self) -> str:
        return (
            f"ServerPerMessageDeflateFactory("
            f"server_no_context_takeover={self.server_no_context_takeover}, "
            f"client_no_context_takeover={self.client_no_context_takeover}, "
            f"server_max_window_bits={self.server_max_window_bits}, "
            f"client_max_window_bits={self.client_max_window_bits}, "
            f"compress_settings={self.compress_settings}, "
            f"max_live_contexts={self.max_live_contexts})"
        )

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[object],
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        """Accept one offer: return the response parameters and the extension.

        Raises a :class:`~shardws.exceptions.NegotiationError` subclass to
        decline the offer (the handshake then tries the next one).
        """
        if any(getattr(ext, "name", None) == self.name for ext in accepted_extensions):
            raise NegotiationError(f"skipped duplicate {self.name}")
        server_nct, client_nct, server_bits, client_bits = _parse_params(params)

        # Section 7.1.1.1: "A server accepts an extension negotiation offer
        # that includes the "server_no_context_takeover" extension parameter
        # by including the "server_no_context_takeover" extension parameter
        # in the corresponding extension negotiation response"; it "MAY
        # include" it when not offered.
        server_nct = server_nct or self.server_no_context_takeover
        # Section 7.1.1.2: "A server MAY include the
        # "client_no_context_takeover" extension parameter in an extension
        # negotiation response." Echoing an offered one lets us drop the
        # decompressor between messages.
        client_nct = client_nct or self.client_no_context_takeover

        # Section 7.1.2.1: "A server accepts an extension negotiation offer
        # with this parameter by including the "server_max_window_bits"
        # extension parameter in the extension negotiation response to send
        # back to the client with the same or smaller value as the offer."
        # Without it in the offer the server MAY still include one.
        if self.server_max_window_bits is not None and (
            server_bits is None or server_bits > self.server_max_window_bits
        ):
            server_bits = self.server_max_window_bits
        # "A server declines an extension negotiation offer with this
        # parameter if the server doesn't support it": 8 cannot be honoured
        # (zlib deflates with at least 9) and answering 9 would exceed it.
        if server_bits is not None and server_bits < MIN_LOCAL_WINDOW_BITS:
            raise InvalidParameterValue("server_max_window_bits", str(server_bits))

        # Section 7.1.2.2: "If a received extension negotiation offer doesn't
        # have the "client_max_window_bits" extension parameter, the
        # corresponding extension negotiation response to the offer MUST NOT
        # include the "client_max_window_bits" extension parameter." With it
        # the server may answer any value up to the offered one.
        if client_bits is None:
            if self.require_client_max_window_bits:
                raise NegotiationError("client_max_window_bits required")
        elif self.client_max_window_bits is not None and (
            client_bits is True or client_bits > self.client_max_window_bits
        ):
            client_bits = self.client_max_window_bits
        elif client_bits is True:
            client_bits = None  # the client will use 15

        response: list[ExtensionParameter] = []
        if server_nct:
            response.append(("server_no_context_takeover", None))
        if client_nct:
            response.append(("client_no_context_takeover", None))
        if server_bits is not None:
            response.append(("server_max_window_bits", str(server_bits)))
        if client_bits is not None:
            response.append(("client_max_window_bits", str(client_bits)))
        extension = PerMessageDeflate(
            remote_no_context_takeover=client_nct,
            local_no_context_takeover=server_nct,
            remote_max_window_bits=client_bits or MAX_WINDOW_BITS,
            local_max_window_bits=server_bits or MAX_WINDOW_BITS,
            compress_settings=self.compress_settings,
            pool=self._pool,
        )
        return response, extension


def enable_server_permessage_deflate(
    extensions: Sequence[object] | None,
) -> list[object]:
    """Return ``extensions`` plus a default permessage-deflate factory.

    The ``compression="deflate"`` default of ``serve()``: 4 KiB windows both
    ways (12 bits) and ``memLevel`` 5, the defaults of websockets, which make
    a connection's live zlib streams about 50 KiB instead of 300 KiB, and
    at most ``MAX_LIVE_CONTEXTS`` (256) connections with live streams; the
    others keep at most their two 4 KiB windows (see
    ``docs/compression.md``). An already configured permessage-deflate
    factory is kept unchanged.
    """
    extensions = list(extensions or [])
    if not any(getattr(ext, "name", None) == EXTENSION_NAME for ext in extensions):
        extensions.append(
            ServerPerMessageDeflateFactory(
                server_max_window_bits=12,
                client_max_window_bits=12,
                compress_settings={"memLevel": 5},
            )
        )
    return extensions
