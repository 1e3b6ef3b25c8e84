"""Locust users that load a shardws server running the demo app (``examples/app.py``).

Run it through ``make loadtest`` (``scripts/loadtest.py`` starts the server, runs
locust headless and writes the reports), or by hand against a running server::

    locust -f loadtests/locustfile.py --headless -u 500 -r 100 -t 60s \\
        --host ws://127.0.0.1:8000 --scenario chat

Scenarios (``--scenario``, or ``LOCUST_SCENARIO``; ``mix`` runs all three):

=========  ==================================================================
scenario   what each user does
=========  ==================================================================
echo       one connection for the whole run; sends a message, waits for its
           echo, thinks, again (request/response)
chat       joins a room of ``--room-size`` users (``/join ROOM``), says a
           message now and then (``/say ROOM ...``); every member of the
           room, on every worker, receives it: the time from publish to
           receipt is measured at each member
churn      connects, does ``--churn-messages`` echo round trips, closes,
           thinks, again
=========  ==================================================================

What goes to locust's statistics (request type ``WS``):

==============  ==============================================================
name            response time
==============  ==============================================================
connect         TCP connect + opening handshake
echo            send -> the echo came back (``echo`` and ``churn``)
join            ``/join ROOM`` sent -> ``joined ROOM`` received
chat fanout     ``/say`` sent (the publisher's clock) -> received by a member;
(same worker)   one entry per member and message, split by whether publisher
(other worker)  and member are on the same worker or the message crossed the
                bus. A member that sees a gap in a publisher's sequence
                numbers records a failure (lost messages) under ``chat fanout``
close           close frame sent -> the server's close frame received
receive         (failures only) the chat reader lost its connection
==============  ==============================================================

Every failure is reported with its cause; a connection the server closed is
reported as ``ServerClosed: closed by the server: CODE REASON`` so locust's
failure table groups them by close code. After a failure the user drops its
connection and reconnects at its next task.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import time
from typing import Any

import gevent
import locust.stats
import websocket
from locust import User, events, task

SCENARIOS = ("echo", "chat", "churn")

# `_stats_history.csv` feeds the progress lines of scripts/loadtest.py: flush it
# every 2 s instead of locust's 10 s (a documented knob of locust).
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 2

#: users started in this locust process (gives each chat user its room)
_user_numbers = itertools.count()


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--scenario", choices=[*SCENARIOS, "mix"], default="echo",
                        env_var="LOCUST_SCENARIO", help="which users to run (mix: all three)")
    parser.add_argument("--think-time", type=float, default=1.0, env_var="LOCUST_THINK_TIME",
                        help="mean seconds a user waits between two tasks (uniform 0.5x..1.5x)")
    parser.add_argument("--room-size", type=int, default=10, env_var="LOCUST_ROOM_SIZE",
                        help="chat: users per room")
    parser.add_argument("--churn-messages", type=int, default=3, env_var="LOCUST_CHURN_MESSAGES",
                        help="churn: echo round trips per connection")
    parser.add_argument("--message-size", type=int, default=64, env_var="LOCUST_MESSAGE_SIZE",
                        help="echo: bytes of text per message")
    parser.add_argument("--ws-timeout", type=float, default=10.0, env_var="LOCUST_WS_TIMEOUT",
                        help="seconds to wait for a connection or an answer before it is a failure")


@events.init.add_listener
def _pick_scenario(environment: Any, **_kwargs: Any) -> None:
    """Keep only the user classes of ``--scenario`` (all of them for ``mix``)."""
    options = environment.parsed_options
    scenario = getattr(options, "scenario", "mix") if options is not None else "mix"
    if scenario != "mix":
        environment.user_classes[:] = [
            cls for cls in environment.user_classes if getattr(cls, "scenario", None) == scenario
        ]
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if prefix:
        environment.events.quit.add_listener(lambda **_: write_final_csv(environment, prefix))


def write_final_csv(environment: Any, prefix: str) -> None:
    """Rewrite ``PREFIX_stats.csv``, ``_failures.csv``, ``_exceptions.csv`` with the final figures.

    Locust refreshes them once a second during the run and not after its
    users stopped, so they lack the last second (and the closes of the
    stop); the printed summary and the HTML report have everything. Each file
    is replaced (new inode): locust's own buffered handles, closed after this
    event, write into the old one.
    """
    writer = locust.stats.StatsCSV(environment, locust.stats.PERCENTILES_TO_REPORT)
    for suffix, write in (("_stats.csv", writer.requests_csv), ("_failures.csv", writer.failures_csv),
                          ("_exceptions.csv", writer.exceptions_csv)):
        path = prefix + suffix
        with open(path + ".tmp", "w", newline="") as f:
            write(csv.writer(f))
        os.replace(path + ".tmp", path)


class ServerClosed(Exception):
    """The server sent a close frame (when the user did not expect one)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed by the server: {code if code is not None else 'no code'} {reason}".rstrip())
        self.code = code
        self.reason = reason

    @classmethod
    def from_payload(cls, payload: bytes) -> ServerClosed:
        if len(payload) < 2:
            return cls(None, "")
        return cls(int.from_bytes(payload[:2], "big"), payload[2:].decode(errors="replace"))


