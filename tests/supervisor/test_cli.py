"""The command line is generated from shardws/config.py (no process started here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shardws.cli import _settings, build_parser, format_status, settings_markdown
from shardws.config import ServeSettings, SupervisorSettings, setting_fields

ROOT = Path(__file__).resolve().parents[2]

PARSE_CASES = [  # (flags, settings class, field, expected value)
    ([], ServeSettings, "max_size", 2**20),
    (["--max-size", "0"], ServeSettings, "max_size", None),
    (["--max-size", "none"], ServeSettings, "max_size", None),
    (["--max-size", "65536"], ServeSettings, "max_size", 65536),
    (["--compression", "none"], ServeSettings, "compression", None),
    (["--compression", "deflate"], ServeSettings, "compression", "deflate"),
    (["--ping-interval", "0"], ServeSettings, "ping_interval", None),
    (["--ping-interval", "2.5"], ServeSettings, "ping_interval", 2.5),
    (["--ping-timeout", "0"], ServeSettings, "ping_timeout", 0.0),
    (["--subprotocols", "chat, superchat"], ServeSettings, "subprotocols", ("chat", "superchat")),
    (["--origins", "https://a.example,https://b.example"], ServeSettings, "origins",
     ("https://a.example", "https://b.example")),
    (["--server-header", ""], ServeSettings, "server_header", ""),
    (["--backlog", "16"], ServeSettings, "backlog", 16),
    (["--workers", "3"], SupervisorSettings, "workers", 3),
    (["--graceful-timeout", "1.5"], SupervisorSettings, "graceful_timeout", 1.5),
    (["--heartbeat-timeout", "2"], SupervisorSettings, "heartbeat_timeout", 2.0),
    (["--pid-file", "/run/x.pid"], SupervisorSettings, "pid_file", "/run/x.pid"),
]


@pytest.mark.parametrize(("flags", "cls", "name", "expected"), PARSE_CASES)
def test_flags_become_settings(flags, cls, name, expected):
    args = build_parser().parse_args(["serve", "m:h", *flags])
    assert getattr(_settings(cls, args), name) == expected


BAD_FLAGS = [
    ["--max-size", "big"],
    ["--max-size", "-1"],
    ["--compression", "gzip"],
    ["--workers", "two"],
    ["--graceful-timeout", "soon"],
]


@pytest.mark.parametrize("flags", BAD_FLAGS)
def test_bad_values_are_usage_errors(flags, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serve", "m:h", *flags])
    assert exc.value.code == 2
    assert flags[0] in capsys.readouterr().err


@pytest.mark.parametrize("cls", [ServeSettings, SupervisorSettings])
def test_every_setting_has_a_flag_with_its_help(cls, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in setting_fields(cls):
        assert "--" + f.name.replace("_", "-") in text
        assert " ".join(f.metadata["help"].split()) in text


def test_serve_settings_cover_every_serve_kwarg():
    assert set(ServeSettings().serve_kwargs()) <= {f.name for f in dataclasses.fields(ServeSettings)}


def test_docs_settings_md_is_generated():
    assert (ROOT / "docs" / "settings.md").read_text() == settings_markdown()


def test_status_table_has_one_row_per_worker():
    row = {"id": 0, "pid": 11, "generation": 2, "state": "READY", "uptime": 3.0, "connections": 4,
           "messages_in": 5, "messages_out": 6, "bus_drops": 0, "rss": 3 * 2**20,
           "cpu_percent": 1.5, "heartbeat_age": 0.4}
    reply = {"supervisor": {"url": "ws://127.0.0.1:8000", "pid": 10, "workers": 2, "uptime": 9.0,
                            "stopping": False, "reloading": True},
             "workers": [row, {**row, "id": 1, "pid": 12, "rss": None, "cpu_percent": None}]}
    header, columns, first, second = format_status(reply).splitlines()
    assert "pid 10" in header and "RELOADING" in header
    assert columns.split() == ["ID", "PID", "GEN", "STATE", "UPTIME", "CONNS", "MSG_IN", "MSG_OUT",
                               "DROPS", "RSS", "CPU%", "HEARTBEAT"]
    assert first.split() == ["0", "11", "2", "READY", "3.0s", "4", "5", "6", "0", "3.0M", "1.5",
                             "0.4s", "ago"]
    assert second.split()[:2] == ["1", "12"] and second.split()[9:11] == ["-", "-"]
