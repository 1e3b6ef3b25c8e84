"""The public API: names of the spec in shardws.__all__, serve() defaults, and
ServerConnection's behaviour (properties, send, recv, ping, pong, close)."""

from __future__ import annotations

import asyncio
import inspect
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError as ClientClosedError

import shardws
from shardws.config import ServeSettings
from shardws.protocol.connection import Ping, Pong, State
from shardws.protocol.frames import Close

from .conftest import Accepted, port_of, uri, wait_until
from .rawclient import RawClient

SPEC = Path("/work/shared/spec/server-api.md")
if not SPEC.exists():  # the spec travels with the repo's shared folder
    SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "server-api.md"


def spec_names(text: str) -> set[str]:
    """Every public name the spec uses: websockets.X, from websockets import X,
    top-level classes and functions of its API blocks, and the exceptions it raises."""
    names = set(re.findall(r"\bwebsockets\.([A-Za-z_]\w*)", text))
    for imported in re.findall(r"^from websockets import (.+)$", text, re.M):
        names.update(name.strip() for name in imported.split(","))
    names.update(re.findall(r"^class (\w+)", text, re.M))
    for name, params in re.findall(r"^(?:async )?def (\w+)\(\s*(\w*)", text, re.M):
        if params != "self" and not name.startswith("_") and not name.endswith("handler"):
            names.add(name)
    names.update(re.findall(r"^- (\w+): (?:If|When)\b", text, re.M))
    # the examples' own functions are not API
    return names - {"main", "process_request"}


def test_spec_names_are_exported() -> None:
    names = spec_names(SPEC.read_text())
    expected_at_least = {
        "serve", "unix_serve", "Server", "ServerConnection", "broadcast", "basic_auth",
        "Request", "Response", "ConnectionClosed", "ConnectionClosedError", "ProtocolError",
    }  # fmt: skip
    assert expected_at_least <= names, expected_at_least - names
    missing = sorted(name for name in names if name not in shardws.__all__)
    assert not missing
    for name in names:
        assert getattr(shardws, name) is not None


def test_all_is_importable_and_unique() -> None:
    assert len(shardws.__all__) == len(set(shardws.__all__))
    for name in shardws.__all__:
        assert hasattr(shardws, name), name
    namespace: dict[str, Any] = {}
    exec("from shardws import *", namespace)
    assert set(shardws.__all__) <= set(namespace)


def spec_serve_defaults(text: str) -> dict[str, Any]:
    block = re.search(r"^async def serve\((.*?)^\) -> Server:", text, re.M | re.S)
    assert block is not None
    defaults = {}
    for name, value in re.findall(r"^(\w+): [^=\n]+ = ([^,\n]+),$", block.group(1), re.M):
        defaults[name] = eval(value, {"__builtins__": {}})  # literals and 2**n only
    return defaults


def test_serve_defaults_follow_the_spec_and_config() -> None:
    parameters = inspect.signature(shardws.serve).parameters
    spec = spec_serve_defaults(SPEC.read_text())
    assert len(spec) == 14  # logger ... extensions
    for name, value in spec.items():
        assert name in parameters, name
        if name in ("extensions", "logger"):
            continue  # None in the spec and here
        assert parameters[name].default == value, name
    settings = ServeSettings()
    for name, value in settings.serve_kwargs().items():
        assert parameters[name].default == value, name
    # unix_serve: the same options, ``path`` instead of host and port
    assert list(inspect.signature(shardws.unix_serve).parameters)[:2] == ["handler", "path"]


INF = float("inf")

# (serve() options, the resolved (max_queue high, low), (write_limit high, low))
LIMIT_CASES = [
    ({"max_queue": 16, "write_limit": 2**15}, (16, 4), (2**15, 2**13)),
    ({"max_queue": (16, None), "write_limit": (2**15, None)}, (16, 4), (2**15, 2**13)),
    ({"max_queue": (16, 10), "write_limit": (2**15, 100)}, (16, 10), (2**15, 100)),
    ({"max_queue": None, "write_limit": 2**15}, (INF, INF), (2**15, 2**13)),
]


@pytest.mark.parametrize(("options", "queue", "write"), LIMIT_CASES)
def test_limits_resolve_to_high_and_low_marks(
    options: dict[str, Any], queue: tuple[float, float], write: tuple[int, int]
) -> None:
    resolved = shardws.serve(echo_handler, **options)._options
    assert (resolved.max_queue_high, resolved.max_queue_low) == queue
    assert resolved.write_limits == write


