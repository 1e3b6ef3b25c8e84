"""Connection.has_data_to_send and frames.final_header against what they summarize."""

from __future__ import annotations

import pytest

from shardws.protocol.connection import Connection
from shardws.protocol.frames import OP_BINARY, OP_TEXT, final_header, serialize_final_frame


def test_has_data_to_send_tells_whether_data_to_send_returns_something() -> None:
    connection = Connection()
    assert connection.has_data_to_send() is False
    connection.send_text("hi")
    assert connection.has_data_to_send() is True
    assert connection.data_to_send()
    assert connection.has_data_to_send() is False


# Payload lengths around each header size (7-bit, 16-bit, 64-bit lengths).
@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_final_header_is_the_head_of_serialize_final_frame(opcode: int, n: int) -> None:
    payload = b"x" * n
    header = final_header(opcode, n)
    assert header + payload == serialize_final_frame(opcode, payload)
