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


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name of this project (None: a third-party or standard module)."""
    parts = module.split(".")
    if parts[0] == "algorithms":
        return "algorithms"
    if parts[0] == "evals":
        return "evals"
    if parts[0] != "harness":
        return None
    if len(parts) == 1:
        return "backbone"
    return {"tasks": "tasks", "app": "app", "commands": "commands", "cli": "commands",
            "__main__": "commands"}.get(parts[1], "backbone")


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
            # `from harness import tasks` imports the module harness.tasks
            out += [(node.lineno, f"{name}.{a.name}" if layer_of(f"{name}.{a.name}") != layer_of(name) else name)
                    for a in node.names]
    return out


SOURCES = sorted(p for folder in ("harness", "algorithms", "evals") for p in (ROOT / folder).rglob("*.py"))


def test_every_source_file_has_a_layer():
    assert SOURCES and all(layer_of(module_name(p)) for p in SOURCES)


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
    """The checker itself: an upward import (the backbone reaching into the application) is found."""
    fake = ROOT / "harness" / "_layer_probe.py"
    assert layer_of(module_name(fake)) == "backbone"
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from harness.app.runner import run\n    from harness import tasks\n")
    found = [m for _, m in imported(probe, package="harness")]
    assert {layer_of(m) for m in found} == {"app", "tasks"}
