"""scripts/bench.py: the load generator's frame helpers (no timing is asserted here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
_spec = importlib.util.spec_from_file_location("bench_script", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_script"] = bench
_spec.loader.exec_module(bench)


def server_frame(payload_len: int, first: int = 0x82) -> bytes:
    """An unmasked server frame (RFC 6455 5.2) carrying ``payload_len`` bytes."""
    if payload_len < 126:
        head = bytes([first, payload_len])
    elif payload_len < 2**16:
        head = bytes([first, 126]) + payload_len.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + payload_len.to_bytes(8, "big")
    return head + bytes(payload_len)


STREAM = b"".join(server_frame(n) for n in (0, 1, 32, 125, 126, 300, 65535, 65536, 5))
FRAMES = 9

# (name, sizes of the reads the stream arrives in: None = all the rest)
SPLITS = [
    ("one read", [None]),
    ("byte by byte", [1] * len(STREAM)),
    ("inside 16-bit length", [2 + 3 + 34 + 127 + 3, None]),
    ("inside 64-bit length", [2 + 3 + 34 + 127 + 130 + 304 + 65539 + 5, None]),
    ("odd chunks", [7, 13, 1000, 65000, 3, 1, None]),
]


@pytest.mark.parametrize(("name", "sizes"), SPLITS, ids=[s[0] for s in SPLITS])
def test_scanner_counts_frames_across_reads(name: str, sizes: list[int | None]) -> None:
    scanner = bench.FrameScanner()
    counts, offset = [], 0
    for size in sizes:
        end = len(STREAM) if size is None else offset + size
        counts.append(scanner.feed(STREAM[offset:end]))
        offset = end
    assert offset == len(STREAM)
    assert sum(counts) == FRAMES
    assert (scanner.partial, scanner.skip) == (b"", 0)


def test_scanner_counts_a_frame_only_when_complete() -> None:
    frame = server_frame(300)
    scanner = bench.FrameScanner()
    assert [scanner.feed(frame[:1]), scanner.feed(frame[1:-1]), scanner.feed(frame[-1:])] == [0, 0, 1]


CLIENT_FRAMES = [(0x1, b"count", 2), (0x2, bytes(range(200)), 4), (0x2, bytes(70000), 10)]


@pytest.mark.parametrize(("opcode", "data", "header"), CLIENT_FRAMES)
def test_client_frame_is_masked_and_sized(opcode: int, data: bytes, header: int) -> None:
    frame = bench.client_frame(opcode, data)
    assert frame[0] == 0x80 | opcode
    assert frame[1] & 0x80  # "All frames sent from client to server have this bit set to 1."
    mask = frame[header : header + 4]
    body = frame[header + 4 :]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(body)) == data
    assert bench.server_frame_size(len(data)) == len(data) + header


def test_payload_is_deterministic_text() -> None:
    assert bench.payload(16384) == bench.payload(16384)
    assert len(bench.payload(32)) == 32
    bench.payload(16384).decode("ascii")


def test_reference_servers_answer_the_generator(tmp_path: Path) -> None:
    """bare-task echoes and bare-ws broadcasts (1 and 8 per round): one short point each,
    any rate above 0."""
    import json
    import subprocess

    report = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(_PATH), "--servers", "bare-task,bare-ws", "--tests", "rr32,broadcast,broadcast8",
         "--modes", "plain", "--repeat", "1", "--seconds", "0.3", "--rounds", "3",
         "--json", str(report)],
        check=True, timeout=120, capture_output=True,
    )
    rows = json.loads(report.read_text())
    points = {(row["server"], row["test"]): row["value"] for row in rows["points"]}
    assert set(points) == {("bare-task", "rr32"), ("bare-ws", "broadcast"), ("bare-ws", "broadcast8")}
    assert all(value > 0 for value in points.values())


def _point(n: int, server: str, value: float, test: str = "rr32") -> dict[str, object]:
    return {"pass": n, "test": test, "deflate": False, "server": server, "value": value}


def test_acceptance_reports_the_per_pass_range() -> None:
    """The median decides met or missed; the range and the count come from each pass's own
    pair, and a pass missing either server does not count."""
    points = [
        _point(1, "shardws", 90.0), _point(1, "picows", 100.0),
        _point(2, "shardws", 120.0), _point(2, "picows", 100.0),
        _point(3, "shardws", 105.0), _point(3, "picows", 100.0),
        _point(4, "shardws", 105.0),  # its picows point failed
    ]
    med = bench.medians(points)
    lines = bench.acceptance(med, points)
    assert "- rr32: 1.05x picows (target >= 1x): met; per pass 0.90x to 1.20x, met in 2 of 3" in lines
    assert bench.pass_ratios(points, "rr32", False, "picows") == [0.9, 1.2, 1.05]
    # without the points (or with one pass) the line is the median's alone
    assert "- rr32: 1.05x picows (target >= 1x): met" in bench.acceptance(med)
    one = bench.acceptance(bench.medians(points[:2]), points[:2])
    assert "- rr32: 0.90x picows (target >= 1x): MISSED" in one


def test_acceptance_counts_upper_bounds_per_pass() -> None:
    """idle_rss is 'at most' websockets': a pass meets it when shardws is lower."""
    points = [_point(n, s, v, "idle_rss") for n, s, v in
              [(1, "shardws", 7.0), (1, "websockets", 12.0), (2, "shardws", 13.0), (2, "websockets", 12.0)]]
    lines = bench.acceptance(bench.medians(points), points)
    assert any(line.startswith("- idle_rss: 0.83x websockets (target <= 1x): met; per pass 0.58x to 1.08x,"
                               " met in 1 of 2") for line in lines), lines
