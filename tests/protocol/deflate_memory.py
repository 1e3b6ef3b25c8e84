"""Measure the memory one permessage-deflate connection holds (docs/compression.md).

Not a test: run ``PYTHONPATH=. python tests/protocol/deflate_memory.py``.
For each configuration, 1000 PerMessageDeflate instances each compress one
message and inflate one message from a peer with the matching settings; the
memory still held afterwards, divided by 1000, is the idle cost of a
connection. With context takeover, "live" rows put every instance in a
ContextPool large enough for all (the 256 most recently active connections
of a server), "evicted" rows in a pool of 0 (the others: zlib streams
dropped, windows kept). Each configuration runs in a fresh subprocess, measured twice:
the growth of RSS (psutil, without tracemalloc) and the growth of traced
allocations (tracemalloc, which sees zlib's allocations: CPython routes them
through PyMem_RawMalloc). The peak of one message is tracemalloc's peak
over a single message.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tracemalloc

N = 1000

ML5 = {"memLevel": 5}

# (label, remote_nct, local_nct, remote bits, local bits, compress_settings,
# pool: "live" (room for all), "evicted" (size 0))
CONFIGS = [
    ("zlib defaults: 15/15 bits, memLevel 8, takeover, live", False, False, 15, 15, {}, "live"),
    ("15/15 bits, memLevel 5, takeover, live", False, False, 15, 15, ML5, "live"),
    ("**shardws default: 12/12 bits, memLevel 5, takeover, live**", False, False, 12, 12, ML5, "live"),
    ("**shardws default, evicted from the pool**", False, False, 12, 12, ML5, "evicted"),
    ("15/15 bits, memLevel 5, takeover, evicted", False, False, 15, 15, ML5, "evicted"),
    ("10/10 bits, memLevel 4, takeover, live", False, False, 10, 10, {"memLevel": 4}, "live"),
    ("9/9 bits, memLevel 1, takeover, live", False, False, 9, 9, {"memLevel": 1}, "live"),
    ("12/12 bits, memLevel 5, no context takeover (both)", True, True, 12, 12, ML5, "live"),
    ("12/12, server_no_context_takeover only, live", False, True, 12, 12, ML5, "live"),
    ("no compression (PerMessageDeflate not created)", None, None, 0, 0, {}, "live"),
]

MESSAGE = json.dumps(
    [{"id": i, "name": f"user{i}", "tags": ["a", "b", "c"], "score": i * 1.5} for i in range(60)]
).encode()  # about 4 KiB of JSON


MESSAGE_2 = json.dumps(
    [{"id": i, "name": f"user{i}", "tags": ["a", "b", "d"], "score": i * 2.5} for i in range(7, 67)]
).encode()  # the next message of the same shape


def wire_sizes(index: int) -> tuple[int, int]:
    """Compressed sizes of MESSAGE then MESSAGE_2 sent by one connection."""
    from shardws.protocol.deflate import ContextPool, PerMessageDeflate

    _, remote_nct, local_nct, rbits, lbits, settings, kind = CONFIGS[index]
    if remote_nct is None:
        return len(MESSAGE), len(MESSAGE_2)
    pool = ContextPool(1 if kind == "live" else 0)
    ext = PerMessageDeflate(bool(remote_nct), bool(local_nct), rbits, lbits, settings, pool)
    return len(ext.compress(MESSAGE)), len(ext.compress(MESSAGE_2))


def measure(index: int, traced: bool) -> dict[str, float]:
    import psutil

    from shardws.protocol.deflate import ContextPool, PerMessageDeflate

    _, remote_nct, local_nct, rbits, lbits, settings, kind = CONFIGS[index]
    pool = ContextPool(N if kind == "live" else 0)
    peers = []
    if remote_nct is not None:
        # Compressed peer messages, prepared before measuring.
        peer = PerMessageDeflate(False, bool(remote_nct), 15, rbits, {})
        payload = peer.compress(MESSAGE)
        peers = [payload] * N
    gc.collect()
    process = psutil.Process()
    if traced:
        tracemalloc.start()
    rss0 = process.memory_info().rss
    t0 = tracemalloc.get_traced_memory()[0] if traced else 0
    peak = 0
    exts = []
    for i in range(N):
        if remote_nct is None:
            exts.append(object())
            continue
        ext = PerMessageDeflate(bool(remote_nct), bool(local_nct), rbits, lbits, settings, pool)
        if traced and i == 0:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
        ext.compress(MESSAGE)
        assert ext.decompress(peers[i], True, None) == MESSAGE
        if traced and i == 0:
            peak = tracemalloc.get_traced_memory()[1] - base
        exts.append(ext)
    gc.collect()
    result = {"rss_per_conn": (process.memory_info().rss - rss0) / N}
    if traced:
        result["traced_per_conn"] = (tracemalloc.get_traced_memory()[0] - t0) / N
        result["peak_one_message"] = peak
    return result


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(int(sys.argv[1]), sys.argv[2] == "traced")))
        return
    print(f"message: {len(MESSAGE)} bytes of JSON; {N} connections per row\n")
    print(
        "| configuration | RSS / connection | traced / connection | peak during one message "
        "| message 1 / message 2 on the wire |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for index, (label, *_rest) in enumerate(CONFIGS):
        runs = {}
        for mode in ("rss", "traced"):
            out = subprocess.run(
                [sys.executable, __file__, str(index), mode],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            runs[mode] = json.loads(out)
        rss = runs["rss"]["rss_per_conn"] / 1024
        traced = runs["traced"]["traced_per_conn"] / 1024
        peak = runs["traced"]["peak_one_message"] / 1024
        first, second = wire_sizes(index)
        print(
            f"| {label} | {rss:.1f} KiB | {traced:.1f} KiB | {peak:.1f} KiB "
            f"| {first} B / {second} B |"
        )


if __name__ == "__main__":
    main()
