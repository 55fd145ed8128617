"""DESIGN.md's arrows: cli -> search -> runner -> compress -> methods -> loop -> analysis -> data/nn ->
ledger, nothing below importing from above (at module level or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dltricks

SHARED = {"errors", "imports", "recipe", "cores", "direction", "__version__"}  # what every package may use
ALLOWED = {
    "recipe": set(),
    "tricks": set(),
    "nn": set(),
    "data": set(),
    "ledger": set(),
    "analysis": {"nn", "data"},
    "loop": {"data", "nn", "analysis", "ledger"},
    "methods": {"loop", "data", "nn", "ledger", "analysis"},
    "compress": {"loop", "methods", "nn", "data", "analysis", "ledger"},
    "runner": {"compress", "methods", "loop", "data", "nn", "analysis", "ledger"},
    "search": {"runner", "compress", "methods", "loop", "data", "nn", "analysis", "ledger", "tricks"},
}


def imports(path: Path) -> set[str]:
    """The dltricks packages a module imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "dltricks" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        out |= {n.split(".")[1] for n in names if n.startswith("dltricks.")}
    return out


def test_no_package_imports_from_above_it():
    root = Path(dltricks.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if pkg not in ALLOWED:  # cli.py and the package's own __init__ may use everything
            continue
        for target in imports(path) - ALLOWED[pkg] - SHARED - {pkg}:
            wrong.append(f"{rel} imports dltricks.{target}")
    assert not wrong, wrong


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from dltricks.compress.runs import compress_trained\n")
    assert imports(f) == {"compress"}


def module_graph(root: Path) -> dict[str, set[str]]:
    """``dltricks.a.b`` -> the dltricks modules it imports, anywhere in it."""
    mods = {}
    for path in root.rglob("*.py"):
        parts = ("dltricks", *path.relative_to(root).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


# the packages whose circles are gone (data/ and search/ are being untangled elsewhere)
@pytest.mark.parametrize("pkg", ["loop", "methods", "compress", "runner"])
def test_no_import_circle_runs_through(pkg):
    graph = module_graph(Path(dltricks.__file__).parent)
    circles = [c for m in graph if m.startswith(f"dltricks.{pkg}") and (c := cycle_from(graph, m))]
    assert not circles, circles[0]


def test_the_circle_check_finds_one():
    assert cycle_from({"a": {"b"}, "b": {"c"}, "c": {"a"}}, "a") == ["a", "b", "c", "a"]
    assert cycle_from({"a": {"b"}, "b": set()}, "a") is None
