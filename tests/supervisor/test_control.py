"""The control socket's request parsing, on a socketpair (no process forked)."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest

import shardws
import shardws.supervisor as supervisor_module
from shardws import bus
from shardws.bus import SharedRings
from shardws.config import SupervisorSettings
from shardws.supervisor import Supervisor

from .apps import echo

BAD_REQUESTS = [  # (raw request line, what the error reply says)
    (b"not json\n", "bad request"),
    (b"[1, 2]\n", "bad request"),  # not an object
    (b'{"command": "scale"}\n', "bad request"),  # no worker count
    (b'{"command": "scale", "workers": null}\n', "bad request"),
    (b'{"command": "scale", "workers": "many"}\n', "invalid literal"),
    (b'{"command": "dance"}\n', "unknown command"),
    (b"[" * 4000 + b"\n", "bad request"),  # nested past the parser's recursion limit
]


@pytest.mark.parametrize(("raw", "error"), BAD_REQUESTS)
def test_a_bad_request_gets_an_error_reply_and_the_supervisor_goes_on(raw, error):
    supervisor = Supervisor("tests.supervisor.apps:echo", control=None)
    ours, theirs = socket.socketpair()
    with ours:
        theirs.setblocking(False)
        supervisor._clients[theirs.fileno()] = (theirs, bytearray())
        ours.sendall(raw)
        supervisor._read_control(theirs)  # must not raise: it would stop the supervisor
        reply = json.loads(ours.makefile("rb").readline())
    assert reply["ok"] is False and error in reply["error"]
    assert not supervisor._clients and theirs.fileno() == -1  # answered and closed
    assert not supervisor.actions


def eventfds() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]")


def readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # the fd of the listing itself, closed meanwhile
        return ""


def test_run_returns_with_the_bus_eventfds_closed():
    before = eventfds()
    supervisor = Supervisor("tests.supervisor.apps:echo", port=0, control=None)
    supervisor.actions.append("stop")  # stops on the first loop iteration, before any fork
    assert supervisor.run() == 0
    assert eventfds() == before
    assert bus._layout is None


BUS_SIZES = [None, 5_000_050, 64 << 20]  # None: the default --bus-size; 5_000_050: not 64-aligned


@pytest.mark.parametrize("bus_size", BUS_SIZES)
def test_run_with_one_worker_limits_messages_like_a_bus_size_ring(monkeypatch, bus_size):
    seen = []

    async def serve(handler, host, port, **kwargs):  # records the bus the server runs with
        seen.append(bus.current().max_payload("room"))
        raise OSError(errno.EADDRINUSE, "address already in use")

    monkeypatch.setattr(supervisor_module, "server_api", lambda: (serve, serve))
    options = {} if bus_size is None else {"bus_size": bus_size}
    try:
        assert shardws.run(echo, "127.0.0.1", 0, workers=1, **options) == 3  # EXIT_ADDRESS_IN_USE
    finally:
        bus.install(None)
    size = SupervisorSettings().bus_size if bus_size is None else bus_size
    rings = SharedRings(2, size)  # what a forked worker's ShmBus accepts
    try:
        assert seen == [rings.bus(0).max_payload("room")]
    finally:
        rings.close()