class UnexpectedReply(Exception):
    """The server answered something else than the scenario expects."""


class MessagesLost(Exception):
    """A room member saw a gap in a publisher's sequence numbers."""


def receive(ws: websocket.WebSocket) -> str | bytes:
    """The next data message; pings are answered on the way.

    Raises ServerClosed on a close frame (websocket-client has answered it),
    or websocket-client's exceptions (timeout, connection closed).
    """
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return bytes(frame.data).decode()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return bytes(frame.data)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ServerClosed.from_payload(bytes(frame.data))
        # ping (websocket-client sent the pong) or pong: keep reading


class WebSocketUser(User):
    """A user with at most one WebSocket connection (``self.ws``) to ``--host``."""

    abstract = True
    scenario = ""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        options = environment.parsed_options
        self.timeout = getattr(options, "ws_timeout", 10.0)
        self.think_time = getattr(options, "think_time", 1.0)
        self.ws: websocket.WebSocket | None = None
        self.greeting = ""

    def wait_time(self) -> float:
        return self.think_time * random.uniform(0.5, 1.5)

    def report(self, name: str, start: float, length: int = 0, exception: Exception | None = None,
               response_time: float | None = None) -> None:
        """One entry in locust's statistics; ``start`` is a ``time.perf_counter()``."""
        if response_time is None:
            response_time = (time.perf_counter() - start) * 1000
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=response_time,
            response_length=length, exception=exception, context={},
        )

    def connect(self) -> websocket.WebSocket | None:
        """Open ``self.ws`` and read the greeting; None (failure reported) if that fails.

        ``connect`` times the TCP connect and the opening handshake; it is a
        failure when the greeting does not follow.
        """
        start = time.perf_counter()
        try:
            ws = websocket.create_connection(self.host, timeout=self.timeout,
                                             skip_utf8_validation=True)
        except Exception as exc:
            self.report("connect", start, exception=exc)
            return None
        handshake_ms = (time.perf_counter() - start) * 1000
        try:
            greeting = receive(ws)
        except Exception as exc:
            self.report("connect", start, exception=exc)
            ws.abort()
            ws.shutdown()
            return None
        self.report("connect", start, response_time=handshake_ms)
        self.greeting = greeting if isinstance(greeting, str) else ""
        self.ws = ws
        return ws

    def drop(self) -> None:
        """Forget the connection without a closing handshake (after a failure)."""
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.shutdown()

    def echo(self, ws: websocket.WebSocket, text: str) -> bool:
        """One round trip: send ``text``, expect ``echo: text``; False after a failure."""
        start = time.perf_counter()
        try:
            ws.send(text)
            reply = receive(ws)
            if reply != "echo: " + text:
                raise UnexpectedReply(f"expected the echo, got {str(reply)[:60]!r}")
        except Exception as exc:
            self.report("echo", start, exception=exc)
            self.drop()
            return False
        self.report("echo", start, len(reply))
        return True

    def close(self) -> None:
        """Closing handshake (1000); reports ``close``: a reply other than 1000 is a failure."""
        ws, self.ws = self.ws, None
        if ws is None:
            return
        start = time.perf_counter()
        try:
            ws.send_close(websocket.STATUS_NORMAL)
            while True:  # skip what was in flight; recv_frame() does not answer the close again
                frame = ws.recv_frame()
                if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                    closed = ServerClosed.from_payload(bytes(frame.data))
                    if closed.code != websocket.STATUS_NORMAL:
                        raise closed
                    break
        except Exception as exc:
            self.report("close", start, exception=exc)
        else:
            self.report("close", start)
        finally:
            ws.shutdown()

    def on_stop(self) -> None:
        # The run is over: close politely, but do not hold locust's shutdown for long.
        if self.ws is not None:
            self.ws.settimeout(1.0)
        self.close()


def payload(size: int, seq: int) -> str:
    head = f"{seq} "
    return head + "x" * max(0, size - len(head))


