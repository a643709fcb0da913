"""Every runtime dependency in pyproject.toml is imported by the package, and every
third-party module the package imports is a runtime dependency: what only tests or
scripts use lives in an extra."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import batchgen

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(batchgen.__file__).parent


def normalise(name: str) -> str:
    """PEP 503: `Pillow`, `pillow` and `PILLOW` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec) for spec in project["dependencies"])
    return {normalise(m.group(0)) for m in names if m}


#: Optional features (`pip install 'batchgen[pg]'`): the package they add, and the
#: only sub-package of batchgen that may import it (nothing loads it by default).
#: `s3` and `gcs` add fsspec and a store's driver; only `output/storage.py` imports
#: fsspec (the drivers are fsspec's to load).
FEATURE_EXTRAS = {
    "pg": "batchgen/store/pg/",
    "s3": "batchgen/output/storage.py",
    "gcs": "batchgen/output/storage.py",
    "ray": "batchgen/engine/ray_",
}


def feature_dependencies() -> dict[str, set[str]]:
    """Each feature extra's distributions."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    found = {}
    for extra in FEATURE_EXTRAS:
        names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec) for spec in extras[extra])
        found[extra] = {normalise(m.group(0)) for m in names if m}
    return found


def distribution_of() -> dict[str, set[str]]:
    """Top-level import name -> the installed distributions providing it (`PIL` -> pillow)."""
    return {
        module: {normalise(d) for d in dists}
        for module, dists in importlib.metadata.packages_distributions().items()
    }


def imported_modules() -> dict[str, str]:
    """Top-level modules imported anywhere in the package (lazy imports included),
    each with one place that imports it."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def third_party(modules: dict[str, str]) -> dict[str, str]:
    return {
        m: where
        for m, where in modules.items()
        if m not in sys.stdlib_module_names and m != "batchgen" and not m.startswith("_")
    }


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    providers = distribution_of()
    imported = {dist for module in imported_modules() for dist in providers.get(module, ())}
    unused = sorted(runtime_dependencies() - imported)
    assert unused == [], f"declared but never imported by batchgen: {unused}; move to an extra"


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    providers = distribution_of()
    declared = runtime_dependencies()
    undeclared = {
        module: where
        for module, where in third_party(imported_modules()).items()
        if not providers.get(module, set()) & declared
    }
    features = feature_dependencies()
    for extra, home in FEATURE_EXTRAS.items():
        undeclared = {
            module: where
            for module, where in undeclared.items()
            if not (providers.get(module, set()) & features[extra] and where.startswith(home))
        }
    assert undeclared == {}, "imported by batchgen but not in [project] dependencies"


def test_a_feature_extra_is_imported_only_by_its_own_package() -> None:
    """psycopg (extra `pg`) is imported in `batchgen/store/pg/` and nowhere else, fsspec
    (extras `s3`, `gcs`) in `batchgen/output/storage.py`, so the default path never
    needs them."""
    providers = distribution_of()
    features = feature_dependencies()
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "level", 0) == 0:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                for name in names:
                    for extra, home in FEATURE_EXTRAS.items():
                        if providers.get(name.split(".")[0], set()) & features[extra]:
                            assert where.startswith(home), f"{where} imports {name}"


def test_the_check_sees_lazy_imports_and_maps_import_names() -> None:
    """Guards the two tests above against passing vacuously."""
    modules = imported_modules()
    assert {"aiohttp", "PIL", "openpyxl", "pyarrow", "tqdm"} <= set(modules)
    assert "openpyxl" in modules  # imported inside a function only
    assert distribution_of()["PIL"] == {"pillow"}
    assert {"aiohttp", "pillow"} <= runtime_dependencies()
