"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

Two public classes:

* :class:`ServerPerMessageDeflateFactory` -- the server's configuration. The
  handshake calls :meth:`~ServerPerMessageDeflateFactory.process_request_params`
  once per offer in the client's ``Sec-WebSocket-Extensions`` header, in
  order, until one returns; a :class:`~shardws.exceptions.NegotiationError`
  means "decline this offer, try the next one".
* :class:`PerMessageDeflate` -- one per connection, after negotiation. The
  connection calls :meth:`~PerMessageDeflate.decompress` for every frame of a
  message whose first frame had RSV1 set, and :meth:`~PerMessageDeflate.compress`
  for every frame it sends.

Memory: zlib streams are created on first use and, when a side does not take
over its context, dropped at the end of every message, so an idle connection
without context takeover holds no zlib state at all. ``docs/compression.md``
has the measured cost per connection.

Neither class is thread-safe; a :class:`PerMessageDeflate` belongs to one
connection. Pure computation: no I/O.
"""

from __future__ import annotations

import zlib
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
# tuned, with zlib's defaults. wbits is negotiated and zdict (a preset
# dictionary) is unknown to the peer, so neither is accepted.
_COMPRESS_DEFAULTS = {
    "level": zlib.Z_DEFAULT_COMPRESSION,
    "method": zlib.DEFLATED,
    "memLevel": zlib.DEF_MEM_LEVEL,
    "strategy": zlib.Z_DEFAULT_STRATEGY,
}


def _check_compress_settings(settings: Mapping[str, int] | None) -> dict[str, int]:
    """Copy ``settings`` (keyword arguments of :func:`zlib.compressobj`), validated.

    Raises ValueError for keys other than ``level``, ``method``,
    ``memLevel``, ``strategy`` (``wbits`` is negotiated) and for values zlib
    refuses, at configuration time rather than on the first message.
    """
    settings = dict(settings or {})
    unknown = set(settings).difference(_COMPRESS_DEFAULTS)
    if unknown:
        raise ValueError(
            f"compress_settings accepts {', '.join(_COMPRESS_DEFAULTS)}, "
            f"not {', '.join(sorted(unknown))} (the window size is negotiated)"
        )
    _new_compressor(MAX_WINDOW_BITS, settings)  # raises ValueError on bad values
    return settings


def _new_compressor(window_bits: int, settings: Mapping[str, int]) -> zlib._Compress:
    """A raw DEFLATE compressor (no zlib header) with a 2**window_bits window."""
    get = settings.get
    return zlib.compressobj(
        get("level", zlib.Z_DEFAULT_COMPRESSION),
        get("method", zlib.DEFLATED),
        -window_bits,
        get("memLevel", zlib.DEF_MEM_LEVEL),
        get("strategy", zlib.Z_DEFAULT_STRATEGY),
    )


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
    )

    def __init__(
        self,
        remote_no_context_takeover: bool,
        local_no_context_takeover: bool,
        remote_max_window_bits: int,
        local_max_window_bits: int,
        compress_settings: Mapping[str, int] | None = None,
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
        # Created on first use; dropped after each message when the
        # corresponding side does not take over its context.
        self._decoder: zlib._Decompress | None = None
        self._encoder: zlib._Compress | None = None

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate("
            f"remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_max_window_bits={self.local_max_window_bits})"
        )

    # ------------------------------------------------------------ receiving

    def _new_decoder(self) -> zlib._Decompress:
        return zlib.decompressobj(wbits=-self.remote_max_window_bits)

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
        decoder = self._decoder
        if decoder is None or decoder.eof:
            # A stream that ended with a BFINAL block cannot take more input.
            decoder = self._decoder = self._new_decoder()
        if fin:
            # RFC 7692 section 7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff
            # to the tail end of the payload of the message."
            data = data + _TAIL
        # zlib is asked for limit + 1 bytes: a message of exactly max_length
        # bytes passes, one byte more is seen and refused.
        limit = -1 if max_length is None else max_length
        try:
            out = self._inflate(decoder, data, limit)
            # RFC 7692 section 7.2.3.4: a peer may end a block with BFINAL set
            # to 1; what follows (at least the appended tail, normally
            # 0x00 0x00 0x00 0xff 0xff) starts a new DEFLATE stream at the
            # next octet. The new stream has an empty window: a reference
            # across the boundary fails loudly ("invalid distance too far
            # back") instead of producing wrong data.
            while decoder.eof and decoder.unused_data:
                rest = decoder.unused_data
                decoder = self._decoder = self._new_decoder()
                more = self._inflate(decoder, rest, -1 if limit < 0 else limit - len(out))
                out = out + more if out else more
        except zlib.error as exc:
            self._decoder = None
            raise RemoteProtocolError(f"invalid compressed data: {exc}") from None
        # RFC 7692 section 7.2.2: "If the "agreed parameters" contain the
        # "client_no_context_takeover" extension parameter, the server MAY
        # decompress each new message with an empty LZ77 sliding window.
        # Otherwise, the server MUST decompress each new message using the
        # LZ77 sliding window used to process the last compressed message."
        if fin and self.remote_no_context_takeover:
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
            encoder = self._encoder = _new_compressor(
                self.local_max_window_bits, self.compress_settings
            )
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

    def __repr__(self) -> str:
        return (
            f"ServerPerMessageDeflateFactory("
            f"server_no_context_takeover={self.server_no_context_takeover}, "
            f"client_no_context_takeover={self.client_no_context_takeover}, "
            f"server_max_window_bits={self.server_max_window_bits}, "
            f"client_max_window_bits={self.client_max_window_bits}, "
            f"compress_settings={self.compress_settings})"
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
        )
        return response, extension


def enable_server_permessage_deflate(
    extensions: Sequence[object] | None,
) -> list[object]:
    """Return ``extensions`` plus a default permessage-deflate factory.

    The ``compression="deflate"`` default of ``serve()``: 4 KiB windows both
    ways (12 bits) and ``memLevel`` 5, the defaults of websockets, which keep
    a connection with context takeover around 60 KiB instead of 300 KiB (see
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
