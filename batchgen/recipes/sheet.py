"""Read a recipe's product sheet: CSV, TSV, JSONL, Parquet or XLSX rows with line numbers.

Consumes the sheet a recipe names; produces `Row` records (the row's line,
its cells as text, and any problem with the row itself) one at a time, so a
50,000-row sheet is never held in memory.

A sheet is read by the job reader's sources (`batchgen.jobs.sources`) with
the `SHEET` table: every named column kept as written, none required. So a
sheet gets what a job file gets: a cap on line length, a clear problem for
UTF-16 and for each line that is not UTF-8, physical line numbers (a row
spanning lines carries the line it starts on), XLSX sheet rows, Parquet rows
numbered from 1, and the same text for a typed cell. Rows whose cells are
all empty are skipped. Cells become the text a pattern receives
(`cell_text`), the same rule the recipe's own ``[vars]`` and matrix values
follow.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import InputProblem
from batchgen.jobs.columns import DEFAULT_OPTIONS, ReadOptions
from batchgen.jobs.reader import MAX_LINE_BYTES
from batchgen.jobs.sources import Table, iter_source, table_header
from batchgen.jobs.sources import cell_text as scalar_text
from batchgen.jobs.workbook import open_sheet

SHEET = Table(
    noun="sheet",
    formats={
        ".csv": "csv",
        ".tsv": "tsv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".parquet": "parquet",
        ".pq": "parquet",
        ".xlsx": "xlsx",
    },
    known=None,
    too_wide="{extra} more cell(s) than the header has columns",
    sheet_hint='set sheet_name = "{sheet}" in the recipe',
)


@dataclass
class Row:
    """`file`: what messages call the row's file when it is not the sheet's
    path (an XLSX sheet's rows: `products.xlsx [Products]`)."""

    line: int
    values: dict[str, str]
    problem: str = ""
    file: str = ""


def sheet_kind(path: Path) -> str | None:
    return SHEET.formats.get(path.suffix.lower())


def cell_text(value: object) -> str:
    """A sheet or TOML value as the text a pattern receives: a typed cell as the
    job reader reads it (`12` not `12.0`, `true`), an empty one as "", a list as
    its items joined by ", ", a table as JSON, anything else (a date) as Python
    prints it."""
    if isinstance(value, list | tuple):
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    try:
        return scalar_text(value) or ""
    except TypeError:
        return str(value)


def csv_columns(path: Path, options: ReadOptions = DEFAULT_OPTIONS) -> list[str] | None:
    """A CSV, TSV or XLSX header's column names; None for other kinds of sheet,
    or if unreadable (the row pass says why)."""
    return table_header(path, MAX_LINE_BYTES, SHEET, options)


def sheet_header(
    path: Path, options: ReadOptions = DEFAULT_OPTIONS
) -> tuple[list[str] | None, str]:
    """`csv_columns` and what messages call the header's file (an XLSX sheet
    of a workbook with several: `products.xlsx [Products]`)."""
    label = str(path)
    if sheet_kind(path) == "xlsx":
        sheet = open_sheet(path, label, options.sheet)
        if isinstance(sheet, InputProblem):
            return None, label
        sheet.records.close()
        label = sheet.label
    return csv_columns(path, options), label


def other_sheet_with(
    path: Path, columns: set[str], options: ReadOptions = DEFAULT_OPTIONS
) -> tuple[str, str] | None:
    """(the sheet read, the one other sheet that has every one of `columns`),
    when the sheet was not chosen and exactly one other has them; else None."""
    if sheet_kind(path) != "xlsx" or options.sheet is not None:
        return None
    sheet = open_sheet(path, str(path), None)
    if isinstance(sheet, InputProblem):
        return None
    with contextlib.closing(sheet.records):
        names = sheet.others_with(lambda row: columns <= {str(c).strip() for c in row if c})
    return (sheet.title, names[0]) if len(names) == 1 else None


def read_rows(path: Path, options: ReadOptions = DEFAULT_OPTIONS) -> Iterator[Row]:
    """Stream rows with their line numbers; never loads the whole sheet. A row or
    a sheet that cannot be read becomes a row carrying the problem (line 0:
    the whole sheet). `options`: the delimiter and the XLSX sheet."""
    for item in iter_source(path, MAX_LINE_BYTES, SHEET, options):
        if isinstance(item, InputProblem):
            file = item.file if item.file != str(path) else ""
            yield Row(item.line, {}, item.message, file)
        else:
            values = {str(k): cell_text(v) for k, v in item.fields.items()}
            yield Row(item.line, values, file=item.file)


def missing_columns(
    sheet: Path, needed: Mapping[str, str], given: set[str], options: ReadOptions
) -> tuple[set[str], list[InputProblem]]:
    """The `needed` columns (name -> what needs it) the sheet's header lacks and
    not `given` by the recipe's [vars], with a problem for each at line 1; in
    a workbook, naming the one other sheet that has them."""
    header, label = sheet_header(sheet, options)
    if header is None:
        return set(), []
    columns = set(header)
    missing = {name for name in needed if name not in columns and name not in given}
    other = other_sheet_with(sheet, missing, options) if missing else None
    hint = ""
    if other is not None:
        has = "has them" if len(missing) > 1 else "has it"
        hint = f"; sheet {other[1]!r} {has}: set sheet_name = {other[1]!r} in the recipe"
    problems = []
    for name, user in needed.items():
        if name in missing:
            message = f"column {name!r} is missing (needed by {user}){hint}"
            problems.append(InputProblem(label, 1, name, message))
            hint = ""
    return missing, problems
