"""Issue 13: workbooks with several sheets, for job files and recipes' product
sheets; ids made from SKUs in recipes (`{sku:slug}`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest

from batchgen.errors import InputError, InputProblem
from batchgen.jobs import reader
from batchgen.jobs.columns import ReadOptions
from batchgen.jobs.inputs import FileSource
from batchgen.recipes.expand import RecipeSource
from batchgen.recipes.templates import slug
from tests.conftest import batchgen
from tests.test_expand import COLUMNS, PACK, expand, make_photo, problems, product, recipe


def workbook(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


README: list[list[Any]] = [["How to fill this workbook"], ["one row per image"]]


def read_problems(source: Any) -> list[InputProblem]:
    with pytest.raises(InputError) as caught:
        reader.check([source], check_images=False)
    return caught.value.problems


# --- job files ----------------------------------------------------------------------------


@pytest.fixture
def jobs_xlsx(tmp_path: Path) -> Path:
    rows = [["ID", "Prompt", "Aspect Ratio"], ["a", "a cat", "16:9"], ["b", None, "1:1"]]
    return workbook(tmp_path / "jobs.xlsx", {"Readme": README, "Products": rows})


def test_a_readme_sheet_first_names_the_sheet_that_has_the_columns(jobs_xlsx: Path) -> None:
    checked = batchgen("validate", jobs_xlsx, key=None)
    assert checked.returncode == 2
    assert f"{jobs_xlsx} [Readme]:1: [id] missing column 'id'" in checked.stderr
    assert "sheet 'Products' does: use --sheet Products" in checked.stderr
    assert checked.stderr.count("--sheet Products") == 1


@pytest.mark.parametrize("sheet", ["Products", "products", "2"])
def test_sheet_by_name_or_number_and_rows_name_it(jobs_xlsx: Path, sheet: str) -> None:
    checked = batchgen("validate", jobs_xlsx, "--sheet", sheet, key=None)
    assert checked.returncode == 2
    assert f"{jobs_xlsx} [Products]:3: [prompt] prompt is required" in checked.stderr


def test_jobs_of_a_chosen_sheet_carry_it(jobs_xlsx: Path) -> None:
    wb = openpyxl.load_workbook(jobs_xlsx)
    wb["Products"]["B3"] = "a dog"
    wb.save(jobs_xlsx)
    jobs = list(reader.read_sources([FileSource(jobs_xlsx, ReadOptions.make(sheet="Products"))]))
    assert [(j.id, j.aspect_ratio, j.source, j.line) for j in jobs] == [
        ("a", "16:9", f"{jobs_xlsx} [Products]", 2),
        ("b", "1:1", f"{jobs_xlsx} [Products]", 3),
    ]


def test_an_unknown_sheet_lists_the_sheets(jobs_xlsx: Path) -> None:
    found = read_problems(FileSource(jobs_xlsx, ReadOptions.make(sheet="Prices")))
    assert [p.message for p in found] == [
        "no sheet 'Prices' in the workbook (its sheets: 'Readme', 'Products'); "
        "--sheet takes a name or a number from 1"
    ]


def test_no_hint_when_two_other_sheets_would_do(tmp_path: Path) -> None:
    good = [["id", "prompt"], ["a", "b"]]
    path = workbook(tmp_path / "j.xlsx", {"Readme": README, "A": good, "B": good})
    found = read_problems(FileSource(path))
    assert found[0].file == f"{path} [Readme]"
    assert "--sheet" not in found[0].message


# --- recipes ------------------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    make_photo(tmp_path / "photos" / "mug.png")
    products = [COLUMNS, product("A1"), product("B2", name="")]
    workbook(tmp_path / "products.xlsx", {"Readme": README, "Products": products})
    return tmp_path


XLSX_PACK = PACK.replace("products.csv", "products.xlsx")


def test_a_recipe_sheet_with_a_readme_first_says_to_set_sheet_name(shop: Path) -> None:
    found = problems(recipe(shop, XLSX_PACK))
    assert found[0].file == f"{shop / 'products.xlsx'} [Readme]"
    assert "set sheet_name = 'Products' in the recipe" in found[0].message


def test_sheet_name_in_the_recipe_and_rows_name_the_sheet(shop: Path) -> None:
    path = recipe(shop, 'sheet_name = "Products"\n' + XLSX_PACK)
    found = problems(path)
    assert [(p.file, p.line, p.field) for p in found] == [
        (f"{shop / 'products.xlsx'} [Products]", 3, "name")
    ]


def test_run_sheet_option_reaches_a_recipes_sheet(shop: Path) -> None:
    source = RecipeSource(recipe(shop, XLSX_PACK), ReadOptions.make(sheet="2"))
    found = read_problems(source)
    assert [(p.line, p.field) for p in found] == [(3, "name")]
    assert found[0].file.endswith("[Products]")


def test_a_semicolon_product_sheet_is_detected(shop: Path) -> None:
    lines = [";".join(COLUMNS), ";".join(product("A1"))]
    (shop / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [j["id"] for j in expand(recipe(shop, PACK))] == [
        "A1-white_bg",
        "A1-scene",
        "A1-detail",
    ]


# --- ids from SKUs ------------------------------------------------------------------------


def test_slug() -> None:
    assert slug("AB/123") == "ab-123"
    assert slug("  Crème Brûlée — 12×4 ") == "creme-brulee-12-4"
    assert slug("東京") == ""


def sku_sheet(shop: Path, skus: list[str]) -> None:
    rows = [product(s) for s in skus]
    lines = [",".join(COLUMNS), *(",".join(f'"{c}"' for c in r) for r in rows)]
    (shop / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_sku_with_a_slash_becomes_a_safe_id(shop: Path) -> None:
    sku_sheet(shop, ["AB/123", "Crème 7"])
    path = recipe(shop, PACK.replace('id = "{sku}"', 'id = "{sku:slug}"'))
    ids = [j["id"] for j in expand(path)]
    assert ids[0] == "ab-123-white_bg"
    assert "creme-7-detail" in ids
    # Without the slug the same sheet cannot be used at all.
    assert "path separator" in problems(recipe(shop, PACK))[0].message


def test_skus_that_slug_alike_are_an_error_naming_both_rows(shop: Path) -> None:
    sku_sheet(shop, ["AB/123", "B2", "ab 123"])
    found = problems(recipe(shop, PACK.replace('id = "{sku}"', 'id = "{sku:slug}"')))
    assert [(p.line, p.field) for p in found] == [(4, "sku")]
    assert found[0].message == (
        "duplicate id 'ab-123': 'ab 123' here and 'AB/123' on line 2 slug to the same id"
    )


def test_a_sku_with_nothing_to_slug_is_named(shop: Path) -> None:
    sku_sheet(shop, ["東京"])
    found = problems(recipe(shop, PACK.replace('id = "{sku}"', 'id = "{sku:slug}"')))
    assert "has no ASCII letter or digit" in found[0].message
