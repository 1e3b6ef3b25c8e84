"""The supervisor with real processes and sockets on loopback (issue: Supervisor)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from websockets.asyncio.client import connect, unix_connect

from .conftest import ROOT, close_code, env, free_port, open_clients


async def test_two_workers_share_200_connections(supervised):
    server = supervised("echo", workers=2)
    pids = server.wait_ready(2)
    assert len(set(pids)) == 2
    clients = await open_clients(server.url, 200)
    spread = collections.Counter(hello["pid"] for _, hello in clients)
    print(f"\nconnections per worker: {dict(spread)}")
    assert set(spread) == set(pids)
    assert min(spread.values()) >= 0.2 * 200
    by_pid = {w["pid"]: w["id"] for w in server.status()["workers"]}
    for _, hello in clients:  # each connection knows its worker
        assert hello["worker"] == hello["worker_id"] == by_pid[hello["pid"]]
    for ws, _ in clients:
        await ws.close()


async def test_kill_9_worker_is_replaced_others_untouched(supervised):
    server = supervised("echo", workers=2)
    pids = server.wait_ready(2)
    clients = await open_clients(server.url, 40)
    victim = clients[0][1]["pid"]
    survivors = [ws for ws, hello in clients if hello["pid"] != victim]
    doomed = [ws for ws, hello in clients if hello["pid"] == victim]
    assert survivors and doomed
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    codes = await asyncio.gather(*(close_code(ws) for ws in doomed))
    assert set(codes) == {1006}
    new = await asyncio.to_thread(server.wait_ready, 2, {victim}, 5.0)
    respawn = time.monotonic() - killed_at
    print(f"\nrespawn after kill -9: {respawn * 1000:.0f} ms")
    assert respawn < 2.0
    assert victim not in new and set(pids) - {victim} <= set(new)
    for ws in survivors:  # the other worker's clients did not notice
        await ws.send("still here")
        assert await ws.recv() == "still here"
    for ws in survivors:
        await ws.close()


async def test_sigterm_closes_every_connection_with_1001(supervised):
    server = supervised("echo", "--graceful-timeout", "10", workers=2)
    server.wait_ready(2)
    clients = await open_clients(server.url, 100)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws) for ws, _ in clients))
    assert collections.Counter(codes) == {1001: 100}
    assert await asyncio.to_thread(server.wait_exit, 10.0) == 0
    print(f"\nshutdown with 100 connections: {(time.monotonic() - started) * 1000:.0f} ms")
    assert "stopped cleanly" in server.stderr


async def test_handler_ignoring_close_is_killed_at_deadline(supervised):
    server = supervised("stubborn", "--graceful-timeout", "1", workers=2)
    server.wait_ready(2)
    clients = await open_clients(server.url, 10)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    rc = await asyncio.to_thread(server.wait_exit, 5.0)
    elapsed = time.monotonic() - started
    assert rc == 5, server.stderr  # EXIT_UNCLEAN
    assert 1.0 <= elapsed < 5.0
    assert "did not finish within the graceful timeout" in server.stderr
    assert "unclean shutdown" in server.stderr
    for ws, _ in clients:  # closed with 1001 before the handler was killed
        assert await close_code(ws) == 1001


async def test_blocked_event_loop_is_replaced_after_heartbeat_timeout(supervised):
    server = supervised("blocker", "--heartbeat-timeout", "2", workers=2)
    server.wait_ready(2)
    ws, hello = (await open_clients(server.url, 1))[0]
    victim = hello["pid"]
    await ws.send("block")
    blocked_at = time.monotonic()
    assert await close_code(ws) == 1006
    new = await asyncio.to_thread(server.wait_ready, 2, {victim}, 8.0)
    replaced = time.monotonic() - blocked_at
    print(f"\nblocked worker replaced after {replaced:.2f} s (heartbeat timeout 2 s)")
    assert victim not in new
    assert 2.0 <= replaced < 6.0
    assert "sent no heartbeat" in server.stderr


def listening_tcp(port: int, tmp_path) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def listening_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    return sock


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_address_in_use_exits_3_with_one_line(tmp_path, family):
    port = free_port()
    uds = str(tmp_path / "ws.sock")
    holder = listening_tcp(port, tmp_path) if family == "tcp" else listening_unix(uds)
    where = ["--port", str(port)] if family == "tcp" else ["--uds", uds]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "shardws", "serve", "tests.supervisor.apps:echo",
             "--host", "127.0.0.1", *where, "--workers", "2", "--control", str(tmp_path / "ctl")],
            cwd=ROOT, env=env(), capture_output=True, text=True, timeout=20,
        )
    finally:
        holder.close()
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "address already in use" in lines[0], result.stderr


STARTUP_ERRORS = [  # (extra arguments, exit code, what the one stderr line says)
    (["--ssl-certfile", "/nonexistent/cert.pem"], 2, "cannot load the TLS certificate"),
    (["--host", "192.0.2.1"], 1, "cannot listen on 192.0.2.1"),  # not an address of this host
    (["--workers", "two"], 2, "--workers"),
]


@pytest.mark.parametrize(("args", "code", "message"), STARTUP_ERRORS)
def test_startup_errors_are_one_line_before_forking(tmp_path, args, code, message):
    result = subprocess.run(
        [sys.executable, "-m", "shardws", "serve", "tests.supervisor.apps:echo",
         "--port", str(free_port()), "--control", str(tmp_path / "ctl"), *args],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == code, result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert "serving ws" not in result.stderr  # nothing was forked


def test_worker_failing_at_boot_exits_4(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "shardws", "serve", "tests.supervisor.apps:missing",
         "--port", str(free_port()), "--workers", "2", "--control", str(tmp_path / "ctl")],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 4, result.stderr
    assert "keep failing at boot" in result.stderr
    assert result.stderr.count("failed to boot") == 5


async def test_sighup_rolling_restart_under_connect_loop(supervised):
    server = supervised("echo", "--graceful-timeout", "5", workers=2)
    old = set(server.wait_ready(2))
    keep = await open_clients(server.url, 20)  # long-lived connections on the old workers
    counts = collections.Counter()
    done = asyncio.Event()

    async def connect_loop() -> None:
        while not done.is_set():
            try:
                async with connect(server.url, open_timeout=5, ping_interval=None) as ws:
                    json.loads(await ws.recv())
                counts["ok"] += 1
            except Exception as exc:  # every failure counts: refused, reset, bad handshake
                counts["failed"] += 1
                counts[type(exc).__name__] += 1

    loops = [asyncio.create_task(connect_loop()) for _ in range(4)]
    async with asyncio.timeout(15):  # the connect loop is running before the restart
        while counts["ok"] < 8:
            await asyncio.sleep(0.01)  # polling with a deadline
    server.signal(signal.SIGHUP)
    status = await asyncio.to_thread(
        server.wait_for,
        lambda s: not s["supervisor"]["reloading"] and len(s["workers"]) == 2
        and all(w["state"] == "READY" and w["pid"] not in old for w in s["workers"]),
        15.0, "every worker replaced",
    )
    done.set()
    await asyncio.gather(*loops)
    new = {w["pid"] for w in status["workers"]}
    print(f"\nrolling restart: {counts['ok']} connects ok, {counts['failed']} failed {dict(counts)}")
    assert not new & old
    assert counts["ok"] > 0
    codes = await asyncio.gather(*(close_code(ws) for ws, _ in keep))
    assert set(codes) == {1012}


def shardws_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardws", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=20)


async def test_status_text_json_and_control_commands(supervised, tmp_path):
    pid_file = str(tmp_path / "shardws.pid")
    server = supervised("echo", "--pid-file", pid_file, workers=2)
    pids = server.wait_ready(2)
    clients = await open_clients(server.url, 6)
    for ws, _ in clients:
        await ws.send("x")
        await ws.recv()
    server.wait_for(lambda s: sum(w["connections"] for w in s["workers"]) == 6, 5.0, "6 connections")

    text = shardws_cli("status", "--control", server.control)
    assert text.returncode == 0, text.stderr
    header, columns, *rows = text.stdout.strip().splitlines()
    assert str(server.proc.pid) in header
    assert columns.split()[:4] == ["ID", "PID", "GEN", "STATE"]
    assert sorted(int(row.split()[1]) for row in rows) == sorted(pids)
    assert all("READY" in row for row in rows)

    for locator in (["--control", server.control], ["--pid-file", pid_file]):
        result = shardws_cli("status", "--json", *locator)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["supervisor"]["pid"] == server.proc.pid
        workers = status["workers"]
        assert sorted(w["pid"] for w in workers) == sorted(pids)
        assert sum(w["connections"] for w in workers) == 6
        for w in workers:
            assert w["rss"] > 0 and w["cpu_percent"] is not None
            assert 0 <= w["heartbeat_age"] < 5 and w["uptime"] > 0
            assert {"generation", "messages_in", "messages_out", "bus_drops"} <= set(w)

    # The loop keeps running (to_thread) so the clients answer the 1012 closes.
    assert shardws_cli("scale", "3", "--control", server.control).returncode == 0
    three = await asyncio.to_thread(server.wait_ready, 3)
    assert shardws_cli("reload", "--control", server.control).returncode == 0
    current = set(await asyncio.to_thread(server.wait_ready, 3, set(three)))
    assert not current & set(three)
    assert set(await asyncio.gather(*(close_code(ws) for ws, _ in clients))) == {1012}
    assert shardws_cli("scale", "1", "--control", server.control).returncode == 0
    await asyncio.to_thread(server.wait_ready, 1)
    assert shardws_cli("stop", "--control", server.control).returncode == 0
    assert await asyncio.to_thread(server.wait_exit, 10.0) == 0
    assert not os.path.exists(pid_file) and not os.path.exists(server.control)


async def test_unix_socket_workers_share_inherited_socket(supervised, tmp_path):
    path = str(tmp_path / "ws.sock")
    server = supervised("echo", workers=2, uds=path)
    pids = server.wait_ready(2)
    clients = []
    for _ in range(40):
        ws = await unix_connect(path, "ws://localhost/", ping_interval=None)
        clients.append((ws, json.loads(await ws.recv())))
    assert {hello["pid"] for _, hello in clients} <= set(pids)
    server.signal(signal.SIGTERM)
    assert set(await asyncio.gather(*(close_code(ws) for ws, _ in clients))) == {1001}
    assert server.wait_exit(10.0) == 0
    assert not os.path.exists(path)


async def test_run_with_one_worker_serves_without_fork(tmp_path):
    port = free_port()
    code = ("import shardws, sys; from tests.supervisor.apps import echo; "
            f"sys.exit(shardws.run(echo, '127.0.0.1', {port}, workers=1))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env(),
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                ws = await connect(f"ws://127.0.0.1:{port}", ping_interval=None)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                await asyncio.sleep(0.05)  # polling with a deadline
        hello = json.loads(await ws.recv())
        assert hello["pid"] == proc.pid and hello["worker"] is None
        proc.send_signal(signal.SIGTERM)
        assert await close_code(ws) == 1001
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


SIGNAL_STEPS = [  # (signal sent to the supervisor, workers expected after it)
    (signal.SIGTTIN, 3),
    (signal.SIGTTOU, 2),
    (signal.SIGTTOU, 1),
    (signal.SIGTTOU, 1),  # never fewer than one
    (signal.SIGTTIN, 2),
]


def test_sigttin_sigttou_scale_and_sigquit_stops_now(supervised):
    server = supervised("echo", "--graceful-timeout", "30", workers=2)
    server.wait_ready(2)
    for signum, expected in SIGNAL_STEPS:
        server.signal(signum)
        server.wait_for(lambda s, n=expected: s["supervisor"]["workers"] == n
                        and len(s["workers"]) == n
                        and all(w["state"] == "READY" for w in s["workers"]),
                        10.0, f"{expected} workers after {signum.name}")
    started = time.monotonic()
    server.signal(signal.SIGQUIT)
    assert server.wait_exit(5.0) == 0
    assert time.monotonic() - started < 2.0
    assert "immediate stop" in server.stderr


async def test_bad_deploy_aborts_rolling_restart_old_workers_keep_serving(supervised, tmp_path):
    marker = tmp_path / "broken"
    server = supervised("echo", extra_env={"SHARDWS_TEST_BROKEN": str(marker)}, workers=2)
    pids = set(server.wait_ready(2))
    marker.touch()  # from now on the application fails to import
    server.signal(signal.SIGHUP)
    status = await asyncio.to_thread(
        server.wait_for, lambda s: "rolling restart aborted" in server.stderr
        and not s["supervisor"]["reloading"], 15.0, "the restart to be abandoned")
    assert {w["pid"] for w in status["workers"]} == pids
    assert all(w["state"] == "READY" for w in status["workers"])
    ws, hello = (await open_clients(server.url, 1))[0]
    assert hello["pid"] in pids
    await ws.close()
    assert server.proc.poll() is None


async def test_workers_drain_when_the_supervisor_is_killed(supervised):
    server = supervised("echo", "--heartbeat-timeout", "2", workers=2)
    pids = server.wait_ready(2)
    clients = await open_clients(server.url, 10)
    os.kill(server.proc.pid, signal.SIGKILL)
    assert set(await asyncio.gather(*(close_code(ws) for ws, _ in clients))) == {1001}
    for pid in pids:  # orphans reparented to init (or a subreaper): poll until gone
        deadline = time.monotonic() + 5
        while running(pid):
            assert time.monotonic() < deadline, f"worker {pid} still running"
            await asyncio.sleep(0.02)  # polling with a deadline


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting for its new parent to reap it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except FileNotFoundError:
        return False


async def test_tls_workers_serve_wss(supervised, tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        with open(certfile, "ab") as f:
            f.write(pem.bytes())
    server = supervised("echo", "--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile),
                        workers=2)
    pids = server.wait_ready(2)
    assert server.status()["supervisor"]["url"].startswith("wss://")
    client_context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_context)
    clients = await open_clients(server.url.replace("ws://", "wss://"), 10, ssl=client_context)
    assert {hello["pid"] for _, hello in clients} <= set(pids)
    ws = clients[0][0]
    await ws.send("over tls")
    assert await ws.recv() == "over tls"
    for ws, _ in clients:
        await ws.close()


def can_unshare_net() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not can_unshare_net(), reason="needs a private network namespace (root, unshare)")
def test_rolling_restart_loses_no_connect_with_tcp_migrate_req():
    """The goal (0 failed attempts) where the kernel migrates queued connections."""
    result = subprocess.run(
        [sys.executable, "scripts/rolling_restart.py", "--migrate", "1", "--restarts", "3", "--json"],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nrolling restart with tcp_migrate_req=1: {numbers}")
    assert numbers["tcp_migrate_req"] == 1
    assert numbers["ok_during_restarts"] > 0
    assert numbers["failed"] == 0, numbers
