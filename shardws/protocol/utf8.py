"""UTF-8 validation for text messages and close reasons (RFC 6455 section 8.1).

Both helpers decode and validate in one pass with CPython's C codec and raise
:class:`~shardws.exceptions.InvalidUTF8` (close code 1007) on invalid input.

:class:`IncrementalUTF8Decoder` is *fail-fast*: it raises as soon as the bytes
fed so far cannot be the prefix of any valid UTF-8 text, not at the end of the
message. CPython's incremental decoder already does so for every invalid
prefix except a lone ``ED A0..BF`` pair (the start of an encoded surrogate),
which it keeps buffered; :meth:`IncrementalUTF8Decoder.decode` checks that
case itself.
"""

from __future__ import annotations

import codecs

from shardws.exceptions import InvalidUTF8

__all__ = ["IncrementalUTF8Decoder", "decode"]

_new_decoder = codecs.getincrementaldecoder("utf-8")


def decode(data: bytes | bytearray) -> str:
    """Decode a complete UTF-8 text; raise :class:`InvalidUTF8` if it is invalid."""
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUTF8(f"invalid UTF-8 at byte {exc.start}") from None


class IncrementalUTF8Decoder:
    """Decode a text message fragment by fragment, failing on the first invalid prefix.

    Not thread-safe (one instance per message being received).
    """

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _new_decoder()

    def decode(self, data: bytes | bytearray, final: bool = False) -> str:
        """Return the text decoded from ``data``; pass ``final=True`` on the last fragment.

        Raises :class:`InvalidUTF8` as soon as the bytes received so far are
        not a prefix of valid UTF-8 ("When an endpoint is to interpret a byte
        stream as UTF-8 but finds that the byte stream is not, in fact, a
        valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
        Connection_", RFC 6455 section 8.1), or at ``final`` when the text
        ends inside a sequence. The decoder is reset when this returns with
        ``final=True``.
        """
        decoder = self._decoder
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            decoder.reset()
            raise InvalidUTF8(f"invalid UTF-8 at byte {exc.start} of a fragment") from None
        if not final:
            pending = decoder.getstate()[0]
            # ED A0..BF starts a UTF-16 surrogate, never valid in UTF-8
            # (RFC 3629 section 3); CPython only notices on the third byte.
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                decoder.reset()
                raise InvalidUTF8("invalid UTF-8: encoded surrogate")
        return text

    def copy(self) -> IncrementalUTF8Decoder:
        """A new decoder in the same state (same partial sequence pending)."""
        clone = IncrementalUTF8Decoder()
        clone._decoder.setstate(self._decoder.getstate())
        return clone

    def reset(self) -> None:
        """Forget any partial sequence (e.g. when the message is abandoned)."""
        self._decoder.reset()
