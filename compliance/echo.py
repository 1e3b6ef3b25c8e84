"""The Autobahn|Testsuite echo server: every message comes back with the same type.

    python compliance/echo.py [--host 127.0.0.1] [--port 9002] [--no-compression]

max_size is 32 MiB (the largest Autobahn message is 16 MiB); keepalive pings
are off so that they never interleave with the cases' frames. Runs on uvloop
when it is installed. Prints ``listening on HOST:PORT`` once it accepts
(``--port 0`` picks a free port), and exits cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

try:
    import shardws
except ImportError:  # run from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import shardws

MAX_SIZE = 32 * 2**20


async def echo(ws: shardws.ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except shardws.ConnectionClosed:
        pass


async def main(host: str, port: int, compression: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with shardws.serve(
        echo, host, port, compression=compression, max_size=MAX_SIZE, ping_interval=None,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()
        print(f"listening on {bound[0]}:{bound[1]}", flush=True)
        await stop.wait()


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--no-compression", action="store_true",
                        help="do not negotiate permessage-deflate")
    args = parser.parse_args(argv)
    coro = main(args.host, args.port, None if args.no_compression else "deflate")
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    run()
