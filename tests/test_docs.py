"""The product's docs stand alone and stay true to the code they describe."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    ROOT / "ARCHITECTURE.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "batchgen").rglob("*.md")),
    *sorted((ROOT / "batchgen").rglob("*.py")),
    *sorted((ROOT / "sample_jobs").glob("*.toml")),
]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pointer_outside_the_repository(path: Path) -> None:
    """The team's notes live beside the repository; users never have them."""
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\.\./shared|/work/shared|shared/(design|gemini|style|scaleout)", text)


def test_the_recipe_schema_in_the_docs_is_the_one_in_the_code() -> None:
    source = (ROOT / "batchgen" / "recipes" / "schema.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    code_block = doc.split("::\n", 1)[1].split("\nA pack entry", 1)[0]
    page = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    page_block = page.split("```toml\n", 1)[1].split("```", 1)[0]
    assert textwrap.dedent(code_block).strip() == page_block.strip()


@pytest.mark.parametrize(
    "path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_every_repository_path_the_docs_name_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:batchgen|docs|scripts|tests|sample_jobs)/[\w./-]+)`", text))
    missing = sorted(p for p in named if not (ROOT / p.split("::")[0]).exists())
    assert not missing, f"{path.name} names files that do not exist: {missing}"
