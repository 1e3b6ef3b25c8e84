"""The exception tree: ConnectionClosed's description and aliases, the built-in bases."""

from __future__ import annotations

import pytest

from shardws.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    InvalidState,
    InvalidUTF8,
    LocalProtocolError,
    PayloadTooBig,
    ProtocolError,
    RemoteProtocolError,
)
from shardws.protocol.frames import Close

# (rcvd, sent, rcvd_then_sent, str, code, reason)
CLOSED_CASES = [
    (None, None, None, "no close frame received or sent", 1006, ""),
    (None, Close(1000, ""), None, "sent 1000 (OK); no close frame received", 1006, ""),
    (
        Close(1001, "bye"),
        None,
        None,
        "received 1001 (going away) bye; no close frame sent",
        1001,
        "bye",
    ),
    (
        Close(4000, "x"),
        Close(4000, ""),
        True,
        "received 4000 (private use) x; then sent 4000 (private use)",
        4000,
        "x",
    ),
    (
        Close(1000, ""),
        Close(1002, "oops"),
        False,
        "sent 1002 (protocol error) oops; then received 1000 (OK)",
        1000,
        "",
    ),
]


@pytest.mark.parametrize(("rcvd", "sent", "rcvd_then_sent", "text", "code", "reason"), CLOSED_CASES)
def test_connection_closed(
    rcvd: Close | None,
    sent: Close | None,
    rcvd_then_sent: bool | None,
    text: str,
    code: int,
    reason: str,
) -> None:
    exc = ConnectionClosed(rcvd, sent, rcvd_then_sent)
    assert (str(exc), exc.code, exc.reason) == (text, code, reason)


# (exception, bases it must have, close code or None)
TREE = [
    (RemoteProtocolError, (ProtocolError,), 1002),
    (InvalidUTF8, (RemoteProtocolError,), 1007),
    (PayloadTooBig, (RemoteProtocolError,), 1009),
    (LocalProtocolError, (ProtocolError, ValueError), None),
    (InvalidState, (AssertionError,), None),
    (ConcurrencyError, (RuntimeError,), None),
]


@pytest.mark.parametrize(("exc_type", "bases", "close_code"), TREE)
def test_exception_tree(
    exc_type: type[Exception], bases: tuple[type[Exception], ...], close_code: int | None
) -> None:
    assert all(issubclass(exc_type, base) for base in bases)
    assert getattr(exc_type, "close_code", None) == close_code
