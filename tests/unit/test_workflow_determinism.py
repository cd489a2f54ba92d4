"""The workflows run outside Temporal's sandbox (its per-run re-import doubled the CPU of a
deployment), so what the sandbox would refuse is refused here: no clock, randomness, I/O or
threads in workflow code; time and ids come from the ``workflow`` module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.py"))
FORBIDDEN_MODULES = {
    "time",
    "random",
    "uuid",
    "os",
    "socket",
    "threading",
    "subprocess",
    "httpx",
    "kubernetes",
    "requests",
    "urllib",
    "urllib3",
    "secrets",
    "datetime.datetime",
}
FORBIDDEN_CALLS = {"open", "print", "input"}
FORBIDDEN_ATTRIBUTES = {"now", "utcnow", "today", "sleep"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflow_code_has_no_clock_randomness_or_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
            problems.append(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"{node.func.id}() at line {node.lineno}")
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in FORBIDDEN_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id in ("workflow", "asyncio"))
        ):
            problems.append(f".{node.attr} at line {node.lineno}")
    assert not problems, f"{path.name}: {problems}"
