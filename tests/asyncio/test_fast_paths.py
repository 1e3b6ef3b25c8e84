"""The C fast paths of ServerConnection (data_received, send, _flush, recv,
__anext__) behave like the Python methods they stand in for.

Every test runs twice through the ``path`` fixture: ``"c"`` with the C
methods that ``_install_fast_paths()`` bound, ``"python"`` with the Python
originals (``_data_received_py``...) put back on the class. Reads are fed
to ``connection.data_received`` directly, so that their boundaries are
exactly the ones each case lists; the answers travel over a real socket to a
:class:`RawClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import shardws
from shardws import speedups
from shardws.asyncio import registry
from shardws.asyncio.connection import ServerConnection
from shardws.asyncio.server import FAST_METHODS, Server
from shardws.exceptions import ConnectionClosed
from shardws.protocol.connection import Pong
from shardws.protocol.frames import Close
from tests.protocol.wire import MASK, raw, server

from .conftest import Accepted, StartServer, port_of, wait_until
from .rawclient import RawClient

C_FAST_PATHS = speedups.connection_fast_paths is not None
# The pure build has only the Python methods: its tests run on them alone.
PATHS = ["c", "python"] if C_FAST_PATHS else ["python"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test on the C fast paths, then on the Python methods alone."""
    if request.param == "c":
        for name, _ in FAST_METHODS:
            assert type(ServerConnection.__dict__[name]).__name__ == "method_descriptor", name
    else:
        for name, python_name in FAST_METHODS:
            original = ServerConnection.__dict__.get(python_name)
            if original is not None:  # absent on the pure build: already Python
                monkeypatch.setattr(ServerConnection, name, original)
            assert type(ServerConnection.__dict__[name]).__name__ == "function", name
    yield request.param


# ----------------------------------------------------------------- helpers