async def echo_handler(connection: shardws.ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


# ------------------------------------------------------------ properties


async def test_connection_properties(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server, "/room?x=1"), subprotocols=None) as client:
        connection = await accepted.next()
        assert connection.state is State.OPEN
        assert connection.closed is False
        assert connection.local_address[:2] == client.remote_address[:2]
        assert connection.remote_address[:2] == client.local_address[:2]
        assert connection.request is not None and connection.request.path == "/room?x=1"
        assert connection.request_headers["Sec-WebSocket-Version"] == "13"
        assert "Sec-WebSocket-Accept" in connection.response_headers
        assert connection.response is not None and connection.response.status_code == 101
        assert client.response is not None
        assert connection.response_headers["Sec-WebSocket-Accept"] == client.response.headers["Sec-WebSocket-Accept"]
        assert connection.subprotocol is None
        assert isinstance(connection.id, uuid.UUID) and connection.id.version == 4
        assert connection.latency == 0.0
        assert connection.username is None
        assert connection.worker_id is None
        assert connection.close_code is None and connection.close_reason is None
        assert connection in accepted.server.websockets
    await connection.wait_closed()
    assert connection.closed is True
    assert connection.state is State.CLOSED
    assert (connection.close_code, connection.close_reason) == (1000, "")
    await wait_until(lambda: connection not in accepted.server.websockets)


# ------------------------------------------------------------------ send

SEND_CASES = [
    # message, what the client receives
    pytest.param("text", "text", id="str"),
    pytest.param("", "", id="empty-str"),
    pytest.param(b"\x00\xff", b"\x00\xff", id="bytes"),
    pytest.param(bytearray(b"ba"), b"ba", id="bytearray"),
    pytest.param(memoryview(b"xmvx")[1:3], b"mv", id="memoryview"),
]


@pytest.mark.parametrize(("message", "expected"), SEND_CASES)
async def test_send_types(accepted: Accepted, message: Any, expected: Any) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        await connection.send(message)
        received = await client.recv()
        assert received == expected and type(received) is type(expected)


async def agen(*items: Any) -> Any:
    for item in items:
        yield item


FRAGMENT_CASES = [
    pytest.param(lambda: ["a", "b", "c"], ["a", "b", "c", ""], id="list-of-str"),
    pytest.param(lambda: iter([b"1", b"22"]), [b"1", b"22", b""], id="iterator-of-bytes"),
    pytest.param(lambda: agen("x", "y"), ["x", "y", ""], id="async-iterable"),
]


@pytest.mark.parametrize(("make", "fragments"), FRAGMENT_CASES)
async def test_send_fragmented(accepted: Accepted, make: Any, fragments: list[Any]) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server), compression=None) as client:
        connection = await accepted.next()
        await connection.send(make())
        received = [fragment async for fragment in client.recv_streaming()]
        assert received == fragments


BAD_SEND_CASES = [
    pytest.param({"a": 1}, id="dict"),
    pytest.param(42, id="int"),
    pytest.param(None, id="None"),
    pytest.param([1, 2], id="list-of-int"),
]


@pytest.mark.parametrize("message", BAD_SEND_CASES)
async def test_send_rejects_other_types(accepted: Accepted, message: Any) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        with pytest.raises(TypeError):
            await connection.send(message)
        await connection.send("still open")
        assert await client.recv() == "still open"


