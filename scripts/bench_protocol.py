#!/usr/bin/env python
"""Protocol benchmark: parse + unmask throughput of masked client frames.

One stream of masked binary frames (each with its own random mask key, as a
browser sends them) is cut into 64 KiB chunks, like socket reads, and fed to
a server-side sans-I/O connection in state OPEN:

* ``shardws C``: ``shardws.protocol.connection.Connection.receive_data``
  with the C speedups;
* ``shardws pure``: the same with ``SHARDWS_NO_SPEEDUPS=1``;
* ``websockets``: ``websockets.protocol.Protocol`` (server side, state OPEN,
  its own C speedups) ``receive_data`` + ``events_received``.

What each side hands back differs, to websockets' advantage: shardws returns
assembled messages (``str`` for text frames, after UTF-8 validation) and
websockets' Protocol returns raw ``Frame`` objects (its asyncio layer decodes
text later).

Each implementation runs in its own subprocess (so that the module-level
speedups binding is the right one) and parses THE SAME bytes (the stream is
generated from a fixed seed). Each pass uses a fresh connection; the best
pass is reported. Every pass checks that all frames came out with the right
payload size.

Usage: ``python scripts/bench_protocol.py [--quick] [--sizes 32,16384]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 65536
SEED = 6455
# frames per stream for a payload size: about 4 MB of wire bytes, >= 200 frames
STREAM_BYTES = 4_000_000


def build_stream(size: int, text: bool = False) -> tuple[bytes, int]:
    """``(wire bytes, frame count)`` of masked frames of ``size`` bytes.

    Binary frames of random bytes, or text frames of ASCII letters.
    """
    rng = random.Random(SEED + size)
    count = max(200, STREAM_BYTES // (size + 14))
    opcode = 0x81 if text else 0x82
    if size < 126:
        head = bytes((opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((opcode, 0xFE)) + size.to_bytes(2, "big")
    else:
        head = bytes((opcode, 0xFF)) + size.to_bytes(8, "big")
    frames = []
    for _ in range(count):
        mask = rng.randbytes(4)
        if text:
            # Every letter XOR the mask must be ASCII once unmasked: mask the
            # letters for real (slow only at build time).
            letters = bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz ", k=size))
            body = (int.from_bytes(letters, "big") ^ int.from_bytes((mask * (size // 4 + 1))[:size], "big"))
            frames.append(head + mask + body.to_bytes(size, "big"))
        else:
            # Random bytes: as binary frames, their unmasked value does not
            # change the parser's work.
            frames.append(head + mask + rng.randbytes(size))
    return b"".join(frames), count


def chunked(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


# ------------------------------------------------------------ the parsers


def make_shardws() -> tuple[str, Any]:
    """A function feeding all chunks to a fresh shardws server connection."""
    from shardws import speedups
    from shardws.protocol.connection import Connection, Side, State

    label = "shardws C" if speedups.C_SPEEDUPS else "shardws pure"

    def run_connection(chunks: list[bytes]) -> tuple[int, int]:
        connection = Connection(Side.SERVER, state=State.OPEN)
        frames = nbytes = 0
        receive_data = connection.receive_data
        for chunk in chunks:
            for event in receive_data(chunk):
                frames += 1
                nbytes += len(event)  # type: ignore[arg-type]  # bytes: binary frames
        return frames, nbytes

    return label, run_connection


def make_websockets() -> tuple[str, Any]:
    from websockets.protocol import Protocol, Side, State

    def run_protocol(chunks: list[bytes]) -> tuple[int, int]:
        protocol = Protocol(Side.SERVER, state=State.OPEN)
        frames = nbytes = 0
        receive_data = protocol.receive_data
        events_received = protocol.events_received
        for chunk in chunks:
            receive_data(chunk)
            for frame in events_received():
                frames += 1
                nbytes += len(frame.data)  # type: ignore[union-attr]  # a Frame when OPEN
        return frames, nbytes

    from websockets.version import version

    return f"websockets {version}", run_protocol


def worker(impl: str, sizes: list[int], seconds: float, text: bool) -> None:
    """Measure one implementation; print one JSON line."""
    label, run = make_shardws() if impl == "shardws" else make_websockets()
    results = {}
    for size in sizes:
        stream, count = build_stream(size, text)
        chunks = chunked(stream)
        best = float("inf")
        spent = 0.0
        passes = 0
        while passes < 2 or spent < seconds:
            start = time.perf_counter()
            frames, nbytes = run(chunks)
            elapsed = time.perf_counter() - start
            if (frames, nbytes) != (count, count * size):
                raise SystemExit(f"{label}: got {frames} frames / {nbytes} bytes, want {count}")
            best = min(best, elapsed)
            spent += elapsed
            passes += 1
        results[str(size)] = {
            "frames_s": count / best,
            "mb_s": len(stream) / best / 1e6,
            "passes": passes,
        }
    extra = {}
    if impl == "shardws":
        from shardws import speedups

        extra["mask_impl"] = speedups.MASK_IMPL
    print(json.dumps({"label": label, "results": results, **extra}))


# ------------------------------------------------------------------ main


def run_worker(
    impl: str, pure: bool, sizes: list[int], seconds: float, text: bool
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "SHARDWS_NO_SPEEDUPS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if pure:
        env["SHARDWS_NO_SPEEDUPS"] = "1"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--sizes",
        ",".join(map(str, sizes)),
        "--seconds",
        str(seconds),
        *(["--text"] if text else []),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{impl} worker failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (~5 s)")
    parser.add_argument("--sizes", default="32,16384", help="payload sizes in bytes")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument("--text", action="store_true", help="text frames instead of binary")
    parser.add_argument("--worker", choices=["shardws", "websockets"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds = args.seconds if args.seconds is not None else (0.3 if args.quick else 1.5)
    if args.worker:
        worker(args.worker, sizes, seconds, args.text)
        return

    runs = [
        run_worker("shardws", False, sizes, seconds, args.text),
        run_worker("shardws", True, sizes, seconds, args.text),
        run_worker("websockets", False, sizes, seconds, args.text),
    ]
    reference = runs[-1]
    print(
        f"masked {'text' if args.text else 'binary'} frames, fed in {CHUNK // 1024} KiB chunks; "
        f"MB/s counts wire bytes; best of N passes; Python {sys.version.split()[0]}; "
        f"C masking: {runs[0].get('mask_impl')}"
    )
    header = f"{'implementation':34} {'payload':>8} {'frames/s':>12} {'MB/s':>9} {'vs websockets':>14}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        ref = reference["results"][str(size)]["frames_s"]
        for run in runs:
            r = run["results"][str(size)]
            print(
                f"{run['label']:34} {size:>7}B {r['frames_s']:>12,.0f} {r['mb_s']:>9,.1f} "
                f"{r['frames_s'] / ref:>13.2f}x"
            )


if __name__ == "__main__":
    main()
