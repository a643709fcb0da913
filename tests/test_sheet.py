"""Product sheets are read by the job reader's sources: the same hardening, line numbers,
formats (XLSX included) and the same text for a typed cell as a job file."""

from __future__ import annotations

import decimal
import json
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest

from batchgen.jobs import sources
from batchgen.jobs.reader import read_jobs
from batchgen.recipes.sheet import SHEET, cell_text, csv_columns, read_rows
from tests.test_expand import (
    COLUMNS,
    PACK,
    expand,
    make_photo,
    problems,
    product,
    recipe,
    write_csv,
)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """As in test_expand: a photo and a two-product CSV sheet; recipes go next to it."""
    make_photo(tmp_path / "photos" / "mug.png")
    write_csv(tmp_path / "products.csv", [product("A1"), product("B2")])
    return tmp_path


def xlsx(path: Path, rows: list[list[Any]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_an_xlsx_sheet_expands_with_sheet_row_numbers(shop: Path) -> None:
    rows: list[list[Any]] = [COLUMNS, product("A1"), [], product("B2", name="")]
    xlsx(shop / "products.xlsx", rows)
    found = problems(recipe(shop, PACK.replace("products.csv", "products.xlsx")))
    assert [(p.line, p.field) for p in found] == [(4, "name")]
    assert csv_columns(shop / "products.xlsx") == COLUMNS
    xlsx(shop / "products.xlsx", [COLUMNS, product("A1")])
    jobs = expand(recipe(shop, PACK.replace("products.csv", "products.xlsx")))
    assert [j["id"] for j in jobs] == ["A1-white_bg", "A1-scene", "A1-detail"]


def test_a_missing_xlsx_column_is_reported_once_at_the_header(shop: Path) -> None:
    header = [c for c in COLUMNS if c != "scene"]
    rows = [[v for c, v in zip(COLUMNS, product(s), strict=True) if c != "scene"] for s in "AB"]
    xlsx(shop / "products.xlsx", [header, *rows])
    found = problems(recipe(shop, PACK.replace("products.csv", "products.xlsx")))
    assert [(p.line, p.field) for p in found] == [(1, "scene")]


CELLS = [True, False, 12.0, 2.5, 7, 0, float("nan"), None, "  as typed ", decimal.Decimal("1.50")]


@pytest.mark.parametrize("value", CELLS, ids=repr)
def test_one_text_for_a_typed_cell(value: object) -> None:
    """A sheet value reads as the job reader reads the same cell (an empty cell: "")."""
    assert cell_text(value) == (sources.cell_text(value) or "")


def test_a_job_file_and_a_sheet_read_the_same_workbook_alike(tmp_path: Path) -> None:
    """`True` was "True" in a job and "true" in a sheet; 12.0 is "12" in both."""
    path = xlsx(tmp_path / "jobs.xlsx", [["id", "prompt"], [12.0, True], ["b", 2.5]])
    jobs = [(job.id, job.prompt) for job in read_jobs([path])]
    rows = [(row.values["id"], row.values["prompt"]) for row in read_rows(path)]
    assert jobs == rows == [("12", "true"), ("b", "2.5")]


def test_lists_tables_and_dates_in_a_sheet_read_as_text() -> None:
    import datetime

    assert cell_text([1.0, True, "x"]) == "1, true, x"
    assert cell_text({"k": "v"}) == '{"k": "v"}'
    assert cell_text(datetime.date(2025, 1, 2)) == "2025-01-02"


def test_each_line_that_is_not_utf8_is_its_own_problem(shop: Path) -> None:
    rows = [",".join(COLUMNS), ",".join(product("A1")), ",".join(product("B2", name="café"))]
    text = "\n".join(rows) + "\n" + ",".join(product("C3")) + "\n"
    (shop / "products.csv").write_bytes(text.encode("latin-1"))
    found = problems(recipe(shop, PACK))
    assert [p.line for p in found] == [3]
    assert "not valid UTF-8 (byte 0xe9" in found[0].message


def test_a_utf16_sheet_is_one_problem(shop: Path) -> None:
    rows = [",".join(COLUMNS), ",".join(product("A1"))]
    (shop / "products.csv").write_bytes(("\n".join(rows) + "\n").encode("utf-16"))
    found = problems(recipe(shop, PACK))
    assert [(p.line, p.message) for p in found] == [(1, "file is UTF-16 encoded; save it as UTF-8")]


def test_a_line_over_the_cap_is_a_problem_not_a_memory_spike(tmp_path: Path) -> None:
    path = tmp_path / "products.jsonl"
    long_row = json.dumps({"sku": "B2", "name": "x" * 500})
    path.write_text(f'{{"sku": "A1"}}\n{long_row}\n{{"sku": "C3"}}\n', encoding="utf-8")
    items = list(sources.iter_source(path, 100, SHEET))
    assert [(type(i).__name__, i.line) for i in items] == [
        ("RawRow", 1), ("InputProblem", 2), ("RawRow", 3),
    ]  # fmt: skip


def test_jsonl_sheet_lines_are_physical_lines(tmp_path: Path) -> None:
    """A carriage return or a line separator inside a value does not start a line."""
    path = tmp_path / "products.jsonl"
    rows = [{"sku": "A1", "note": "a\u2028b"}, {"sku": "B2", "note": "c\rd"}, {"sku": "C3"}]
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    path.write_bytes(path.read_bytes().replace(b"\\r", b"\r"))  # a raw CR inside a string
    got = [(row.line, row.values.get("sku"), row.problem[:14]) for row in read_rows(path)]
    assert got == [(1, "A1", ""), (2, None, "not valid JSON"), (3, "C3", "")]


def test_a_duplicated_sheet_column_is_named(shop: Path) -> None:
    (shop / "products.csv").write_text(
        ",".join([*COLUMNS, "name"]) + "\n" + ",".join([*product("A1"), "other"]) + "\n",
        encoding="utf-8",
    )
    found = problems(recipe(shop, PACK))
    assert [(p.line, p.message) for p in found] == [(1, "column 'name' appears twice")]


def test_a_sheet_missing_or_of_an_unknown_kind_names_the_sheet(tmp_path: Path) -> None:
    (gone,) = read_rows(tmp_path / "gone.csv")
    assert (gone.line, gone.problem) == (0, "sheet not found")
    (odd,) = read_rows(tmp_path / "products.txt")
    assert odd.problem.startswith("unsupported file type (.txt); use one of .csv,")
    assert ".xlsx" in odd.problem
