"""serve(), unix_serve() and Server: lifecycle, handshake options, timeouts,
keepalive, flow control, logging; core cases on both the default loop and uvloop."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosedError as ClientClosedError
from websockets.exceptions import InvalidStatus

import shardws
from shardws.asyncio import registry
from shardws.protocol.connection import Connection as ShardwsConnection
from shardws.protocol.connection import Ping, Side, State
from shardws.protocol.frames import Close

from .conftest import Accepted, port_of, uri, wait_until
from .rawclient import RawClient


async def echo(connection: shardws.ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes; return the answer: until EOF, or the head of a 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if head.startswith(b"HTTP/1.1 101 "):
            return head
        return head + await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def handshake_request(*extra: str, path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------ both event loops


@pytest.mark.both_loops
async def test_echo_on_both_loops(start_server: Any) -> None:
    server = await start_server(echo)
    async with connect(uri(server)) as client:
        for message in ["text", b"\x00binary", "x" * 200_000]:
            await client.send(message)
            assert await client.recv() == message


@pytest.mark.both_loops
@pytest.mark.parametrize("code", [1000, 1001, 1012, 4000])
async def test_server_close_code_on_both_loops(start_server: Any, code: int) -> None:
    acc = Accepted()
    server = await start_server(acc.handler)
    async with connect(uri(server)) as client:
        connection = await acc.next()
        await connection.close(code, "bye")
        await client.wait_closed()
        assert (client.close_code, client.close_reason) == (code, "bye")
    assert connection.closed


@pytest.mark.both_loops
async def test_max_queue_pauses_reading_on_both_loops(start_server: Any) -> None:
    """Two unread messages (max_queue=2) pause reading: a ping sent after them
    is answered only once the handler has drained the queue."""
    acc = Accepted()
    server = await start_server(acc.handler, max_queue=2)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    client.send_text("m1")
    client.ping(b"sync")
    assert await client.next_event() == shardws.protocol.connection.Pong(b"sync")
    client.send_text("m2")  # the queue is full: the server stops reading
    await wait_until(lambda: not connection._transport.is_reading())
    client.ping(b"after")
    client.send_text("m3")
    assert len(connection._messages) == 2
    assert await connection.recv() == "m1"
    assert not connection._transport.is_reading()  # still above the low-water mark (0)
    assert await connection.recv() == "m2"
    assert await client.next_event() == shardws.protocol.connection.Pong(b"after")
    assert await connection.recv() == "m3"
    await client.aclose()


# ------------------------------------------------------------ lifecycle


async def test_serve_is_awaitable_and_a_context_manager() -> None:
    server = await shardws.serve(echo, "127.0.0.1", 0)
    assert isinstance(server, shardws.Server) and server.is_serving()
    server.close()
    await asyncio.wait_for(server.wait_closed(), 5)
    assert not server.is_serving()

    async with shardws.serve(echo, "127.0.0.1", 0) as server:
        assert server.is_serving()
        assert server.sockets and server.sockets[0].getsockname()[1] > 0
        async with connect(uri(server)) as client:
            await client.send("hi")
            assert await client.recv() == "hi"
    assert not server.is_serving()


async def test_server_context_manager_and_start_serving() -> None:
    server = await shardws.serve(echo, "127.0.0.1", 0, start_serving=False)
    assert not server.is_serving()
    await server.start_serving()
    async with server:
        assert server.is_serving()
    assert not server.is_serving()


@pytest.mark.parametrize(
    ("close_args", "expected"),
    [
        pytest.param({}, (1001, ""), id="default-1001"),
        pytest.param({"code": 1012, "reason": "restart"}, (1012, "restart"), id="rolling-restart-1012"),
    ],
)
async def test_server_close_closes_connections(close_args: dict[str, Any], expected: tuple[int, str]) -> None:
    acc = Accepted()
    server = await shardws.serve(acc.handler, "127.0.0.1", 0)
    async with connect(uri(server)) as one, connect(uri(server)) as two:
        await acc.next()
        await acc.next()
        assert len(server.websockets) == 2
        server.close(**close_args)
        await asyncio.wait_for(server.wait_closed(), 5)
        for client in (one, two):
            await client.wait_closed()
            assert (client.close_code, client.close_reason) == expected
    assert server.websockets == set()


async def test_server_close_without_closing_connections() -> None:
    release = asyncio.Event()

    async def handler(connection: shardws.ServerConnection) -> None:
        await release.wait()
        await connection.send("handler finished")

    server = await shardws.serve(handler, "127.0.0.1", 0)
    async with connect(uri(server)) as client:
        await wait_until(lambda: len(server.websockets) == 1)
        server.close(close_connections=False)
        closed = asyncio.create_task(server.wait_closed())
        await wait_until(lambda: not server.is_serving())
        assert not closed.done()
        release.set()
        assert await client.recv() == "handler finished"
        await asyncio.wait_for(closed, 5)
        assert client.close_code == 1000


async def test_serve_forever_cancelled_closes_the_server() -> None:
    server = await shardws.serve(echo, "127.0.0.1", 0, start_serving=False)
    forever = asyncio.create_task(server.serve_forever())
    await wait_until(server.is_serving)
    async with connect(uri(server)) as client:
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        await client.wait_closed()
        assert client.close_code == 1001
    assert not server.is_serving()


async def test_handshake_in_progress_during_close_gets_503(start_server: Any) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(connection: Any, request: shardws.Request) -> None:
        entered.set()
        await release.wait()

    server = await shardws.serve(echo, "127.0.0.1", 0, process_request=slow)
    attempt = asyncio.create_task(http_exchange(port_of(server), handshake_request()))
    await asyncio.wait_for(entered.wait(), 5)
    server.close()
    release.set()
    assert (await attempt).startswith(b"HTTP/1.1 503 ")
    await asyncio.wait_for(server.wait_closed(), 5)


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [("return", 1000), ("raise", 1011)],
)
async def test_handler_end_closes_the_connection(
    start_server: Any, caplog: pytest.LogCaptureFixture, behaviour: str, code: int
) -> None:
    async def handler(connection: shardws.ServerConnection) -> None:
        await connection.recv()
        if behaviour == "raise":
            raise ValueError("handler bug")

    caplog.set_level(logging.DEBUG, logger="shardws.server")
    server = await start_server(handler)
    async with connect(uri(server)) as client:
        await client.send("go")
        await client.wait_closed()
        assert client.close_code == code
    failures = [r for r in caplog.records if r.getMessage() == "connection handler failed"]
    if behaviour == "raise":
        assert len(failures) == 1 and failures[0].levelno == logging.ERROR
        assert failures[0].exc_info is not None and failures[0].exc_info[0] is ValueError
    else:
        assert failures == []
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "connection open" in messages
    assert any(m.startswith("connection closed") for m in messages)


async def test_open_timeout_drops_a_silent_client(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shardws.server")
    server = await start_server(echo, open_timeout=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(b"GET / HTTP/1.1\r\n")  # and never the rest
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        pass  # aborted: RST instead of FIN, also a drop
    writer.close()
    assert any(
        r.getMessage().startswith("opening handshake failed") and r.levelno == logging.INFO
        for r in caplog.records
    )
    # a well-behaved client is still served
    async with connect(uri(server)) as client:
        await client.send("ok")
        assert await client.recv() == "ok"


async def test_failed_handshake_logged_at_info(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shardws.server")
    server = await start_server(echo)
    answer = await http_exchange(port_of(server), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 426 ")
    assert b"\r\nConnection: Upgrade, close\r\n" in answer
    records = [r for r in caplog.records if r.getMessage().startswith("opening handshake failed")]
    assert len(records) == 1 and records[0].levelno == logging.INFO


# ------------------------------------------------------ handshake hooks


def sync_forbid(connection: Any, request: shardws.Request) -> shardws.Response:
    return shardws.Response(403, "Forbidden", b"nope")


async def async_forbid(connection: Any, request: shardws.Request) -> shardws.Response:
    return shardws.Response(403, "Forbidden", b"nope")


def allow(connection: Any, request: shardws.Request) -> None:
    return None


def crash(connection: Any, request: shardws.Request) -> None:
    raise RuntimeError("hook bug")


def wrong_type(connection: Any, request: shardws.Request) -> str:
    return "not a response"


def respond_teapot(connection: shardws.ServerConnection, request: shardws.Request) -> shardws.Response:
    return connection.respond(418, "short and stout\n")


PROCESS_REQUEST_CASES = [
    # hook, status, body (None: not checked), logged at ERROR
    pytest.param(sync_forbid, 403, b"nope", False, id="sync-response"),
    pytest.param(async_forbid, 403, b"nope", False, id="async-response"),
    pytest.param(respond_teapot, 418, b"short and stout\n", False, id="connection-respond"),
    pytest.param(allow, 101, None, False, id="none-proceeds"),
    pytest.param(crash, 500, None, True, id="raises-500"),
    pytest.param(wrong_type, 500, None, True, id="wrong-type-500"),
]


@pytest.mark.parametrize(("hook", "status", "body", "logged"), PROCESS_REQUEST_CASES)
async def test_process_request(
    start_server: Any,
    caplog: pytest.LogCaptureFixture,
    hook: Any,
    status: int,
    body: bytes | None,
    logged: bool,
) -> None:
    server = await start_server(echo, process_request=hook)
    if status == 101:
        async with connect(uri(server)) as client:
            await client.send("in")
            assert await client.recv() == "in"
    else:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(uri(server)):
                pass
        response = caught.value.response
        assert response.status_code == status
        assert response.headers["Connection"] == "close"
        if body is not None:
            assert response.body == body
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert bool(errors) is logged


async def test_process_request_sees_the_connection(start_server: Any) -> None:
    seen: list[Any] = []

    def hook(connection: shardws.ServerConnection, request: shardws.Request) -> None:
        seen.append((connection.remote_address, request.path, request.headers["X-Trace"]))

    server = await start_server(echo, process_request=hook)
    async with connect(uri(server, "/p?q"), additional_headers={"X-Trace": "abc"}) as client:
        assert seen == [(client.local_address, "/p?q", "abc")]


async def test_process_response(start_server: Any) -> None:
    async def add_header(connection: Any, request: Any, response: shardws.Response) -> None:
        response.headers["X-Added"] = "yes"

    server = await start_server(echo, process_response=add_header)
    async with connect(uri(server)) as client:
        assert client.response is not None and client.response.headers["X-Added"] == "yes"

    def replace(connection: Any, request: Any, response: shardws.Response) -> shardws.Response:
        return shardws.Response(418, "I'm a teapot", b"tea")

    server = await start_server(echo, process_response=replace)
    with pytest.raises(InvalidStatus) as caught:
        async with connect(uri(server)):
            pass
    assert (caught.value.response.status_code, caught.value.response.body) == (418, b"tea")


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://good.example", 101), ("https://evil.example", 403), (None, 403)],
)
async def test_origins(start_server: Any, origin: str | None, status: int) -> None:
    server = await start_server(echo, origins=["https://good.example"])
    headers = [] if origin is None else [f"Origin: {origin}"]
    answer = await http_exchange(port_of(server), handshake_request(*headers))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())


SERVER_HEADER_CASES = [
    pytest.param({}, f"shardws/{shardws.__version__}", id="default"),
    pytest.param({"server_header": "Custom/2"}, "Custom/2", id="custom"),
    pytest.param({"server_header": None}, None, id="none-omits"),
    pytest.param({"server_header": ""}, None, id="empty-omits"),
]


@pytest.mark.parametrize(("options", "expected"), SERVER_HEADER_CASES)
async def test_server_header(start_server: Any, options: dict[str, Any], expected: str | None) -> None:
    server = await start_server(echo, **options)
    async with connect(uri(server)) as client:
        assert client.response is not None
        assert client.response.headers.get("Server") == expected


EXTRA_HEADERS_CASES = [
    pytest.param({"X-One": "1", "Server": "Mine/1"}, id="dict"),
    pytest.param(shardws.Headers([("X-One", "1"), ("Server", "Mine/1")]), id="Headers"),
    pytest.param([("X-One", "1"), ("Server", "Mine/1")], id="pairs"),
    pytest.param(lambda connection, request: {"X-One": "1", "Server": "Mine/1"}, id="callable"),
]


@pytest.mark.parametrize("extra_headers", EXTRA_HEADERS_CASES)
async def test_extra_headers(start_server: Any, extra_headers: Any) -> None:
    server = await start_server(echo, extra_headers=extra_headers)
    async with connect(uri(server)) as client:
        assert client.response is not None
        assert client.response.headers["X-One"] == "1"
        assert client.response.headers.get_all("Server") == ["Mine/1"]


@pytest.mark.parametrize(
    ("offered", "options", "expected"),
    [
        (["chat", "superchat"], {"subprotocols": ["superchat", "chat"]}, "superchat"),
        (["b", "a"], {"subprotocols": ["a"]}, "a"),
        (["x", "y"], {"select_subprotocol": lambda connection, offered: offered[-1]}, "y"),
        (None, {}, None),
    ],
)
async def test_subprotocols(
    start_server: Any, offered: list[str] | None, options: dict[str, Any], expected: str | None
) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, **options)
    async with connect(uri(server), subprotocols=offered) as client:
        connection = await acc.next()
        assert client.subprotocol == expected
        assert connection.subprotocol == expected


@pytest.mark.parametrize(("compression", "negotiated"), [("deflate", True), (None, False)])
async def test_compression(start_server: Any, compression: str | None, negotiated: bool) -> None:
    server = await start_server(echo, compression=compression)
    async with connect(uri(server)) as client:
        assert client.response is not None
        assert ("Sec-WebSocket-Extensions" in client.response.headers) is negotiated
        await client.send("z" * 10_000)
        assert await client.recv() == "z" * 10_000


def test_unsupported_compression_is_refused() -> None:
    with pytest.raises(ValueError):
        shardws.serve(echo, "127.0.0.1", 0, compression="brotli")


@pytest.mark.parametrize(
    ("max_size", "size", "closes"),
    [(1024, 1024, False), (1024, 1025, True), (None, 3 * 2**20, False)],
)
async def test_max_size(start_server: Any, max_size: int | None, size: int, closes: bool) -> None:
    server = await start_server(echo, max_size=max_size)
    async with connect(uri(server), max_size=None) as client:
        await client.send(b"x" * size)
        if closes:
            with pytest.raises(ClientClosedError) as caught:
                await client.recv()
            assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
        else:
            assert len(await client.recv()) == size


# ------------------------------------------------------------ transports


async def test_unix_serve(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    async with shardws.unix_serve(echo, path) as server:
        assert server.sockets[0].getsockname() == path
        async with unix_connect(path) as client:
            await client.send("unix")
            assert await client.recv() == "unix"


async def test_serve_on_a_pre_bound_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    async with shardws.serve(echo, sock=sock) as server:
        assert server.sockets[0].getsockname() == sock.getsockname()
        async with connect(uri(server)) as client:
            await client.send("bound")
            assert await client.recv() == "bound"


async def test_reuse_port_servers_share_a_port() -> None:
    async with shardws.serve(echo, "127.0.0.1", 0, reuse_port=True) as first:
        port = port_of(first)
        async with shardws.serve(echo, "127.0.0.1", port, reuse_port=True, backlog=16) as second:
            assert port_of(second) == port
            async with connect(uri(second)) as client:
                await client.send("shared")
                assert await client.recv() == "shared"


# ------------------------------------------------------------- keepalive


async def test_keepalive_without_pong_closes_with_1011(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, ping_interval=0.05, ping_timeout=0.05, close_timeout=0.5)
    client = await RawClient.connect(port_of(server))
    client.answer_pings = False
    connection = await acc.next()
    events = await client.until_eof()
    assert isinstance(events[0], Ping)
    assert events[-1] == Close(1011, "keepalive ping timeout")
    await connection.wait_closed()
    await client.aclose()


async def test_keepalive_answered_keeps_the_connection_open(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, ping_interval=0.02, ping_timeout=0.5)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    for _ in range(3):
        assert isinstance(await client.next_event(), Ping)
    await wait_until(lambda: connection.latency > 0)
    assert connection.state is shardws.State.OPEN
    await client.aclose()


@pytest.mark.parametrize("ping_interval", [None, 0])
async def test_keepalive_disabled(start_server: Any, ping_interval: float | None) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, ping_interval=ping_interval)
    async with connect(uri(server)):
        connection = await acc.next()
        assert connection._keepalive_handle is None


# ---------------------------------------------------------- flow control


async def test_read_limit_pauses_reading_on_unread_bytes(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, read_limit=1000, max_queue=None)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    client.send_binary(b"a" * 600)
    client.ping(b"sync")
    assert await client.next_event() == shardws.protocol.connection.Pong(b"sync")
    client.send_binary(b"b" * 600)  # 1200 unread bytes > 1000
    await wait_until(lambda: not connection._transport.is_reading())
    client.ping(b"after")
    assert await connection.recv() == b"a" * 600
    assert await connection.recv() == b"b" * 600  # 0 <= 250: reading resumes
    assert await client.next_event() == shardws.protocol.connection.Pong(b"after")
    await client.aclose()


async def fill_until_paused(connection: shardws.ServerConnection) -> tuple[asyncio.Task[None], list[int]]:
    """Send 256 KiB messages to a client that does not read until send() blocks.

    Returns the sending task and a one-item list counting the send() calls done.
    """
    chunk = b"x" * 2**18
    done = [0]

    async def pump() -> None:
        while True:
            await connection.send(chunk)
            done[0] += 1

    task = asyncio.create_task(pump())
    await wait_until(lambda: connection._write_paused, timeout=10)
    return task, done


@pytest.mark.both_loops
async def test_write_limit_makes_send_wait(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, write_limit=2**16, compression=None, max_size=None)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    pump, done = await fill_until_paused(connection)
    transport = connection._transport
    assert transport.get_write_buffer_size() > 2**16
    sent_while_paused = done[0]
    assert not pump.done()  # send() waits for the buffer to drain
    # a peer that does not read is not read from either (no unbounded pongs)
    assert not transport.is_reading()
    # the client reads: the buffer drains, send() proceeds

    async def read_until_a_send_completes() -> None:
        while done[0] == sent_while_paused:
            await client.next_event()

    await asyncio.wait_for(read_until_a_send_completes(), 10)
    assert not pump.done()
    pump.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pump
    await client.aclose()


async def test_closing_reads_past_a_full_queue_with_bounded_memory(start_server: Any) -> None:
    """After the server sends its close frame it reads on (to get the client's),
    even with max_queue unread messages; messages past max_queue are dropped."""
    acc = Accepted()
    server = await start_server(acc.handler, max_queue=2)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    client.send_text("m1")
    client.send_text("m2")
    await wait_until(lambda: not connection._transport.is_reading())
    client.answer_pings = False  # hold back the automatic answer to the close frame
    closing = asyncio.create_task(connection.close(1001, "bye"))
    assert await client.next_event() == Close(1001, "bye")
    encoder = ShardwsConnection(Side.CLIENT, state=State.OPEN)  # frames the client still sends
    received = registry.stats.messages_in
    for n in range(3, 50):
        encoder.send_text(f"m{n}")
    client.writer.write(b"".join(encoder.data_to_send()))
    await wait_until(lambda: registry.stats.messages_in == received + 47)  # all read...
    assert len(connection._messages) == 2  # ...and dropped past max_queue
    encoder.send_close(1000)
    client.writer.write(b"".join(encoder.data_to_send()))
    await asyncio.wait_for(closing, 5)
    assert connection.close_code == 1000  # the client's close frame was read
    assert [message async for message in connection] == ["m1", "m2"]
    await client.aclose()


# (serve() options, messages unread when the server closes, messages after its close frame)
DROP_AFTER_CLOSE_CASES = [
    pytest.param({"max_queue": 2}, [f"m{n}" for n in range(6)], ["late"] * 47, id="max_queue"),
    pytest.param(
        {"max_queue": None, "read_limit": 1000}, ["a" * 600] * 3, ["b" * 100] * 47, id="read_limit"
    ),
]


@pytest.mark.parametrize(("options", "early", "late"), DROP_AFTER_CLOSE_CASES)
async def test_only_messages_past_the_close_frame_are_dropped(
    start_server: Any, options: dict[str, Any], early: list[str], late: list[str]
) -> None:
    """While the server waits for the peer's close frame, what arrives past
    max_queue or read_limit is dropped (bounded memory); the messages that
    were unread when it closed are still there for the handler."""
    acc = Accepted()
    server = await start_server(acc.handler, **options)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    encoder = ShardwsConnection(Side.CLIENT, state=State.OPEN)  # frames the client still sends
    for message in early:
        encoder.send_text(message)
    client.writer.write(b"".join(encoder.data_to_send()))  # one write: may exceed the limits
    await wait_until(lambda: len(connection._messages) == len(early))
    await wait_until(lambda: not connection._transport.is_reading())
    client.answer_pings = False  # hold back the automatic answer to the close frame
    closing = asyncio.create_task(connection.close(1001, "bye"))
    assert await client.next_event() == Close(1001, "bye")
    received = registry.stats.messages_in
    for message in late:
        encoder.send_text(message)
    client.writer.write(b"".join(encoder.data_to_send()))
    await wait_until(lambda: registry.stats.messages_in == received + len(late))  # all read...
    assert list(connection._messages) == early  # ...and dropped
    encoder.send_close(1000)
    client.writer.write(b"".join(encoder.data_to_send()))
    await asyncio.wait_for(closing, 5)
    assert [message async for message in connection] == early
    await client.aclose()


async def test_frames_sent_with_the_request_are_kept(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler)
    encoder = ShardwsConnection(Side.CLIENT, state=State.OPEN)
    encoder.send_text("early bird")
    encoder.send_binary(b"second")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(handshake_request() + b"".join(encoder.data_to_send()))  # one write
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    connection = await acc.next()
    assert [await connection.recv(), await connection.recv()] == ["early bird", b"second"]
    writer.close()


async def test_open_timeout_covers_a_hanging_process_request(start_server: Any) -> None:
    cancelled = asyncio.Event()

    async def hang(connection: Any, request: Any) -> None:
        try:
            await asyncio.Future()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = await start_server(echo, process_request=hang, open_timeout=0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(handshake_request())
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        pass  # aborted: RST
    await asyncio.wait_for(cancelled.wait(), 5)
    writer.close()


def test_server_close_rejects_an_invalid_code() -> None:
    server = shardws.Server.__new__(shardws.Server)
    with pytest.raises(shardws.LocalProtocolError):
        server.close(code=1005)
