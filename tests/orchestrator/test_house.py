"""The house stays walkable: no function in orchestrator/ longer than a screen, and
docs/architecture.md names every module of it (and only modules that exist)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LONGEST = 50   # lines, docstring included


def _functions(path: Path, base: Path = ROOT) -> list[tuple[int, str]]:
    """(length in lines, name) of every function and method in one file."""
    tree = ast.parse(path.read_text(), str(path))
    return [(node.end_lineno - node.lineno + 1, f"{path.relative_to(base)}:{node.lineno} {node.name}")
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno is not None]


def test_no_function_in_orchestrator_is_longer_than_fifty_lines():
    found = [f for p in sorted((ROOT / "orchestrator").rglob("*.py")) for f in _functions(p)]
    assert len(found) > 300   # the walk saw the package
    long = sorted((n, where) for n, where in found if n > LONGEST)
    assert not long, f"functions over {LONGEST} lines:\n" + "\n".join(f"{n} {w}" for n, w in long)


def test_the_length_check_counts_every_line_of_a_method(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(LONGEST))
    (tmp_path / "m.py").write_text(f"class C:\n    def long(self):\n        \"\"\"doc\"\"\"\n{body}\n\n    def short(self):\n"
                                   "        return 1\n")
    assert sorted(_functions(tmp_path / "m.py", tmp_path)) == [(2, "m.py:55 short"), (LONGEST + 2, "m.py:2 long")]


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = {str(p.relative_to(ROOT / "orchestrator")) for p in (ROOT / "orchestrator").rglob("*.py")
               if p.name != "__init__.py"}
    named = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", doc))
    missing = sorted(m for m in modules if m not in named)
    assert not missing, f"docs/architecture.md does not name: {missing}"
    gone = sorted(n for n in named if n not in modules)
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
