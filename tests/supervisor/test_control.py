"""The control socket's request parsing, on a socketpair (no process forked)."""

from __future__ import annotations

import json
import socket

import pytest

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
