"""Run Autobahn|Testsuite cases against compliance/echo.py and fail on any FAILED case.

    python scripts/run_autobahn.py [--cases '1.*,2.*'] [--report DIR] [--no-compression]

Starts the echo server on a free port in a subprocess, waits until it says it
listens, runs ``<shared>/conformance/autobahn.sh 127.0.0.1:PORT REPORT CASES``
(``<shared>`` is ``../shared`` next to the repository, or ``$SHARED``),
prints its output, stops the server, and exits with the harness's status:
non-zero when a case FAILED or has no result, or when the server died.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0  # seconds for the echo server to listen
STOP_TIMEOUT = 10.0


def start_echo(no_compression: bool, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The echo server subprocess and its port."""
    cmd = [sys.executable, str(ROOT / "compliance" / "echo.py"), "--port", "0"]
    if no_compression:
        cmd.append("--no-compression")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            break
    if not line.startswith(b"listening on "):
        stop_echo(proc)
        sys.exit(f"run_autobahn: echo server did not start (see {log}):\n{log.read_text()[-3000:]}")
    return proc, int(line.split(b":")[-1])


def stop_echo(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; None when it was still running."""
    code = proc.poll()
    if code is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="*", help="Autobahn case patterns, comma-separated")
    parser.add_argument("--report", default="reports/autobahn", help="report directory")
    parser.add_argument("--no-compression", action="store_true",
                        help="run the echo server without permessage-deflate")
    parser.add_argument("--shared", default=os.environ.get("SHARED", str(ROOT.parent / "shared")),
                        help="the shared directory holding conformance/autobahn.sh")
    args = parser.parse_args(argv)

    harness = Path(args.shared) / "conformance" / "autobahn.sh"
    if not harness.is_file():
        print(f"run_autobahn: {harness} not found", file=sys.stderr)
        return 2
    report = Path(args.report).resolve()
    report.mkdir(parents=True, exist_ok=True)
    log = report / "echo-server.log"

    proc, port = start_echo(args.no_compression, log)
    try:
        rc = subprocess.call(["bash", str(harness), f"127.0.0.1:{port}", str(report), args.cases],
                             cwd=ROOT)
    finally:
        died = stop_echo(proc)
    if died is not None:
        print(f"run_autobahn: the echo server exited with {died} during the run (see {log})",
              file=sys.stderr)
        return rc or 1
    summary = report / "summary.json"
    if rc == 0 and summary.is_file():  # belt and braces: re-check the verdicts
        totals = json.loads(summary.read_text())["totals"]
        if totals["FAILED"] or totals["missing"]:
            return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
