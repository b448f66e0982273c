"""The import graph of orchestrator/ (issue 25): no cycles, no private names across modules.

Every module under orchestrator/ is parsed with `ast`; every import counts, at the top of the
module and inside functions alike (a function-level import hides a cycle from Python's import
machinery, not from the design). An edge A -> B means A imports B or a name from B. Workloads
(workloads/) may import only the top-level package, and only its public names.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "orchestrator"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    # (target module, line, at top level?) for every import of an orchestrator module
    imports: list[tuple[str, int, bool]] = field(default_factory=list)
    # (target module, private name, line)
    private_uses: list[tuple[str, str, int]] = field(default_factory=list)


def _parse(paths: list[Path]) -> dict[str, Module]:
    mods = {}
    for path in paths:
        name = _module_name(path)
        mods[name] = Module(name, path, ast.parse(path.read_text(), str(path)), path.name == "__init__.py")
    return mods


def _orchestrator_modules() -> set[str]:
    return {_module_name(p) for p in (ROOT / PACKAGE).rglob("*.py")}


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _function_level(tree: ast.Module) -> set[int]:
    """ids of the import nodes that sit inside a function (or a class body's function)."""
    inner = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inner.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return inner


def _analyse(mod: Module, known: set[str]) -> None:
    """Fill mod.imports and mod.private_uses. `known` is every orchestrator module's name."""
    inner = _function_level(mod.tree)
    aliases: dict[str, str] = {}  # a local name bound to an orchestrator module -> that module
    for node in ast.walk(mod.tree):
        top = id(node) not in inner
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] != PACKAGE:
                    continue
                mod.imports.append((a.name, node.lineno, top))
                if _is_private(a.name.split(".")[-1]):
                    mod.private_uses.append((a.name.rsplit(".", 1)[0], a.name.split(".")[-1], node.lineno))
                # `import orchestrator.x` binds `orchestrator`; `import orchestrator.x as y` binds y
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    aliases[PACKAGE] = PACKAGE
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(mod, node)
            if source.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                submodule = f"{source}.{a.name}"
                if submodule in known:  # `from orchestrator import x`: the module x
                    mod.imports.append((submodule, node.lineno, top))
                    aliases[a.asname or a.name] = submodule
                    if _is_private(a.name):
                        mod.private_uses.append((source, a.name, node.lineno))
                    continue
                mod.imports.append((source, node.lineno, top))
                if _is_private(a.name) and source != mod.name:
                    mod.private_uses.append((source, a.name, node.lineno))
    # `x._y` where x is a local name for an orchestrator module (orchestrator.x._y included)
    for node in ast.walk(mod.tree):
        if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
            continue
        dotted = _dotted(node.value)
        if dotted is None or dotted.split(".")[0] not in aliases:
            continue
        head, _, rest = dotted.partition(".")
        target = aliases[head] + (f".{rest}" if rest else "")
        if target in known and target != mod.name:
            mod.private_uses.append((target, node.attr, node.lineno))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def _graph() -> tuple[dict[str, Module], dict[str, set[str]]]:
    known = _orchestrator_modules()
    mods = _parse(sorted((ROOT / PACKAGE).rglob("*.py")))
    graph: dict[str, set[str]] = {}
    for mod in mods.values():
        _analyse(mod, known)
        graph[mod.name] = {t for t, _, _ in mod.imports if t in known and t != mod.name}
    return mods, graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each with one cycle
    through it as a path [a, b, ..., a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, set(c)) for c in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself (breadth first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in strongly connected {sorted(component)}")


def _where(mods: dict[str, Module], src: str, dst: str) -> str:
    lines = sorted({line for t, line, _ in mods[src].imports if t == dst})
    return f"{mods[src].path.relative_to(ROOT)}:{','.join(map(str, lines))}"


def test_no_import_cycles():
    mods, graph = _graph()
    assert {"orchestrator", "orchestrator.api", "orchestrator.run.execute"} <= set(graph)   # the walk found the package
    cycles = _cycles(graph)
    message = []
    for cycle in cycles:
        message.append(" -> ".join(cycle))
        message += [f"    {a} -> {b} at {_where(mods, a, b)}" for a, b in zip(cycle, cycle[1:])]
    assert not cycles, "import cycles among orchestrator modules:\n" + "\n".join(message)


# The rooms of orchestrator/ (docs/architecture.md), from the ground up: a module imports only its
# own room, the rooms below it, and the shared leaves at the top of the package. cli and api stand
# on everything.
ROOMS = ["results", "study", "run", "report"]
LEAVES = {"orchestrator.errors", "orchestrator.formats", "orchestrator.version"}


def _room(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ROOMS:
        return ROOMS.index(parts[1])
    return None


def test_every_module_lives_in_a_room():
    mods, _ = _graph()
    top = {"orchestrator", "orchestrator.cli", "orchestrator.api", "orchestrator.__main__"} | LEAVES
    homeless = sorted(m for m in mods if _room(m) is None and m not in top)
    assert not homeless, f"modules outside the rooms {ROOMS}: {homeless}"
    for room in ROOMS:
        assert sum(_room(m) == ROOMS.index(room) for m in mods) >= 3, room


def _upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """The edges that break the rooms' order: a room importing a room above it or cli/api, or a
    leaf importing anything of the package."""
    wrong = []
    for a, targets in graph.items():
        for b in sorted(targets):
            if b in LEAVES or b == "orchestrator":
                continue
            ra, rb = _room(a), _room(b)
            if a in LEAVES or (ra is not None and (rb is None or rb > ra)):
                wrong.append((a, b))
    return wrong


def test_imports_run_one_way_between_rooms():
    mods, graph = _graph()
    wrong = [f"{a} -> {b} at {_where(mods, a, b)}" for a, b in _upward(graph)]
    assert not wrong, "imports that run up between rooms:\n" + "\n".join(sorted(wrong))


def test_the_room_rule_on_a_made_up_graph():
    graph = {
        "orchestrator.report.page": {"orchestrator.run.registry", "orchestrator.results.rows", "orchestrator.errors"},
        "orchestrator.run.trial": {"orchestrator.study.params", "orchestrator.report.page"},
        "orchestrator.results.dataset": {"orchestrator.api"},
        "orchestrator.formats": {"orchestrator.results.rows"},
        "orchestrator.cli": {"orchestrator.report.page", "orchestrator.api"},
    }
    assert _upward(graph) == [
        ("orchestrator.run.trial", "orchestrator.report.page"),
        ("orchestrator.results.dataset", "orchestrator.api"),
        ("orchestrator.formats", "orchestrator.results.rows"),
    ]


# Imports that ran the wrong way (issue 25), each gone with what it was for moved where it belongs.
WRONG_WAY = {
    ("orchestrator.run.prepare", "orchestrator.run.execute"): "Plan is in orchestrator/run/protocol.py",
    ("orchestrator.run.prepare", "orchestrator.report.page"): "write_report and study_rows are in report",
    ("orchestrator.results.lock", "orchestrator.run.progress"): "fmt_duration is in orchestrator/formats.py",
    ("orchestrator.run.cache", "orchestrator.study.grid"): "canonical_json is in orchestrator/formats.py",
    ("orchestrator.run.groups", "orchestrator.run.bundle"): "bundle runs groups (split_with_groups, run_unit), not back",
}


def test_no_import_runs_the_wrong_way():
    mods, graph = _graph()
    found = [f"{a} -> {b} at {_where(mods, a, b)} ({why})" for (a, b), why in WRONG_WAY.items() if b in graph[a]]
    assert not found, "imports that run the wrong way:\n" + "\n".join(found)


def test_no_private_names_across_orchestrator_modules():
    mods, _ = _graph()
    uses = [
        f"{mod.path.relative_to(ROOT)}:{line}: {target}.{name}"
        for mod in mods.values() for target, name, line in mod.private_uses
    ]
    assert not uses, "private names used from another orchestrator module:\n" + "\n".join(sorted(set(uses)))


def _outside_the_public_names(mod: Module, known: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each use of orchestrator by a workload module that is not a public name of
    the top-level package: an import of a submodule (any form, at any level), a private name, or
    a submodule reached as an attribute of the package (``orchestrator.study.params.validate``)."""
    _analyse(mod, known)
    found = {(line, target) for target, line, _ in mod.imports if target != PACKAGE}
    found |= {(line, f"{target}.{name}") for target, name, line in mod.private_uses}
    bound = {a.asname or PACKAGE for node in ast.walk(mod.tree) if isinstance(node, ast.Import)
             for a in node.names if a.name.split(".")[0] == PACKAGE and (a.asname is None or a.name == PACKAGE)}
    for node in ast.walk(mod.tree):
        dotted = _dotted(node) if isinstance(node, ast.Attribute) else None
        head, _, rest = (dotted or "").partition(".")
        if head in bound and f"{PACKAGE}.{rest.split('.')[0]}" in known:
            found.add((node.lineno, f"{PACKAGE}.{rest.split('.')[0]}"))
    return sorted(found)


def test_workloads_use_only_public_names_of_orchestrator():
    """A workload imports the top-level package and nothing else of it: ``from orchestrator import
    Params`` (the names orchestrator/__init__.py gives), never ``orchestrator.study.params``."""
    known = _orchestrator_modules()
    mods = _parse(sorted((ROOT / "workloads").rglob("*.py")))
    assert "workloads.synthetic" in mods
    uses = [f"{mod.path.relative_to(ROOT)}:{line}: {what}"
            for mod in mods.values() for line, what in _outside_the_public_names(mod, known)]
    assert not uses, "workloads use orchestrator beyond its top-level public names:\n" + "\n".join(sorted(uses))


def test_what_workloads_import_is_public_and_light():
    """Every name a workload imports from orchestrator is in its __all__, and importing them in a
    fresh interpreter loads none of Ray, torch, pandas or pyarrow."""
    import subprocess
    import sys

    names = sorted({a.name for path in (ROOT / "workloads").rglob("*.py")
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module == PACKAGE and not node.level
                    for a in node.names})
    assert {"Params", "Metrics", "param", "Diverged", "TrialContext"} <= set(names)
    code = (f"import sys; from orchestrator import {', '.join(names)}; import orchestrator; "
            "print([m for m in ('ray', 'torch', 'pandas', 'pyarrow') if m in sys.modules]); "
            f"print(sorted(set({names!r}) - set(orchestrator.__all__)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:2] == ["[]", "[]"], p.stdout


def test_the_workload_rule_on_a_made_up_module():
    source = (
        "import orchestrator\n"
        "import orchestrator as overnight\n"
        "from orchestrator import Params, param\n"
        "from orchestrator.study.params import validate\n"
        "from orchestrator import study\n"
        "from orchestrator import _LAZY\n"
        "def later():\n"
        "    import orchestrator.run.trial as T\n"
        "    return orchestrator.results.rows.RESERVED, overnight.Diverged, orchestrator.workload\n"
    )
    mod = Module("workloads.made_up", ROOT / "workloads" / "made_up.py", ast.parse(source), False)
    assert _outside_the_public_names(mod, _orchestrator_modules()) == [
        (4, "orchestrator.study.params"), (5, "orchestrator.study"), (6, "orchestrator._LAZY"),
        (8, "orchestrator.run.trial"), (9, "orchestrator.results")]
    fine = Module("workloads.fine", ROOT / "workloads" / "fine.py", ast.parse(source.split("from orchestrator.study")[0]),
                  False)
    assert _outside_the_public_names(fine, _orchestrator_modules()) == []


def test_the_graph_sees_every_kind_of_import():
    """The walk itself: each import form becomes an edge, and a private name is seen in each form."""
    known = {"orchestrator", "orchestrator.a", "orchestrator.b", "orchestrator.c", "orchestrator.d",
             "orchestrator.e", "orchestrator.f", "orchestrator.g"}
    source = (
        "import orchestrator.b\n"
        "from orchestrator import c as C\n"
        "from . import d\n"
        "from .e import public, _hidden\n"
        "def later():\n"
        "    import orchestrator.f as F\n"
        "    from orchestrator.g import thing\n"
        "    return F._private, C._other, orchestrator.b._deep, d.fine, thing\n"
    )
    mod = Module("orchestrator.a", ROOT / "orchestrator" / "a.py", ast.parse(source), False)
    _analyse(mod, known)
    assert {(t, top) for t, _, top in mod.imports} == {
        ("orchestrator.b", True), ("orchestrator.c", True), ("orchestrator.d", True),
        ("orchestrator.e", True), ("orchestrator.f", False), ("orchestrator.g", False)}
    assert sorted((t, n) for t, n, _ in mod.private_uses) == [
        ("orchestrator.b", "_deep"), ("orchestrator.c", "_other"), ("orchestrator.e", "_hidden"),
        ("orchestrator.f", "_private")]
    assert _cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z", "x"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []
