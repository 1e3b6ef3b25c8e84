"""Server.stop_listening(): the hand-over of a rolling restart.

The listener closes at once (new clients are refused), a handshake already
accepted still completes with 101 (not 503, not dropped), and connections
that are open stay open until close().
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from .conftest import port_of, uri, wait_until
from .test_server import echo, handshake_request


@pytest.mark.both_loops
async def test_accepted_handshake_completes_and_open_connections_stay(start_server) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(echo)
    port = port_of(server)
    async with connect(uri(server)) as open_client:
        # Accepted by the kernel and the server, request not sent yet.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await wait_until(lambda: len(server._connections) == 2)

        handing_over = asyncio.ensure_future(server.stop_listening(timeout=5))
        await wait_until(lambda: server._handing_over)
        assert server.is_serving()
        writer.write(handshake_request())
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 101"), status_line
        await asyncio.wait_for(handing_over, 5)

        # The listener is gone: a new client is refused.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        # The connection open before the hand-over still works.
        await open_client.send("still here")
        assert await asyncio.wait_for(open_client.recv(), 5) == "still here"
        writer.close()

        server.close(code=1012)
        await asyncio.wait_for(server.wait_closed(), 5)
        await asyncio.wait_for(open_client.wait_closed(), 5)
        assert open_client.close_code == 1012


async def test_stop_listening_after_close_is_a_no_op(start_server) -> None:  # type: ignore[no-untyped-def]
    server = await start_server(echo)
    server.close()
    await server.stop_listening(timeout=1)
    await asyncio.wait_for(server.wait_closed(), 5)
    assert not server.is_serving()
