"""The package's layers, as ARCHITECTURE.md draws them, checked against the real imports.

A module imports only from its own package or from a layer below; the few
crossings the architecture names are listed here and nowhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "batchgen"

#: Lower number, lower layer. A top-level module is its own unit.
LAYERS: dict[str, int] = {
    "models": 0,
    "errors": 0,
    "config": 1,
    "catalogue": 1,
    "output": 2,
    "sim": 2,
    "jobs": 3,
    "store": 3,
    "recipes": 4,
    "report": 4,
    "review": 4,
    "engine": 5,
    "api": 6,
    "cli": 6,
    "__init__": 7,
    "__main__": 7,
}

#: Imports that cross sideways, named in ARCHITECTURE.md.
ALLOWED_SIDEWAYS = {("store", "jobs"), ("errors", "models"), ("config", "catalogue")}


#: Top-level modules that are one unit with another.
SAME_UNIT = {"catalogue_checks": "catalogue"}


def unit(module: str) -> str:
    """`batchgen.engine.pool` -> `engine`; `batchgen.models` -> `models`."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return SAME_UNIT.get(name, name)


def imports() -> list[tuple[str, str, str]]:
    found = []
    for path in ROOT.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "batchgen":
                    names = [f"batchgen.{alias.name}" for alias in node.names]
                found += [
                    (module, name, str(path)) for name in names if name.startswith("batchgen.")
                ]
            elif isinstance(node, ast.Import):
                found += [
                    (module, alias.name, str(path))
                    for alias in node.names
                    if alias.name.startswith("batchgen.")
                ]
    return found


def test_every_package_has_a_layer() -> None:
    units = {
        unit(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.rglob("*.py")
    }
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


@pytest.mark.parametrize(("module", "imported", "path"), imports())
def test_nothing_imports_upwards(module: str, imported: str, path: str) -> None:
    src, dst = unit(module), unit(imported)
    if src == dst or dst == "__version__":
        return
    if (src, dst) in ALLOWED_SIDEWAYS:
        return
    assert LAYERS[dst] < LAYERS[src], (
        f"{path}: {module} (layer {LAYERS[src]}) imports {imported} (layer {LAYERS[dst]})"
    )


def test_progress_does_not_import_the_pool() -> None:
    progress = [dst for src, dst, _ in imports() if src == "batchgen.engine.progress"]
    assert "batchgen.engine.pool" not in progress
