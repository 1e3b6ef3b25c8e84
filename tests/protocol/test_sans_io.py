"""shardws/protocol is sans-I/O: no module in it imports an I/O or clock module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shardws.protocol

FORBIDDEN = {"asyncio", "socket", "os", "time", "threading"}
PROTOCOL_DIR = Path(shardws.protocol.__file__).parent
MODULES = sorted(PROTOCOL_DIR.glob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    """Top-level names of every module imported anywhere in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.update(
                arg.value.split(".")[0] for arg in node.args[:1] if isinstance(arg, ast.Constant)
            )
    return names


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("import os", {"os"}),
        ("import os.path as p", {"os"}),
        ("from time import monotonic", {"time"}),
        ("def f():\n    import asyncio", {"asyncio"}),
        ("__import__('socket')", {"socket"}),
        ("from . import frames", set()),
        ("import shardws.speedups", {"shardws"}),
    ],
)
def test_detector(source: str, found: set[str]) -> None:
    assert imported_modules(ast.parse(source)) == found


def test_protocol_modules_found() -> None:
    names = {path.name for path in MODULES}
    assert {"__init__.py", "frames.py", "utf8.py", "connection.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=[path.name for path in MODULES])
def test_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert imported_modules(tree) & FORBIDDEN == set()
