"""The package's layering, read from the source with `ast` (function-level imports included):
dependencies point one way, ir <- nn <- exporters, importers <- backends <- cli; nothing imports
the CLI; and no two modules import each other, directly or around a loop."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "polyir"

#: subpackage -> the subpackages it may import ("polyir" is the public surface, __init__.py)
ALLOWED = {
    "ir": set(),
    "nn": {"ir"},
    "exporters": {"ir", "nn"},
    "importers": {"ir", "nn"},
    "backends": {"ir", "nn", "importers"},
    "cli": {"polyir", "ir", "nn", "exporters", "importers", "backends"},
    "polyir": {"ir", "nn", "exporters", "importers", "backends"},
}
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The polyir modules `name` imports anywhere in its source."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = (package[:len(package) - node.level + 1] if node.level else [])
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in MODULES else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
    out = set()
    for target in found:
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != name:
            out.add(target)
    return out


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "polyir"


def test_dependencies_point_one_way():
    wrong = sorted((m, d) for m, deps in GRAPH.items() for d in deps
                   if layer(d) != layer(m) and layer(d) not in ALLOWED[layer(m)])
    assert not wrong, f"imports against the layering: {wrong}"


def test_the_cli_is_imported_by_nothing_else():
    assert not [m for m, deps in GRAPH.items() if layer(m) != "cli"
                and any(layer(d) == "cli" for d in deps)]


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [("a", "b", "c")]


def test_no_import_cycles():
    assert not cycles(GRAPH)
