"""The size rules: no file over 500 lines and no function over 60 in the library, the agent and the
scripts, except the ones docs/DESIGN.md section 7 lists, with their current sizes (so the table
can never go stale: a listed file that shrank below the limit, or grew, fails here too)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
"""Counted from ``def`` to the function's last line, docstring included (decorators not)."""


def _sources() -> list[Path]:
    files = sorted(ROOT.glob("*.py"))
    for package in ("pipeline", "ppo_approach"):
        files += sorted((ROOT / package).rglob("*.py"))
    return files


def _functions(tree: ast.AST, prefix: str) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of every function and method, nested ones included."""
    found: list[tuple[str, int]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{node.name}"
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            found.append((name, end - node.lineno + 1))
            found += _functions(node, name)
        elif isinstance(node, ast.ClassDef):
            found += _functions(node, f"{prefix}.{node.name}")
    return found


def measured() -> dict[str, int]:
    """Every file over :data:`MAX_FILE_LINES` (by path) and every function over
    :data:`MAX_FUNCTION_LINES` (by ``module.qualname``), with its size now."""
    over: dict[str, int] = {}
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            over[rel.as_posix()] = lines
        module = ".".join(rel.with_suffix("").parts)
        for name, length in _functions(ast.parse(text), module):
            if length > MAX_FUNCTION_LINES:
                over[name] = length
    return over


ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \|")


def documented() -> dict[str, int]:
    """The exception table of docs/DESIGN.md section 7: ``{file or function: lines}``."""
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    section = text.split("## 7. Exceptions to the size rules", 1)[1]
    return {m.group(1): int(m.group(2)) for m in map(ROW.match, section.splitlines()) if m}


def test_every_oversized_file_and_function_is_listed_with_its_size() -> None:
    now, listed = measured(), documented()
    unlisted = {k: v for k, v in now.items() if k not in listed}
    stale = {k: v for k, v in listed.items() if k not in now}
    wrong = {k: (listed[k], now[k]) for k in now.keys() & listed.keys() if listed[k] != now[k]}
    assert unlisted == {}, f"over the limit and not in docs/DESIGN.md section 7: {unlisted}"
    assert stale == {}, f"listed in docs/DESIGN.md section 7 but within the limit now: {stale}"
    assert wrong == {}, f"listed with another size (listed, now): {wrong}"


def test_the_exception_table_is_short() -> None:
    """The exceptions are the few places where one reason to change is long, not a habit."""
    assert len(documented()) <= 12


def test_the_measure_counts_from_def_to_the_last_line(tmp_path: Path) -> None:
    source = "class A:\n    @property\n    def f(self):\n        '''doc'''\n        return 1\n"
    assert _functions(ast.parse(source), "m") == [("m.A.f", 3)]