def frame(opcode: int, payload: bytes | str, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client frame (masked with wire.MASK unless told otherwise)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return raw((0x80 if fin else 0) | opcode, data, mask=MASK if masked else None)


def text(payload: bytes | str, **kw: Any) -> bytes:
    return frame(0x1, payload, **kw)


def binary(payload: bytes, **kw: Any) -> bytes:
    return frame(0x2, payload, **kw)


def cont(payload: bytes | str, **kw: Any) -> bytes:
    return frame(0x0, payload, **kw)


def ping(payload: bytes) -> bytes:
    return frame(0x9, payload)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """What the server writes for one whole message (unmasked, minimal length)."""
    return server(opcode, payload)


OpenOne = Callable[..., Awaitable[tuple[RawClient, ServerConnection]]]


@pytest.fixture
async def open_one(start_server: StartServer) -> AsyncIterator[OpenOne]:
    """``await open_one(**options)``: a RawClient and the server's side of its connection.

    The clients are closed after the test, before the servers (even when an
    assert failed half-way).
    """
    clients: list[RawClient] = []

    async def open_(**options: Any) -> tuple[RawClient, ServerConnection]:
        acc = Accepted()
        server = await start_server(acc.handler, compression=None, **options)
        client = await RawClient.connect(port_of(server))
        clients.append(client)
        assert client.status == 101
        return client, await acc.next()

    yield open_
    for client in clients:
        await client.aclose()


async def close_both(client: RawClient, connection: ServerConnection) -> None:
    """connection.close() while the client reads and answers the close frame."""
    reading = asyncio.create_task(client.until_eof())
    await asyncio.wait_for(connection.close(), 5)
    await reading


async def recv_all(connection: ServerConnection, count: int) -> list[Any]:
    return [await asyncio.wait_for(connection.recv(), 5) for _ in range(count)]


async def result_of(awaitable: Awaitable[Any]) -> Any:
    """What awaiting ``awaitable`` gives (send() gives None)."""
    return await awaitable


async def fails_after(
    client: RawClient, connection: ServerConnection, expected: list[Any], code: int
) -> None:
    """recv() gives ``expected``, then raises ConnectionClosed; the client gets close ``code``."""
    assert await recv_all(connection, len(expected)) == expected
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(connection.recv(), 5)
    assert (await close_frame(client)).code == code


async def close_frame(client: RawClient) -> Close:
    """The server's close frame, past any message or pong before it."""
    while True:
        event = await client.next_event()
        assert event is not None, "EOF before the close frame"
        if isinstance(event, Close):
            return event


# ------------------------------------------------ 1. reads split anywhere

T1 = text("hello world")
T2 = text("€uro ünïcode")
B1 = binary(b"\x00\xff" * 10)
BIG = "x" * 70000  # past the 64 KiB length form and the C decoder's stack buffer

# (name, reads fed to data_received in turn, messages expected, pongs expected)
READS: list[tuple[str, list[bytes], list[Any], list[bytes]]] = [
    ("one message, one read", [T1], ["hello world"], []),
    ("split in the payload", [T1[:8], T1[8:]], ["hello world"], []),
    ("split in the header", [T1[:1], T1[1:]], ["hello world"], []),
    ("split in the mask", [T1[:4], T1[4:]], ["hello world"], []),
    ("split in a UTF-8 sequence", [T2[:7], T2[7:]], ["€uro ünïcode"], []),
    ("one byte per read", [T1[i : i + 1] for i in range(len(T1))], ["hello world"], []),
    (
        "several, then a partial one",
        [T1 + B1 + T2[:5], T2[5:]],
        ["hello world", b"\x00\xff" * 10, "€uro ünïcode"],
        [],
    ),
    (
        "several, then a partial one, then more whole ones",
        [T1 + T2[:3], T2[3:] + B1, T1],
        ["hello world", "€uro ünïcode", b"\x00\xff" * 10, "hello world"],
        [],
    ),
    ("a ping between two text frames", [text("a") + ping(b"p1") + text("b")], ["a", "b"], [b"p1"]),
    ("a ping first", [ping(b"p2") + text("a")], ["a"], [b"p2"]),
    ("a ping last", [text("a") + ping(b"p3")], ["a"], [b"p3"]),
    ("a ping alone, then a message", [ping(b"p4"), text("a")], ["a"], [b"p4"]),
    (
        "a fragmented message in one read",
        [text("hel", fin=False) + cont("lo")],
        ["hello"],
        [],
    ),
    (
        "a fragmented message over three reads, then whole ones",
        [text("he", fin=False), cont("l", fin=False), cont("lo") + text("x") + binary(b"y")],
        ["hello", "x", b"y"],
        [],
    ),
    (
        "a whole message, then a fragment, then the rest",
        [text("a") + binary(b"b", fin=False), cont(b"c"), text("d")],
        ["a", b"bc", "d"],
        [],
    ),
    (
        "a ping inside a fragmented message",
        [text("ab", fin=False) + ping(b"p5") + cont("cd"), text("e")],
        ["abcd", "e"],
        [b"p5"],
    ),
    (
        "a UTF-8 sequence split across fragments",
        [text("€".encode()[:2], fin=False), cont("€".encode()[2:])],
        ["€"],
        [],
    ),
    ("empty messages", [text("") + binary(b"") + text("")], ["", b"", ""], []),
    (
        "20 messages in one read",
        [b"".join(text(str(i)) if i % 2 else binary(bytes([i])) for i in range(20))],
        [str(i) if i % 2 else bytes([i]) for i in range(20)],
        [],
    ),
    ("a large text message", [text(BIG)], [BIG], []),
    ("a large text message, split", [text(BIG)[:30000], text(BIG)[30000:]], [BIG], []),
    (
        "non-minimal length encodings",
        [
            bytes((0x81, 0x80 | 126, 0, 1))
            + MASK
            + speedups.py_apply_mask(b"a", MASK)
            + bytes((0x82, 0x80 | 127))
            + (2).to_bytes(8, "big")
            + MASK
            + speedups.py_apply_mask(b"bc", MASK)
        ],
        ["a", b"bc"],
        [],
    ),
    (
        "125, 126 and 65536 bytes",
        [binary(b"a" * 125) + text("b" * 126) + binary(b"c" * 65536)],
        [b"a" * 125, "b" * 126, b"c" * 65536],
        [],
    ),
]


@pytest.mark.parametrize(
    ("reads", "expected", "pongs"),
    [case[1:] for case in READS],
    ids=[case[0] for case in READS],
)
async def test_reads_split_anywhere(
    path: str,
    open_one: OpenOne,
    reads: list[bytes],
    expected: list[Any],
    pongs: list[bytes],
) -> None:
    client, connection = await open_one()
    for data in reads:
        connection.data_received(data)
    assert await recv_all(connection, len(expected)) == expected
    assert len(connection._messages) == 0
    assert connection._queued_bytes == 0
    # The parser is in step: one more read is one more message.
    connection.data_received(text("after") + binary(b"after"))
    assert await recv_all(connection, 2) == ["after", b"after"]
    assert connection._queued_bytes == 0
    await connection.send("end")
    seen = []
    while (event := await client.next_event()) != "end":
        seen.append(event)
    assert seen == [Pong(data) for data in pongs]
    assert connection.state is shardws.State.OPEN


async def test_reads_over_a_socket(path: str, open_one: OpenOne) -> None:
    """The same bytes written by a real client, in whatever reads the kernel makes."""
    client, connection = await open_one()
    data = b"".join(b"".join(reads) for _, reads, _, _ in READS)
    expected = [message for _, _, messages, _ in READS for message in messages]
    client.writer.write(data)
    assert await recv_all(connection, len(expected)) == expected


# ------------------------------------------------ 2. protocol errors

INVALID_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"

# (name, serve() options, one read, messages delivered before the close, close code)
ERRORS: list[tuple[str, dict[str, Any], bytes, list[Any], int]] = [
    (
        "invalid UTF-8 in the 2nd of 3 text frames",
        {},
        text("one") + text(INVALID_UTF8) + text("three"),
        ["one"],
        1007,
    ),
    ("invalid UTF-8 in the 1st frame", {}, text(b"\xff") + text("two"), [], 1007),
    ("a lone continuation byte", {}, text("ok") + text(b"a\x80b"), ["ok"], 1007),
    ("an encoded surrogate", {}, text(b"\xed\xa0\x80"), [], 1007),
    ("a truncated UTF-8 sequence", {}, text("a") + text(b"\xe2\x82"), ["a"], 1007),
    (
        "a frame over max_size after one at max_size",
        {"max_size": 100},
        binary(b"a" * 100) + binary(b"b" * 101),
        [b"a" * 100],
        1009,
    ),
    ("a text frame over max_size", {"max_size": 100}, text("a" * 101), [], 1009),
    (
        "a frame over max_size between two",
        {"max_size": 100},
        text("a") + text("b" * 200) + text("c"),
        ["a"],
        1009,
    ),
    ("an unmasked frame", {}, text("bad", masked=False), [], 1002),
    (
        "an unmasked frame after a masked one",
        {},
        text("ok") + binary(b"bad", masked=False),
        ["ok"],
        1002,
    ),
    (
        "invalid UTF-8 in a large text frame",
        {},
        text("ok") + text(b"a" * 1000 + b"\xc0\xaf" + b"b" * 1000),
        ["ok"],
        1007,
    ),
    (
        "a 64-bit length with its top bit set",
        {},
        text("ok") + bytes((0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1)) + MASK + b"x",
        ["ok"],
        1002,
    ),
    ("a reserved bit", {}, bytes((0xC1, 0x80)) + MASK, [], 1002),
    ("a reserved opcode", {}, text("ok") + frame(0x3, b"x"), ["ok"], 1002),
    ("a continuation without a message", {}, text("ok") + cont("x"), ["ok"], 1002),
]


@pytest.mark.parametrize(
    ("options", "data", "expected", "code"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
async def test_protocol_errors(
    path: str,
    open_one: OpenOne,
    options: dict[str, Any],
    data: bytes,
    expected: list[Any],
    code: int,
) -> None:
    client, connection = await open_one(**options)
    connection.data_received(data)
    await fails_after(client, connection, expected, code)
    await asyncio.wait_for(connection.wait_closed(), 5)


async def test_invalid_utf8_over_a_socket(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    client.writer.write(text("one") + text(INVALID_UTF8) + text("three"))
    await fails_after(client, connection, ["one"], 1007)


async def test_a_read_after_a_held_back_failure_is_ignored(path: str, open_one: OpenOne) -> None:
    """A read already on its way after the fault (reading pauses, but not in time)."""
    client, connection = await open_one()
    connection.data_received(text("ok") + text(b"\xff"))
    connection.data_received(text("late") + binary(b"late"))
    await fails_after(client, connection, ["ok"], 1007)


async def test_a_read_wakes_a_waiting_recv(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    for data, expected in [(text("a"), "a"), (binary(b"b") + text("c"), b"b")]:
        receiving = asyncio.create_task(connection.recv())
        await wait_until(lambda: connection._recv_waiter is not None)
        connection.data_received(data)
        assert await asyncio.wait_for(receiving, 5) == expected
    assert await recv_all(connection, 1) == ["c"]


async def test_corked_answers_go_out_with_a_read(path: str, open_one: OpenOne) -> None:
    """A send() corked before a read that holds a ping: the message, then the pong."""
    client, connection = await open_one()
    await connection.send("first")
    connection.data_received(ping(b"p") + text("m"))
    connection.data_received(text("n"))
    assert [await client.next_event() for _ in range(2)] == ["first", Pong(b"p")]
    assert await recv_all(connection, 2) == ["m", "n"]


async def test_max_size_none(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one(max_size=None)
    connection.data_received(binary(b"b" * 2**21) + text("t" * 70000))
    assert await recv_all(connection, 2) == [b"b" * 2**21, "t" * 70000]


# ------------------------------------------------ 3. max_queue / read_limit


@pytest.mark.parametrize(
    ("options", "messages"),
    [
        ({"max_queue": 2}, ["m0", b"m1", "m2", b"m3", "m4"]),
        ({"max_queue": 2}, ["a", "b"]),  # exactly the high-water mark
        ({"max_queue": None, "read_limit": 20}, ["x" * 8, b"y" * 8, "z" * 8]),
        ({"max_queue": None, "read_limit": 20}, ["é" * 21]),  # characters, not bytes
    ],
)
async def test_one_read_past_the_queue_limits(
    path: str, open_one: OpenOne, options: dict[str, Any], messages: list[Any]
) -> None:
    client, connection = await open_one(**options)
    transport = connection._transport
    assert transport.is_reading()
    connection.data_received(
        b"".join(text(m) if isinstance(m, str) else binary(m) for m in messages)
    )
    assert list(connection._messages) == messages  # none dropped
    assert not transport.is_reading()
    assert await recv_all(connection, len(messages)) == messages
    await wait_until(transport.is_reading)
    connection.data_received(text("more"))
    assert await recv_all(connection, 1) == ["more"]


async def test_below_the_queue_limits_reading_goes_on(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one(max_queue=3, read_limit=100)
    connection.data_received(text("a") + text("b"))
    assert connection._transport.is_reading()
    assert await recv_all(connection, 2) == ["a", "b"]


async def test_max_queue_over_a_socket(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one(max_queue=2)
    messages = [f"m{i}" for i in range(5)]
    client.writer.write(b"".join(text(m) for m in messages))
    await wait_until(lambda: not connection._transport.is_reading())
    assert await recv_all(connection, 5) == messages
    await wait_until(connection._transport.is_reading)


# ------------------------------------------------ 4. send()

SIZES = [0, 1, 125, 126, 4095, 4096, 65535, 65536, 70000]

# (name, args, kwargs, opcode on the wire, payload on the wire)
SENDS: list[tuple[str, tuple[Any, ...], dict[str, Any], int, bytes]] = [
    *[(f"ascii str {n}", ("a" * n,), {}, 0x1, b"a" * n) for n in SIZES],
    *[(f"bytes {n}", (b"\x00" * n,), {}, 0x2, b"\x00" * n) for n in SIZES],
    ("non-ASCII str", ("héllo € 𝄞",), {}, 0x1, "héllo € 𝄞".encode()),
    ("non-ASCII str 9000 bytes", ("€" * 3000,), {}, 0x1, "€".encode() * 3000),
    ("non-ASCII str 70000+ bytes", ("é" * 35001,), {}, 0x1, "é".encode() * 35001),
    ("bytes, text=True", (b"abc", True), {}, 0x1, b"abc"),
    ("bytes, keyword text=True", (b"abc",), {"text": True}, 0x1, b"abc"),
    ("big bytes, text=True", (b"t" * 5000,), {"text": True}, 0x1, b"t" * 5000),
    ("str, text=False", ("abc", False), {}, 0x2, b"abc"),
    ("str, keyword text=False", ("abc",), {"text": False}, 0x2, b"abc"),
    ("non-ASCII str, text=False", ("€",), {"text": False}, 0x2, "€".encode()),
    ("str, text=True", ("abc",), {"text": True}, 0x1, b"abc"),
    ("str, text=None", ("abc",), {"text": None}, 0x1, b"abc"),
    ("bytes, text=False", (b"abc",), {"text": False}, 0x2, b"abc"),
    ("bytes, text=None", (b"abc", None), {}, 0x2, b"abc"),
    ("bytearray", (bytearray(b"ba" * 100),), {}, 0x2, b"ba" * 100),
    ("big bytearray", (bytearray(b"z" * 70000),), {}, 0x2, b"z" * 70000),
    ("memoryview", (memoryview(b"memory"),), {}, 0x2, b"memory"),
    ("memoryview slice", (memoryview(b"0123456789")[2:5],), {}, 0x2, b"234"),
    ("memoryview of ints", (memoryview(bytearray(8)).cast("I"),), {}, 0x2, b"\x00" * 8),
    ("bytearray, text=True", (bytearray(b"ab"),), {"text": True}, 0x1, b"ab"),
    ("str subclass", (type("S", (str,), {})("sub"),), {}, 0x1, b"sub"),
    ("bytes subclass", (type("B", (bytes,), {})(b"sub"),), {}, 0x2, b"sub"),
    ("keyword message=", (), {"message": "kw"}, 0x1, b"kw"),
    ("keywords message= and text=", (), {"message": "kw", "text": False}, 0x2, b"kw"),
    ("str, text=1", ("abc", 1), {}, 0x1, b"abc"),
    ("bytes, text=0", (b"abc", 0), {}, 0x2, b"abc"),
    ("a list of str (fragments)", (["ab", "cd"],), {}, 0x1, b"abcd"),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "opcode", "payload"),
    [case[1:] for case in SENDS],
    ids=[case[0] for case in SENDS],
)
async def test_send_byte_exact(
    path: str,
    open_one: OpenOne,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    opcode: int,
    payload: bytes,
) -> None:
    client, connection = await open_one()
    await connection.send(*args, **kwargs)
    await connection.send("end")
    if args and isinstance(args[0], list):  # fragmented: check the message, not the frames
        expected = payload.decode() if opcode == 0x1 else payload
        assert await client.next_event() == expected
    else:
        expected_wire = server_frame(opcode, payload) + server_frame(0x1, b"end")
        wire = await asyncio.wait_for(client.reader.readexactly(len(expected_wire)), 5)
        assert wire == expected_wire


async def test_send_corked_in_one_iteration(path: str, open_one: OpenOne) -> None:
    """Many sends in one loop iteration, past the cork limit too: all arrive, in order."""
    client, connection = await open_one()
    messages: list[Any] = [
        "a" if i % 3 == 0 else b"b" * i if i % 3 == 1 else "€" * (i * 100) for i in range(60)
    ]
    for message in messages:
        await connection.send(message)
    assert [await client.next_event() for _ in messages] == messages


async def test_send_lone_surrogate(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    sent = connection.send("a\ud800b")  # raises when awaited, not when called
    with pytest.raises(UnicodeEncodeError):
        await sent
    with pytest.raises(UnicodeEncodeError):
        await connection.send("\udfff", text=True)
    await connection.send("still open")
    assert await client.next_event() == "still open"


@pytest.mark.parametrize("message", ["x", "€", b"x", bytearray(b"x"), memoryview(b"x"), ["x", "y"]])
async def test_send_on_a_closed_connection(path: str, open_one: OpenOne, message: Any) -> None:
    client, connection = await open_one()
    await close_both(client, connection)
    sent = connection.send(message)  # raises when awaited, not when called
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(sent, 5)


async def test_send_while_closing(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    connection.data_received(frame(0x8, (1000).to_bytes(2, "big")))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(connection.send("late"), 5)
    assert (await close_frame(client)).code == 1000


async def test_send_bad_types(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    for message in [42, None, {"a": 1}, 1.5]:
        sent = connection.send(message)
        with pytest.raises(TypeError):
            await sent
    with pytest.raises(TypeError):
        await connection.send()  # type: ignore[call-arg]
    await connection.send("ok")
    assert await client.next_event() == "ok"


async def test_send_as_task_gather_wait_for(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    sent = connection.send("0")
    assert asyncio.iscoroutine(sent)
    await sent
    await connection.send("1")
    task = asyncio.create_task(connection.send("2"))
    await asyncio.gather(connection.send("3"), connection.send(b"4"))
    assert await result_of(task) is None
    assert await result_of(asyncio.wait_for(connection.send("5"), 1)) is None
    done, _ = await asyncio.wait([asyncio.ensure_future(connection.send("6"))], timeout=1)
    assert len(done) == 1
    assert await result_of(asyncio.shield(connection.send("7"))) is None
    events = [await client.next_event() for _ in range(8)]
    assert events == ["0", "1", "2", "3", b"4", "5", "6", "7"]


async def test_what_send_returns_behaves_like_a_coroutine(path: str, open_one: OpenOne) -> None:
    """Awaited, it returns None; the C one is completed already (awaiting it
    again is harmless), the Python one is a coroutine (awaited once)."""
    client, connection = await open_one()
    sent = connection.send("x")
    assert asyncio.iscoroutine(sent)
    assert await result_of(sent) is None
    if path == "c":
        assert await result_of(sent) is None
        with pytest.raises(StopIteration):
            sent.send(None)
        with pytest.raises(ValueError, match="boom"):
            sent.throw(ValueError("boom"))
        sent.close()
    else:
        with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
            await result_of(sent)
    assert await client.next_event() == "x"


async def test_send_while_writing_is_paused(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    connection.pause_writing()
    task = asyncio.create_task(connection.send("waits"))
    for _ in range(5):  # loop turns, not time
        await asyncio.sleep(0)
    assert not task.done()
    connection.resume_writing()
    await asyncio.wait_for(task, 5)
    assert await client.next_event() == "waits"


# ------------------------------------------------ 5. registry.stats


async def test_stats_advance_alike(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    stats = registry.stats
    before_in, before_out = stats.messages_in, stats.messages_out
    connection.data_received(text("a") + binary(b"b") + text("c"))  # 3, whole
    connection.data_received(text("d")[:3])
    connection.data_received(text("d")[3:] + ping(b"p"))  # 1
    connection.data_received(text("e", fin=False) + cont("f"))  # 1
    assert await recv_all(connection, 5) == ["a", b"b", "c", "d", "ef"]
    assert stats.messages_in - before_in == 5
    for message in ["x", b"y", bytearray(b"z"), memoryview(b"w"), ["p", "q"]]:
        await connection.send(message)  # 5
    await connection.send("t" * 70000)  # 1
    with pytest.raises(UnicodeEncodeError):
        await connection.send("\ud800")  # not sent
    with pytest.raises(TypeError):
        await connection.send(42)  # not sent
    assert stats.messages_out - before_out == 6
    await close_both(client, connection)
    with pytest.raises(ConnectionClosed):
        await connection.send("closed")  # not sent
    assert stats.messages_out - before_out == 6
    assert stats.messages_in - before_in == 5


# ------------------------------------------------ 6. subclasses


class Plain(ServerConnection):
    """A subclass that changes nothing (its instances get a __dict__ anyway)."""


class Shadowing(ServerConnection):
    """A subclass that redefines slots the C code reads at fixed offsets."""

    __slots__ = ("_corked", "_messages", "_protocol")


class Overriding(ServerConnection):
    """A subclass that wraps send() and data_received() in Python."""

    def data_received(self, data: bytes) -> None:
        self.reads = getattr(self, "reads", 0) + 1
        super().data_received(data)

    def send(self, message: Any, text: bool | None = None) -> Any:
        return super().send(message, text)


@pytest.mark.parametrize("cls", [Plain, Shadowing, Overriding])
async def test_subclass(
    path: str, open_one: OpenOne, monkeypatch: pytest.MonkeyPatch, cls: type
) -> None:
    # serve() takes no connection class: the server's factory is patched.
    monkeypatch.setattr(
        Server, "_protocol_factory", lambda self: cls(self, self._options, self.loop)
    )
    client, connection = await open_one(max_queue=2)
    assert type(connection) is cls
    connection.data_received(text("a") + binary(b"b") + text("c"))
    assert not connection._transport.is_reading()
    assert await recv_all(connection, 3) == ["a", b"b", "c"]
    client.writer.write(text("d") + ping(b"p"))
    assert await recv_all(connection, 1) == ["d"]
    await connection.send("x")
    await connection.send(b"y" * 5000)
    await connection.send(bytearray(b"z"))
    assert [await client.next_event() for _ in range(4)] == [Pong(b"p"), "x", b"y" * 5000, b"z"]
    connection.data_received(text(b"\xff"))
    assert (await close_frame(client)).code == 1007
    if cls is Overriding:
        assert connection.reads >= 2  # type: ignore[attr-defined]


# ------------------------------------------------------------------ recv()


async def test_recv_timed_out_leaves_the_connection_usable(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(connection.recv(), 0.01)
    assert connection._recv_waiter is None  # the cancelled wait cleaned up
    client.send_text("after")
    assert await asyncio.wait_for(connection.recv(), 5) == "after"


async def test_recv_cancelled_then_message_goes_to_the_next_recv(
    path: str, open_one: OpenOne
) -> None:
    client, connection = await open_one()
    waiting = asyncio.create_task(connection.recv())
    await wait_until(lambda: connection._recv_waiter is not None)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert connection._recv_waiter is None
    client.send_binary(b"kept")
    assert await connection.recv() == b"kept"


async def test_second_recv_while_one_waits_raises_concurrency_error(
    path: str, open_one: OpenOne
) -> None:
    client, connection = await open_one()
    first = asyncio.create_task(connection.recv())
    await wait_until(lambda: connection._recv_waiter is not None)
    with pytest.raises(shardws.ConcurrencyError):
        await connection.recv()
    client.send_text("one")
    assert await first == "one"


async def test_recv_not_awaited_takes_nothing(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    client.send_text("a")
    client.send_text("b")
    await wait_until(lambda: len(connection._messages) == 2)
    connection.recv().close()  # made, never awaited
    assert [await connection.recv(), await connection.recv()] == ["a", "b"]


@pytest.mark.parametrize(
    ("sent", "decode", "expected"),
    [(b"bin", True, "bin"), ("txt", False, b"txt"), (b"bin", None, b"bin"), ("txt", None, "txt")],
)
async def test_recv_decode(
    path: str, open_one: OpenOne, sent: str | bytes, decode: bool | None, expected: str | bytes
) -> None:
    client, connection = await open_one()
    if isinstance(sent, str):
        client.send_text(sent)
    else:
        client.send_binary(sent)
    assert await connection.recv(decode=decode) == expected


async def test_recv_and_iteration_end_with_the_connection(path: str, open_one: OpenOne) -> None:
    client, connection = await open_one()
    client.send_text("last")
    client.close(1000)
    received = [message async for message in connection]  # ends without raising on 1000
    assert received == ["last"]
    with pytest.raises(shardws.ConnectionClosedOK):
        await connection.recv()