class EchoUser(WebSocketUser):
    """``echo``: one connection, request/response."""

    scenario = "echo"

    def on_start(self) -> None:
        self.seq = 0
        self.size = getattr(self.environment.parsed_options, "message_size", 64)

    @task
    def round_trip(self) -> None:
        ws = self.ws or self.connect()
        if ws is not None:
            self.seq += 1
            self.echo(ws, payload(self.size, self.seq))


class ChurnUser(WebSocketUser):
    """``churn``: connect, a few echoes, close, think, again."""

    scenario = "churn"

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.messages = getattr(options, "churn_messages", 3)
        self.size = getattr(options, "message_size", 64)

    @task
    def session(self) -> None:
        ws = self.connect()
        if ws is None:
            return
        for seq in range(self.messages):
            if not self.echo(ws, payload(self.size, seq)):
                return
        self.close()


class ChatUser(WebSocketUser):
    """``chat``: a member of one room; says something now and then, hears everyone.

    A message is ``/say ROOM USER SEQ SENT_AT WORKER`` (``time.time()`` of
    the publisher: load generator and server share the host clock; WORKER:
    the publisher's worker, from ``joined ROOM on worker N``); it comes back
    to every member as ``[ROOM] USER SEQ SENT_AT WORKER``. A reader greenlet takes
    everything the connection receives.
    """

    scenario = "chat"

    def on_start(self) -> None:
        number = next(_user_numbers)
        room_size = max(1, getattr(self.environment.parsed_options, "room_size", 10))
        self.user_id = f"u{number}"
        self.room = f"room-{number // room_size}"
        self.prefix = f"[{self.room}] "
        self.seq = 0
        self.last_seen: dict[str, int] = {}
        self.worker = "?"  # the worker holding our connection, from "joined ROOM on worker N"
        self.reader: gevent.Greenlet | None = None

    def join(self) -> websocket.WebSocket | None:
        """Connect, ``/join`` the room, start the reader; None after a reported failure."""
        ws = self.connect()
        if ws is None:
            return None
        start = time.perf_counter()
        try:
            ws.send(f"/join {self.room}")
            early = []  # room messages that were faster than our "joined"
            while True:
                message = receive(ws)
                if isinstance(message, str) and message.startswith(self.prefix):
                    early.append(message)
                    continue
                if not (isinstance(message, str) and message.startswith(f"joined {self.room} ")):
                    raise UnexpectedReply(f"expected 'joined', got {str(message)[:60]!r}")
                self.worker = message.rsplit(" ", 1)[-1]
                break
        except Exception as exc:
            self.report("join", start, exception=exc)
            self.drop()
            return None
        self.report("join", start, len(message))
        for message in early:
            self.heard(message)
        ws.settimeout(None)  # a quiet room is not a failure; the reader waits as long as it takes
        self.reader = gevent.spawn(self.read, ws)
        return ws

    def read(self, ws: websocket.WebSocket) -> None:
        try:
            while True:
                message = receive(ws)
                if isinstance(message, str) and message.startswith(self.prefix):
                    self.heard(message)
                else:
                    raise UnexpectedReply(f"expected a room message, got {str(message)[:60]!r}")
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            if self.ws is ws:  # not our own close
                self.report("receive", time.perf_counter(), exception=exc)
                self.drop()

    def heard(self, message: str) -> None:
        now = time.time()
        try:
            user, seq_text, sent_text, worker = message[len(self.prefix):].split(" ")
            seq, sent_at = int(seq_text), float(sent_text)
        except ValueError:
            self.report("chat fanout", time.perf_counter(),
                        exception=UnexpectedReply(f"malformed room message {message[:60]!r}"))
            return
        last = self.last_seen.get(user)
        self.last_seen[user] = seq
        if last is not None and seq != last + 1:
            self.report("chat fanout", time.perf_counter(), response_time=0.0, exception=MessagesLost(
                f"{seq - last - 1} messages of one publisher lost" if seq > last + 1
                else "a publisher's messages arrived out of order"))
        name = "chat fanout (same worker)" if worker == self.worker else "chat fanout (other worker)"
        self.report(name, 0.0, len(message), response_time=max(0.0, (now - sent_at) * 1000))

    @task
    def say(self) -> None:
        ws = self.ws or self.join()
        if ws is None:
            return
        self.seq += 1
        try:
            ws.send(f"/say {self.room} {self.user_id} {self.seq} {time.time():.6f} {self.worker}")
        except Exception as exc:
            self.report("say", time.perf_counter(), exception=exc)
            self.drop()

    def drop(self) -> None:
        super().drop()
        self.stop_reader()

    def stop_reader(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True)

    def on_stop(self) -> None:
        self.stop_reader()
        super().on_stop()


__all__ = ["ChatUser", "ChurnUser", "EchoUser", "ServerClosed"]