async def test_send_mixed_fragments_fails_the_connection(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        with pytest.raises(TypeError):
            await connection.send(["text", b"bytes"])
        with pytest.raises(ClientClosedError) as caught:
            await client.recv()
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011


async def test_send_waits_for_a_fragmented_message(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        fragments: asyncio.Queue[str | None] = asyncio.Queue()

        async def source() -> Any:
            while (item := await fragments.get()) is not None:
                yield item

        fragmented = asyncio.create_task(connection.send(source()))
        await fragments.put("part1-")
        await wait_until(lambda: connection._fragmented is not None)
        other = asyncio.create_task(connection.send("other"))
        await fragments.put("part2")
        await fragments.put(None)
        await asyncio.wait_for(asyncio.gather(fragmented, other), 5)
        assert await client.recv() == "part1-part2"
        assert await client.recv() == "other"


async def test_send_after_close_raises(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)):
        connection = await accepted.next()
        await connection.close()
        for call in (connection.send("x"), connection.ping(), connection.pong()):
            with pytest.raises(shardws.ConnectionClosedOK):
                await call


# ------------------------------------------------------------------ recv


async def test_recv_types_and_decode(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        for sent, decode, expected in [
            ("text", None, "text"),
            (b"bin", None, b"bin"),
            ("text", False, b"text"),
            (b"bin", True, "bin"),
        ]:
            await client.send(sent)
            assert await connection.recv(decode=decode) == expected


async def test_concurrent_recv_raises_concurrency_error(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        first = asyncio.create_task(connection.recv())
        await wait_until(lambda: connection._recv_waiter is not None)
        with pytest.raises(shardws.ConcurrencyError):
            await connection.recv()
        await client.send("for the first")
        assert await first == "for the first"


# close codes, both ways: (who closes, code, reason, exception recv raises, async for raises)
CLOSE_CASES = [
    pytest.param("client", 1000, "bye", shardws.ConnectionClosedOK, None, id="client-1000"),
    pytest.param("client", 1001, "", shardws.ConnectionClosedOK, None, id="client-1001"),
    pytest.param("client", 4000, "app", shardws.ConnectionClosedError, shardws.ConnectionClosedError, id="client-4000"),
    pytest.param("client", 1011, "oops", shardws.ConnectionClosedError, shardws.ConnectionClosedError, id="client-1011"),
    pytest.param("server", 1000, "done", shardws.ConnectionClosedOK, None, id="server-1000"),
    pytest.param("server", 1001, "away", shardws.ConnectionClosedOK, None, id="server-1001"),
    pytest.param("server", 4321, "custom", shardws.ConnectionClosedError, shardws.ConnectionClosedError, id="server-4321"),
]  # fmt: skip


@pytest.mark.parametrize(("closer", "code", "reason", "recv_raises", "iter_raises"), CLOSE_CASES)
async def test_close_codes(
    accepted: Accepted,
    closer: str,
    code: int,
    reason: str,
    recv_raises: type[Exception],
    iter_raises: type[Exception] | None,
) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        if closer == "client":
            await client.close(code, reason)
        else:
            await connection.close(code, reason)
            await client.wait_closed()
            assert (client.close_code, client.close_reason) == (code, reason)
        await connection.wait_closed()
        with pytest.raises(recv_raises) as caught:
            await connection.recv()
        if closer == "client":
            assert caught.value.rcvd == Close(code, reason)
            assert (connection.close_code, connection.close_reason) == (code, reason)
        else:
            assert caught.value.sent == Close(code, reason)
        if iter_raises is None:
            assert [message async for message in connection] == []
        else:
            with pytest.raises(iter_raises):
                async for _ in connection:
                    pass


async def test_async_for_yields_messages_then_ends_on_normal_close(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        for message in ["one", b"two", "three"]:
            await client.send(message)
    assert [message async for message in connection] == ["one", b"two", "three"]


@pytest.mark.parametrize(("code", "reason"), [(999, ""), (1005, ""), (1006, ""), (5000, ""), (1000, "x" * 124)])
async def test_close_with_invalid_code_raises_locally(accepted: Accepted, code: int, reason: str) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)) as client:
        connection = await accepted.next()
        with pytest.raises(shardws.ProtocolError) as caught:
            await connection.close(code, reason)
        assert isinstance(caught.value, shardws.LocalProtocolError)
        assert connection.state is State.OPEN
        await connection.send("still open")
        assert await client.recv() == "still open"


async def test_close_is_idempotent_and_times_out_on_a_silent_peer(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler, close_timeout=0.05)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    # The client never answers the close frame: after close_timeout the
    # server drops the TCP connection.
    await asyncio.wait_for(asyncio.gather(connection.close(4000, "a"), connection.close()), 5)
    assert connection.closed
    assert connection.close_code == 1006
    events = await client.until_eof()
    assert events == [Close(4000, "a")]
    await client.aclose()


# ------------------------------------------------------------ ping / pong


@pytest.mark.both_loops
async def test_ping_returns_latency(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)):
        connection = await accepted.next()
        pong_waiter = await connection.ping()
        latency = await asyncio.wait_for(pong_waiter, 5)
        assert isinstance(latency, float) and latency > 0
        assert connection.latency == latency
        latency = await asyncio.wait_for(await connection.ping(b"payload"), 5)
        assert connection.latency == latency


async def test_ping_same_data_pending_raises(accepted: Accepted) -> None:
    assert accepted.server is not None
    async with connect(uri(accepted.server)):
        connection = await accepted.next()
        first = await connection.ping(b"same")
        with pytest.raises(shardws.ConcurrencyError):
            await connection.ping(b"same")
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(await connection.ping(b"same"), 5)  # answered: allowed again


async def test_one_pong_acknowledges_earlier_pings(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler)
    client = await RawClient.connect(port_of(server))
    client.answer_pings = False
    connection = await acc.next()
    waiters = [await connection.ping(data) for data in (b"1", b"2", b"3")]
    assert [await client.next_event() for _ in range(3)] == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
    client.protocol.send_pong(b"2")
    client.flush()
    assert await asyncio.wait_for(asyncio.gather(*waiters[:2]), 5)
    assert not waiters[2].done()
    await client.aclose()
    await connection.wait_closed()
    with pytest.raises(shardws.ConnectionClosedError):
        await waiters[2]


async def test_pong_and_ping_oversize(start_server: Any) -> None:
    acc = Accepted()
    server = await start_server(acc.handler)
    client = await RawClient.connect(port_of(server))
    connection = await acc.next()
    await connection.pong(b"heartbeat")
    await connection.pong("text")
    assert [await client.next_event(), await client.next_event()] == [Pong(b"heartbeat"), Pong(b"text")]
    with pytest.raises(shardws.LocalProtocolError):
        await connection.ping(b"x" * 126)
    assert connection._pending_pings == {}
    await client.aclose()
