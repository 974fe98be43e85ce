"""The layering rule of docs/architecture.md: each folder is one layer and imports only downward.

Every import counts, the ones inside functions too (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# layer -> the layers it may import (itself included)
ALLOWED = {
    "backbone": {"backbone"},
    "tasks": {"backbone", "tasks"},
    "algorithms": {"backbone", "algorithms"},
    "evals": {"backbone", "tasks", "evals"},
    "app": {"backbone", "tasks", "algorithms", "evals", "app"},
    "commands": {"backbone", "tasks", "algorithms", "evals", "app", "commands"},
}


PACKAGES = {"harness.core": "backbone", "harness.tasks": "tasks", "algorithms": "algorithms", "evals": "evals",
            "harness.app": "app", "harness.commands": "commands", "harness.cli": "commands",
            "harness.__main__": "commands", "harness": "commands"}  # harness/__init__.py: the package's front door


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name of this project, by its package (None: a third-party or standard module;
    "unmapped": a project module in no layer's package, which the tests refuse)."""
    parts = module.split(".")
    if parts[0] not in ("harness", "algorithms", "evals"):
        return None
    for n in range(len(parts), 0, -1):
        layer = PACKAGES.get(".".join(parts[:n]))
        if layer is not None and (n > 1 or parts[0] != "harness" or len(parts) == 1):
            return layer
    return "unmapped"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported(path: Path, package: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every project import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text())
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from harness import tasks` imports the module harness.tasks; `from m import f`: m.f, whose layer is
            # m's (the import graph shortens it to the module m)
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


SOURCES = sorted(p for folder in ("harness", "algorithms", "evals") for p in (ROOT / folder).rglob("*.py"))


def test_every_source_file_has_a_layer():
    """Every file sits in a layer's package: there is no default bucket."""
    unmapped = [str(p.relative_to(ROOT)) for p in SOURCES if layer_of(module_name(p)) in (None, "unmapped")]
    assert SOURCES and not unmapped, unmapped


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_downward(layer):
    wrong = set()
    for path in SOURCES:
        if layer_of(module_name(path)) != layer:
            continue
        for line, module in imported(path):
            target = layer_of(module)
            if target is not None and target not in ALLOWED[layer]:
                wrong.add(f"{path.relative_to(ROOT)}:{line} imports {module} ({target})")
    assert not wrong, f"{layer} may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(sorted(wrong))


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: an upward import (the backbone reaching into the application) is found, and a module
    outside every layer's package is unmapped."""
    assert layer_of("harness.core.train") == "backbone" and layer_of("harness.tasks.tldr") == "tasks"
    assert layer_of("harness.somewhere") == "unmapped" and layer_of("torch.nn") is None
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from harness.app.runner import run\n    from harness import tasks\n")
    found = [m for _, m in imported(probe, package="harness.core")]
    assert {layer_of(m) for m in found} == {"app", "tasks"}


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (every import, those inside functions too)."""
    names = {module_name(p) for p in SOURCES}
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        targets = set()
        for _, module in imported(path):
            while module and module not in names:  # `from harness.core.x import name` -> harness.core.x
                module = module.rpartition(".")[0]
            if module:
                targets.add(module)
        graph[module_name(path)] = targets - {module_name(path)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each an import cycle."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No two modules import each other, directly or through others (imports inside functions count)."""
    found = cycles(import_graph())
    assert not found, found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
