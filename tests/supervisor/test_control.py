"""The control socket's request parsing, on a socketpair (no process forked)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from shardws import bus
from shardws.supervisor import Supervisor

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
