"""Connection: message assembly, closing handshake, state table, pings, sending."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardws.exceptions import InvalidState, LocalProtocolError, PayloadTooBig, RemoteProtocolError
from shardws.protocol.connection import TRANSITIONS, Connection, Event, Ping, Pong, Side, State
from shardws.protocol.deflate import PerMessageDeflate
from shardws.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Frame,
    FrameParser,
    serialize_close,
    serialize_frame,
)
from tests.protocol.wire import MASK, client, server


def frames_sent(conn: Connection) -> list[Frame]:
    """Parse what ``conn`` queued, as its peer would."""
    parser = FrameParser(require_mask=conn.side is Side.CLIENT, max_size=None, rsv1_allowed=True)
    for chunk in conn.data_to_send():
        assert type(chunk) is bytes
        parser.feed(chunk)
    frames = []
    while (frame := parser.next_frame()) is not None:
        frames.append(frame)
    assert parser.buffered == 0
    return frames


def close_frame(code: int, reason: str = "") -> Frame:
    return Frame(OP_CLOSE, serialize_close(code, reason))


# ------------------------------------------------------------- messages

# (name, client bytes, events)
MESSAGES: list[tuple[str, bytes, list[Event]]] = [
    ("text", client(OP_TEXT, b"Hello"), ["Hello"]),
    ("binary", client(OP_BINARY, b"\x00\xff"), [b"\x00\xff"]),
    ("empty text", client(OP_TEXT), [""]),
    ("empty binary", client(OP_BINARY), [b""]),
    ("fragmented text", client(OP_TEXT, b"Hel", fin=False) + client(OP_CONT, b"lo"), ["Hello"]),
    (
        "text split inside a code point",
        client(OP_TEXT, "κό".encode()[:3], fin=False) + client(OP_CONT, "κό".encode()[3:]),
        ["κό"],
    ),
    (
        "fragmented binary with empty fragments",
        client(OP_BINARY, b"", fin=False) + client(OP_CONT, b"a", fin=False) + client(OP_CONT, b""),
        [b"a"],
    ),
    (
        "control frames inside a fragmented message",
        client(OP_TEXT, b"a", fin=False)
        + client(OP_PING, b"1")
        + client(OP_CONT, b"b", fin=False)
        + client(OP_PONG, b"2")
        + client(OP_CONT, b"c"),
        [Ping(b"1"), Pong(b"2"), "abc"],
    ),
    ("two messages in one read", client(OP_TEXT, b"a") + client(OP_BINARY, b"b"), ["a", b"b"]),
    ("ping", client(OP_PING, b"Hello"), [Ping(b"Hello")]),
    ("pong", client(OP_PONG, b"Hello"), [Pong(b"Hello")]),
    ("message of exactly max_size", client(OP_BINARY, bytes(1024)), [bytes(1024)]),
    (
        "fragmented message of exactly max_size",
        client(OP_TEXT, b"a" * 1000, fin=False) + client(OP_CONT, b"b" * 24),
        ["a" * 1000 + "b" * 24],
    ),
]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize(("name", "wire", "events"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_messages(name: str, wire: bytes, events: list[Event], bytewise: bool) -> None:
    conn = Connection(max_size=1024)
    chunks = [wire[i : i + 1] for i in range(len(wire))] if bytewise else [wire]
    got = [event for chunk in chunks for event in conn.receive_data(chunk)]
    assert got == events
    assert conn.failure is None
    # each ping was answered with a pong carrying the same data
    pongs = [Frame(OP_PONG, e.data) for e in events if isinstance(e, Ping)]
    assert frames_sent(conn) == pongs


def test_message_types() -> None:
    conn = Connection()
    text, binary = conn.receive_data(client(OP_TEXT, b"a") + client(OP_BINARY, b"b"))
    assert type(text) is str
    assert type(binary) is bytes


def test_no_max_size() -> None:
    conn = Connection(max_size=None)
    big = bytes(2**21)
    assert conn.receive_data(
        client(OP_BINARY, big[:10], fin=False) + client(OP_CONT, big[10:])
    ) == [big]


def test_size_budget_restored_after_message() -> None:
    """The per-message budget lowered during a fragmented message is restored at its end."""
    conn = Connection(max_size=100)
    conn.receive_data(client(OP_BINARY, bytes(90), fin=False) + client(OP_CONT, bytes(10)))
    assert conn.receive_data(client(OP_BINARY, bytes(100))) == [bytes(100)]
    assert conn.failure is None


# ------------------------------------------------- fail fast inside a frame


def test_autobahn_6_4_3_invalid_chunk_fails_before_frame_completes() -> None:
    """One text frame in three reads: the read with invalid bytes fails at once."""
    kosme = "κόσμε".encode()
    wire = client(OP_TEXT, kosme + b"\xf4\x90\x80\x80" + b"edited")
    first, second, third = wire[: 6 + len(kosme)], wire[6 + len(kosme) : -6], wire[-6:]
    conn = Connection()
    assert conn.receive_data(first) == []
    assert conn.failure is None
    assert conn.receive_data(second) == []
    assert conn.failure is not None and conn.failure.close_code == 1007
    assert conn.receive_data(third) == []


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize("step", [1, 3, 7, 64])
def test_large_text_frame_in_small_reads(side: Side, step: int) -> None:
    """Partial validation unmasks each new piece with the right mask octet."""
    text = "aé€😀" * 100
    frame = client if side is Side.SERVER else server
    wire = frame(OP_TEXT, text[:150].encode(), fin=False) + frame(OP_CONT, text[150:].encode())
    conn = Connection(side)
    events = [e for i in range(0, len(wire), step) for e in conn.receive_data(wire[i : i + step])]
    assert events == [text]
    assert conn.failure is None


# (name, incomplete input): checked only when complete, or never
NOT_CHECKED_EARLY = [
    ("binary frame", client(OP_BINARY, b"\xff" * 200)[:20]),
    ("compressed text frame", client(OP_TEXT, b"\xff" * 200, rsv=4)[:20]),
    (
        "continuation of a compressed text message",
        client(OP_TEXT, b"", fin=False, rsv=4) + client(OP_CONT, b"\xff" * 200)[:20],
    ),
    (
        "text frame inside a fragmented message (a protocol error once complete)",
        client(OP_BINARY, b"", fin=False) + client(OP_TEXT, b"\xff" * 200)[:20],
    ),
    ("incomplete header", client(OP_TEXT, b"\xff" * 200)[:3]),
]


@pytest.mark.parametrize(("name", "wire"), NOT_CHECKED_EARLY, ids=[c[0] for c in NOT_CHECKED_EARLY])
def test_partial_frames_not_checked_early(name: str, wire: bytes) -> None:
    conn = Connection(extensions=[PerMessageDeflate(False, False, 15, 15)])
    assert conn.receive_data(wire) == []
    assert conn.failure is None


def test_partial_frame_checked_once_per_byte() -> None:
    """A read that adds nothing to the incomplete frame checks nothing again."""
    wire = client(OP_TEXT, "é".encode() * 100)
    conn = Connection()
    assert conn.receive_data(wire[:9]) == []  # 8-byte header, first byte of "é"
    assert conn.receive_data(b"") == []
    assert conn.receive_data(wire[9:]) == ["é" * 100]


# -------------------------------------------------------------- closing


def test_server_receives_close() -> None:
    conn = Connection()
    assert conn.receive_data(client(OP_CLOSE, serialize_close(1001, "bye"))) == [Close(1001, "bye")]
    # RFC 6455 5.5.1: answer with a close frame echoing the code.
    assert frames_sent(conn) == [close_frame(1001)]
    assert conn.state is State.CLOSING
    assert conn.close_rcvd == Close(1001, "bye")
    assert conn.close_sent == Close(1001, "")
    assert conn.close_rcvd_then_sent is True
    assert conn.close_transport_now()
    assert (conn.close_code, conn.close_reason) == (None, None)
    # after the close frame, further data is ignored
    assert conn.receive_data(client(OP_TEXT, b"late")) == []
    assert conn.data_to_send() == []
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert (conn.close_code, conn.close_reason) == (1001, "bye")


def test_empty_close_is_answered_with_1000() -> None:
    conn = Connection()
    assert conn.receive_data(client(OP_CLOSE)) == [Close(1005, "")]
    assert frames_sent(conn) == [close_frame(1000)]


def test_data_after_close_in_same_read_is_ignored() -> None:
    conn = Connection()
    events = conn.receive_data(client(OP_CLOSE) + client(OP_TEXT, b"x") + client(OP_PING))
    assert events == [Close(1005, "")]
    assert frames_sent(conn) == [close_frame(1000)]


def test_close_during_fragmented_message_drops_it() -> None:
    conn = Connection()
    wire = client(OP_TEXT, b"a", fin=False) + client(OP_CLOSE, serialize_close(1000, ""))
    assert conn.receive_data(wire) == [Close(1000, "")]
    assert conn.failure is None


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
def test_we_close_first(side: Side) -> None:
    conn = Connection(side, mask_key_factory=lambda: MASK)
    conn.send_close(1000, "done")
    assert frames_sent(conn) == [close_frame(1000, "done")]
    assert conn.state is State.CLOSING
    assert not conn.close_transport_now()
    # messages still arrive while waiting for the peer's close
    frame = client if side is Side.SERVER else server
    assert conn.receive_data(frame(OP_TEXT, b"still")) == ["still"]
    assert conn.receive_data(frame(OP_CLOSE, serialize_close(1000, ""))) == [Close(1000, "")]
    assert conn.data_to_send() == []  # no second close frame
    assert conn.close_rcvd_then_sent is False
    # 7.1.1: the server closes the TCP connection; the client waits for it.
    assert conn.close_transport_now() is (side is Side.SERVER)
    conn.receive_eof()
    assert conn.close_code == 1000


def test_client_receives_close() -> None:
    conn = Connection(Side.CLIENT, mask_key_factory=lambda: MASK)
    assert conn.receive_data(server(OP_CLOSE, serialize_close(1012, ""))) == [Close(1012, "")]
    assert frames_sent(conn) == [close_frame(1012)]
    assert not conn.close_transport_now()


def test_eof_without_close_frame() -> None:
    conn = Connection()
    conn.receive_data(client(OP_TEXT, b"partial", fin=False))
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert (conn.close_code, conn.close_reason) == (1006, "")
    assert conn.receive_data(client(OP_TEXT, b"x")) == []
    conn.receive_eof()  # idempotent
    assert conn.state is State.CLOSED


# (code, reason, payload sent) / exception
SEND_CLOSE = [
    (1000, "", b"\x03\xe8"),
    (4000, "app", b"\x0f\xa0app"),
    (None, "", b""),
    (None, "why", LocalProtocolError),
    (1005, "", LocalProtocolError),
    (999, "", LocalProtocolError),
    (1000, "x" * 124, LocalProtocolError),
]


@pytest.mark.parametrize(("code", "reason", "expected"), SEND_CLOSE)
def test_send_close(code: int | None, reason: str, expected: bytes | type[Exception]) -> None:
    conn = Connection()
    if isinstance(expected, bytes):
        conn.send_close(code, reason)
        assert frames_sent(conn) == [Frame(OP_CLOSE, expected)]
        assert conn.close_sent == Close(1005 if code is None else code, reason)
    else:
        with pytest.raises(expected):
            conn.send_close(code, reason)
        assert conn.state is State.OPEN
        assert conn.data_to_send() == []


# ----------------------------------------------------------------- fail


def test_local_fail() -> None:
    conn = Connection()
    conn.fail(1011, "keepalive ping timeout")
    assert frames_sent(conn) == [close_frame(1011, "keepalive ping timeout")]
    assert conn.state is State.CLOSING
    assert conn.close_transport_now()
    assert conn.failure is None  # not the peer's fault
    assert conn.receive_data(client(OP_TEXT, b"x")) == []


def test_fail_while_closing_sends_no_second_close() -> None:
    conn = Connection()
    conn.send_close(1001)
    conn.data_to_send()
    conn.receive_data(client(0x3))  # reserved opcode
    assert conn.failure is not None
    assert conn.data_to_send() == []
    assert conn.close_transport_now()
    assert conn.state is State.CLOSING


def test_fail_rejects_bad_code() -> None:
    conn = Connection()
    with pytest.raises(LocalProtocolError):
        conn.fail(1006)
    assert conn.state is State.OPEN


def test_failure_reason_is_truncated() -> None:
    conn = Connection()
    conn.fail(1008, "é" * 100)  # 200 UTF-8 bytes
    (frame,) = frames_sent(conn)
    assert len(frame.payload) <= 125
    assert frame.payload[2:].decode() == "é" * 61


def test_failure_reason_from_exception() -> None:
    conn = Connection()
    conn.receive_data(client(0xB))
    assert isinstance(conn.failure, RemoteProtocolError)
    assert frames_sent(conn) == [close_frame(1002, "invalid opcode 0xb")]


# ------------------------------------------- fault after messages: pending

# (name, client bytes, events, close code, held back?): a fault after complete
# messages in the same read is held back; without messages it fails at once.
PENDING_CASES: list[tuple[str, bytes, list[Event], int, bool]] = [
    ("text then RSV2", client(OP_TEXT, b"a") + client(OP_TEXT, b"b", rsv=2), ["a"], 1002, True),
    ("binary then reserved opcode", client(OP_BINARY, b"a") + client(0x3), [b"a"], 1002, True),
    (
        "fragmented text then stray continuation",
        client(OP_TEXT, b"a", fin=False) + client(OP_CONT, b"b") + client(OP_CONT, b"c"),
        ["ab"],
        1002,
        True,
    ),
    ("text then invalid UTF-8", client(OP_TEXT, b"a") + client(OP_TEXT, b"\xff"), ["a"], 1007, True),
    ("text then too big", client(OP_TEXT, b"a") + client(OP_BINARY, bytes(1025)), ["a"], 1009, True),
    (
        "text, ping, then an unfinished message broken",
        client(OP_TEXT, b"a")
        + client(OP_PING, b"p")
        + client(OP_BINARY, b"x", fin=False)
        + client(OP_TEXT, b"y"),
        ["a", Ping(b"p")],
        1002,
        True,
    ),
    ("ping then reserved opcode", client(OP_PING, b"p") + client(0x3), [Ping(b"p")], 1002, False),
    ("pong then RSV3", client(OP_PONG) + client(OP_TEXT, rsv=1), [Pong(b"")], 1002, False),
    ("reserved opcode alone", client(0xB), [], 1002, False),
]


@pytest.mark.parametrize(
    ("name", "wire", "events", "code", "held"), PENDING_CASES, ids=[c[0] for c in PENDING_CASES]
)
def test_fault_after_messages_is_held_back(
    name: str, wire: bytes, events: list[Event], code: int, held: bool
) -> None:
    conn = Connection(max_size=1024)
    assert conn.receive_data(wire) == events
    assert conn.failure is not None and conn.failure.close_code == code
    pongs = [Frame(OP_PONG, e.data) for e in events if isinstance(e, Ping)]
    if held:
        assert conn.pending_failure is conn.failure
        assert conn.state is State.OPEN
        assert not conn.close_transport_now()
        assert frames_sent(conn) == pongs  # no close frame yet
        assert conn.receive_data(client(OP_TEXT, b"later")) == []  # parsing stopped
        conn.send_text("echo")  # the application may still answer
        assert conn.fail_pending()
        pongs = [Frame(OP_TEXT, b"echo")]
    else:
        assert conn.pending_failure is None
        assert not conn.fail_pending()
    assert frames_sent(conn) == [*pongs, close_frame(code, str(conn.failure))]
    assert conn.pending_failure is None
    assert conn.state is State.CLOSING
    assert conn.close_transport_now()


def _held_back() -> Connection:
    conn = Connection()
    assert conn.receive_data(client(OP_TEXT, b"a") + client(0x3)) == ["a"]
    assert conn.pending_failure is not None
    return conn


# (name, action on a connection with a pending failure, frames sent, state after)
RESOLVE_PENDING: list[tuple[str, Callable[[Connection], object], list[Frame], State]] = [
    ("fail_pending", Connection.fail_pending, [close_frame(1002, "invalid opcode 0x3")], State.CLOSING),
    (
        "send_close sends the fault's code",
        lambda c: c.send_close(1000, "bye"),
        [close_frame(1002, "invalid opcode 0x3")],
        State.CLOSING,
    ),
    (
        "send_close without code",
        lambda c: c.send_close(None),
        [close_frame(1002, "invalid opcode 0x3")],
        State.CLOSING,
    ),
    (
        "fail sends the fault's code",
        lambda c: c.fail(1011, "timeout"),
        [close_frame(1002, "invalid opcode 0x3")],
        State.CLOSING,
    ),
    ("eof drops it", Connection.receive_eof, [], State.CLOSED),
]


@pytest.mark.parametrize(
    ("name", "action", "frames", "state"), RESOLVE_PENDING, ids=[c[0] for c in RESOLVE_PENDING]
)
def test_resolve_pending_failure(
    name: str, action: Callable[[Connection], object], frames: list[Frame], state: State
) -> None:
    conn = _held_back()
    failure = conn.failure
    action(conn)
    assert frames_sent(conn) == frames
    assert conn.state is state
    assert conn.pending_failure is None
    assert conn.failure is failure  # still tells why
    assert conn.close_transport_now() is (state is State.CLOSING)
    assert not conn.fail_pending()  # applied once


@pytest.mark.parametrize(
    "action",
    [lambda c: c.send_close(999), lambda c: c.send_close(None, "why"), lambda c: c.fail(1006)],
    ids=["bad code", "reason without code", "fail with bad code"],
)
def test_bad_close_arguments_keep_pending_failure(action: Callable[[Connection], None]) -> None:
    conn = _held_back()
    with pytest.raises(LocalProtocolError):
        action(conn)
    assert conn.pending_failure is not None
    assert conn.data_to_send() == []


def test_fault_after_messages_while_closing_fails_at_once() -> None:
    """Once we sent a close frame nothing can answer the messages: no hold back."""
    conn = Connection()
    conn.send_close(1001)
    conn.data_to_send()
    assert conn.receive_data(client(OP_TEXT, b"a") + client(0x3)) == ["a"]
    assert conn.pending_failure is None
    assert conn.failure is not None
    assert conn.close_transport_now()


# ----------------------------------------------------------------- state

STATE_CASES: list[tuple[str, Callable[[Connection], object], State, State | type[Exception]]] = [
    ("open", Connection.open, State.CONNECTING, State.OPEN),
    ("open twice", Connection.open, State.OPEN, InvalidState),
    ("eof while connecting", Connection.receive_eof, State.CONNECTING, State.CLOSED),
    ("receive while connecting", lambda c: c.receive_data(b"\x81"), State.CONNECTING, InvalidState),
    ("fail while connecting", lambda c: c.fail(1011), State.CONNECTING, InvalidState),
    ("fail when closed", lambda c: c.fail(1011), State.CLOSED, InvalidState),
    ("receive when closed", lambda c: c.receive_data(client(OP_TEXT)), State.CLOSED, State.CLOSED),
    ("eof when closing", Connection.receive_eof, State.CLOSING, State.CLOSED),
    *[
        (f"{name} when {state.name}", method, state, InvalidState)
        for (name, method), state in itertools.product(
            [
                ("send_text", lambda c: c.send_text("x")),
                ("send_binary", lambda c: c.send_binary(b"x")),
                ("send_continuation", lambda c: c.send_continuation(b"x", True)),
                ("send_ping", lambda c: c.send_ping()),
                ("send_pong", lambda c: c.send_pong()),
                ("send_close", lambda c: c.send_close()),
            ],
            [State.CONNECTING, State.CLOSING, State.CLOSED],
        )
    ],
]


@pytest.mark.parametrize(
    ("name", "action", "start", "expected"), STATE_CASES, ids=[c[0] for c in STATE_CASES]
)
def test_state_table(
    name: str,
    action: Callable[[Connection], object],
    start: State,
    expected: State | type[Exception],
) -> None:
    conn = Connection(state=start)
    if isinstance(expected, State):
        action(conn)
        assert conn.state is expected
    else:
        with pytest.raises(expected):
            action(conn)
        assert conn.state is start
    assert conn.data_to_send() == []


def test_transition_table_is_complete_and_closed() -> None:
    """Every state is reachable and CLOSED is only left to itself."""
    targets = set(TRANSITIONS.values())
    assert targets == {State.OPEN, State.CLOSING, State.CLOSED}
    assert all(
        nxt is State.CLOSED for (state, _), nxt in TRANSITIONS.items() if state is State.CLOSED
    )


def test_constructor_errors() -> None:
    ext = PerMessageDeflate(False, False, 15, 15)
    with pytest.raises(LocalProtocolError):
        Connection(extensions=[ext, ext])
    with pytest.raises(LocalProtocolError):
        Connection(max_pending_pongs=0)


# ----------------------------------------------------------------- pings


def test_ping_flood_queues_bounded_pongs() -> None:
    """Only max_pending_pongs pongs wait; the newest ping is always answered."""
    conn = Connection(max_pending_pongs=3)
    wire = b"".join(client(OP_PING, str(i).encode()) for i in range(100))
    events = conn.receive_data(wire)
    assert events == [Ping(str(i).encode()) for i in range(100)]
    assert frames_sent(conn) == [Frame(OP_PONG, b"0"), Frame(OP_PONG, b"1"), Frame(OP_PONG, b"99")]
    # after the write, the budget is fresh again
    conn.receive_data(client(OP_PING, b"a") + client(OP_PING, b"b"))
    assert frames_sent(conn) == [Frame(OP_PONG, b"a"), Frame(OP_PONG, b"b")]


def test_burst_of_pings_all_answered_by_default() -> None:
    """Autobahn 2.10: ten pings in one read, ten pongs in order."""
    conn = Connection()
    conn.receive_data(b"".join(client(OP_PING, b"payload-%d" % i) for i in range(10)))
    assert frames_sent(conn) == [Frame(OP_PONG, b"payload-%d" % i) for i in range(10)]


def test_pong_replacement_keeps_other_frames() -> None:
    conn = Connection(max_pending_pongs=1)
    conn.receive_data(client(OP_PING, b"1"))
    conn.send_text("msg")
    conn.receive_data(client(OP_PING, b"2"))
    assert frames_sent(conn) == [Frame(OP_PONG, b"2"), Frame(OP_TEXT, b"msg")]


def fragmented_text(c: Connection) -> None:
    c.send_text("a", fin=False)
    c.send_continuation(b"b", False)
    c.send_continuation(b"c", True)


def message_after_fragmented(c: Connection) -> None:
    c.send_binary(b"a", fin=False)
    c.send_continuation(b"", True)
    c.send_text("x")


def text_during_fragmented(c: Connection) -> None:
    c.send_text("a", fin=False)
    c.send_text("b")


def binary_during_fragmented(c: Connection) -> None:
    c.send_text("a", fin=False)
    c.send_binary(b"b")


# (call, frames) / exception
SEND_CASES: list[tuple[str, Callable[[Connection], None], list[Frame] | type[Exception]]] = [
    ("text str", lambda c: c.send_text("é"), [Frame(OP_TEXT, "é".encode())]),
    ("text bytes", lambda c: c.send_text(b"raw"), [Frame(OP_TEXT, b"raw")]),
    ("binary memoryview", lambda c: c.send_binary(memoryview(b"mv")), [Frame(OP_BINARY, b"mv")]),
    (
        "fragmented text",
        fragmented_text,
        [Frame(OP_TEXT, b"a", fin=False), Frame(OP_CONT, b"b", fin=False), Frame(OP_CONT, b"c")],
    ),
    (
        "message after a fragmented one",
        message_after_fragmented,
        [Frame(OP_BINARY, b"a", fin=False), Frame(OP_CONT, b""), Frame(OP_TEXT, b"x")],
    ),
    ("ping", lambda c: c.send_ping(b"p" * 125), [Frame(OP_PING, b"p" * 125)]),
    ("pong", lambda c: c.send_pong(), [Frame(OP_PONG, b"")]),
    ("ping too long", lambda c: c.send_ping(b"p" * 126), LocalProtocolError),
    ("pong too long", lambda c: c.send_pong(b"p" * 126), LocalProtocolError),
    ("continuation without start", lambda c: c.send_continuation(b"x", True), LocalProtocolError),
    ("text during fragmented", text_during_fragmented, LocalProtocolError),
    ("binary during fragmented", binary_during_fragmented, LocalProtocolError),
]


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize(("name", "call", "expected"), SEND_CASES, ids=[c[0] for c in SEND_CASES])
def test_send(
    name: str,
    call: Callable[[Connection], None],
    expected: list[Frame] | type[Exception],
    side: Side,
) -> None:
    conn = Connection(side)
    if isinstance(expected, list):
        call(conn)
        assert frames_sent(conn) == expected
    else:
        with pytest.raises(expected):
            call(conn)


def test_client_masks_with_factory() -> None:
    keys = iter([b"\x01\x02\x03\x04", b"\x00\x00\x00\x00"])
    conn = Connection(Side.CLIENT, mask_key_factory=lambda: next(keys))
    conn.send_text("Hello")
    conn.send_ping(b"")
    assert conn.data_to_send() == [
        serialize_frame(OP_TEXT, b"Hello", mask_key=b"\x01\x02\x03\x04"),
        b"\x89\x80\x00\x00\x00\x00",
    ]


def test_client_default_mask_keys_differ() -> None:
    conn = Connection(Side.CLIENT)
    for _ in range(8):
        conn.send_binary(bytes(16))
    keys = {chunk[2:6] for chunk in conn.data_to_send()}
    assert len(keys) > 1


def test_client_rejects_masked_frames() -> None:
    conn = Connection(Side.CLIENT, mask_key_factory=lambda: MASK)
    assert conn.receive_data(server(OP_TEXT, b"ok") + client(OP_TEXT, b"masked")) == ["ok"]
    assert conn.failure is not None
    # "ok" came in the same read: the close waits for fail_pending()
    assert conn.pending_failure is conn.failure
    assert conn.data_to_send() == []
    assert conn.fail_pending()
    assert frames_sent(conn) == [close_frame(1002, "incorrect masking")]
    assert conn.close_transport_now()


# ------------------------------------------------------------ compression


def pair(
    server_ext: PerMessageDeflate | None,
    client_ext: PerMessageDeflate | None,
    max_size: int | None = 2**20,
) -> tuple[Connection, Connection]:
    srv = Connection(Side.SERVER, max_size=max_size, extensions=[server_ext] if server_ext else [])
    cli = Connection(Side.CLIENT, max_size=max_size, extensions=[client_ext] if client_ext else [])
    return srv, cli


def transfer(sender: Connection, receiver: Connection) -> list[Event]:
    return [event for chunk in sender.data_to_send() for event in receiver.receive_data(chunk)]


def test_deflate_round_trip_both_ways() -> None:
    srv, cli = pair(
        PerMessageDeflate(False, False, 15, 15), PerMessageDeflate(False, False, 15, 15)
    )
    for _ in range(2):  # context takeover: the second message refers to the first
        cli.send_text("hello " * 50)
        cli.send_binary(b"a", fin=False)
        cli.send_ping(b"p")
        cli.send_continuation(b"bc", True)
        assert transfer(cli, srv) == ["hello " * 50, Ping(b"p"), b"abc"]
        srv.send_text("échoé" * 40)
        assert transfer(srv, cli) == [Pong(b"p"), "échoé" * 40]
    assert srv.failure is None and cli.failure is None


def test_deflate_frames_have_rsv1_on_first_frame_only() -> None:
    conn = Connection(extensions=[PerMessageDeflate(False, False, 15, 15)])
    conn.send_binary(b"x" * 100, fin=False)
    conn.send_continuation(b"y" * 100, True)
    conn.send_ping(b"")
    first, cont, ping = frames_sent(conn)
    assert (first.opcode, first.rsv1, cont.opcode, cont.rsv1, ping.rsv1) == (
        OP_BINARY,
        True,
        OP_CONT,
        False,
        False,
    )


def test_uncompressed_message_with_deflate_negotiated() -> None:
    """RSV1 clear: the message is not compressed (RFC 7692 section 6)."""
    conn = Connection(extensions=[PerMessageDeflate(False, False, 15, 15)])
    assert conn.receive_data(client(OP_TEXT, b"plain", fin=False) + client(OP_CONT, b"!")) == [
        "plain!"
    ]


@pytest.mark.parametrize("container", [bytes, bytearray, memoryview])
def test_deflate_compresses_any_bytes_like(
    container: Callable[[bytes], bytes | bytearray | memoryview],
) -> None:
    """bytes, bytearray and memoryview payloads give the same compressed frames."""
    frames = []
    for payload in (b"same payload " * 20, container(b"same payload " * 20)):
        conn = Connection(extensions=[PerMessageDeflate(False, True, 15, 15)])
        conn.send_binary(payload)
        conn.send_binary(payload, fin=False)
        conn.send_continuation(payload, True)  # type: ignore[arg-type]
        frames.append(conn.data_to_send())
    assert frames[0] == frames[1]
    assert len(frames[0][0]) < 100  # compressed


class ExpandingExtension:
    """A fake extension whose "decompression" doubles the payload."""

    share_key = ("fake",)

    def decompress(self, data: bytes, fin: bool, max_length: int | None) -> bytes:
        return data * 2

    def compress(self, data: bytes | bytearray | memoryview, fin: bool = True) -> bytes:
        return bytes(data)


def test_max_size_applies_after_decompression() -> None:
    """The connection checks the size itself even if the extension does not."""
    conn = Connection(max_size=10, extensions=[ExpandingExtension()])
    assert conn.receive_data(client(OP_BINARY, b"12345", rsv=4)) == [b"1234512345"]
    assert conn.receive_data(client(OP_BINARY, b"123456", rsv=4)) == []
    assert isinstance(conn.failure, PayloadTooBig)


def test_compressed_fragmented_message_unbounded() -> None:
    conn = Connection(max_size=None, extensions=[ExpandingExtension()])
    wire = client(OP_TEXT, b"ab", fin=False, rsv=4) + client(OP_CONT, b"c")
    assert conn.receive_data(wire) == ["ababcc"]


# --------------------------------------------------------------- broadcast


def test_encode_message() -> None:
    plain = Connection()
    assert plain.encode_message(OP_TEXT, "é") == serialize_frame(OP_TEXT, "é".encode())
    assert plain.encode_message(OP_BINARY, b"b") == b"\x82\x01b"
    with pytest.raises(LocalProtocolError):
        plain.encode_message(OP_PING, b"")
    # compressed: the same bytes send_text would produce on a twin connection
    a = Connection(extensions=[PerMessageDeflate(False, True, 15, 15)])
    b = Connection(extensions=[PerMessageDeflate(False, True, 15, 15)])
    b.send_text("hello hello hello")
    assert a.encode_message(OP_TEXT, "hello hello hello") == b.data_to_send()[0]
    # a client masks: the peer reads the message back
    cli = Connection(Side.CLIENT, mask_key_factory=lambda: MASK)
    assert Connection().receive_data(cli.encode_message(OP_BINARY, b"m")) == [b"m"]


def test_queue_frame() -> None:
    conn = Connection()
    conn.send_text("first")
    frame = conn.encode_message(OP_TEXT, "shared")
    conn.queue_frame(frame)
    out = conn.data_to_send()
    assert out == [serialize_frame(OP_TEXT, b"first"), serialize_frame(OP_TEXT, b"shared")]
    assert out[1] is frame  # queued as is, after what was there
    conn.send_text("frag", fin=False)
    with pytest.raises(LocalProtocolError):
        conn.queue_frame(frame)  # not inside a fragmented message
    closed = Connection()
    closed.send_close(1000)
    with pytest.raises(InvalidState):
        closed.queue_frame(frame)


def test_frame_share_key() -> None:
    def ext(no_takeover: bool) -> PerMessageDeflate:
        return PerMessageDeflate(False, no_takeover, 15, 15)

    assert Connection().frame_share_key is None
    shared_a = Connection(extensions=[ext(True)]).frame_share_key
    shared_b = Connection(extensions=[ext(True)]).frame_share_key
    assert shared_a is not None and shared_a == shared_b
    own_a = Connection(extensions=[ext(False)]).frame_share_key
    own_b = Connection(extensions=[ext(False)]).frame_share_key
    assert own_a is not None and own_a != own_b and own_a != shared_a
    assert Connection(Side.CLIENT).frame_share_key != Connection(Side.CLIENT).frame_share_key


# ------------------------------------------------------------- properties

messages = st.lists(
    st.tuples(
        st.text(max_size=200) | st.binary(max_size=200),
        st.lists(st.integers(min_value=0, max_value=300), max_size=4),  # fragment cut points
        st.booleans(),  # a ping inside the message
    ),
    min_size=1,
    max_size=6,
)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=100, deadline=None)
@given(messages, st.lists(st.integers(min_value=0), max_size=16), st.booleans())
def test_messages_round_trip_any_split(
    msgs: list[tuple[str | bytes, list[int], bool]], splits: list[int], compress: bool
) -> None:
    """Messages sent fragmented by a client arrive whole, however the stream is cut."""
    if compress:
        srv, cli = pair(
            PerMessageDeflate(False, False, 15, 15), PerMessageDeflate(False, False, 15, 15), None
        )
    else:
        srv, cli = pair(None, None, None)
    expected: list[Event] = []
    for payload, cuts, ping in msgs:
        data = payload.encode() if isinstance(payload, str) else payload
        parts = _cut(data, cuts)
        for i, part in enumerate(parts):
            fin = i == len(parts) - 1
            if i == 0:
                (cli.send_text if isinstance(payload, str) else cli.send_binary)(part, fin=fin)
            else:
                cli.send_continuation(part, fin)
            if ping and i == 0:
                cli.send_ping(b"in")
                if fin:  # a single frame: the ping follows the message
                    expected.append(payload)
                expected.append(Ping(b"in"))
        if not (ping and len(parts) == 1):
            expected.append(payload)
    stream = b"".join(cli.data_to_send())
    points = sorted({s % (len(stream) + 1) for s in splits})
    got: list[Event] = []
    for a, b in zip([0, *points], [*points, len(stream)], strict=True):
        got += srv.receive_data(stream[a:b])
    assert got == expected
    assert srv.failure is None


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
@pytest.mark.parametrize(
    "view",
    [
        memoryview(bytes(range(8))).cast("I"),  # len() counts 2 items of 4 bytes
        memoryview(bytes(range(8))).cast("B", (2, 4)),  # 2-D
        memoryview(bytes(range(16)))[::2],  # not contiguous
        memoryview(bytes(range(8))),  # already flat: sent as it is
    ],
    ids=["items of 4 bytes", "2-D", "strided", "flat"],
)
def test_memoryview_payloads_are_framed_by_their_size_in_bytes(side: Side, view: memoryview) -> None:
    conn = Connection(side)
    conn.send_binary(view)
    conn.send_binary(view, fin=False)
    conn.send_continuation(view, fin=True)
    payload = view.tobytes()
    assert [(f.opcode, f.payload, f.fin) for f in frames_sent(conn)] == [
        (OP_BINARY, payload, True),
        (OP_BINARY, payload, False),
        (OP_CONT, payload, True),
    ]
