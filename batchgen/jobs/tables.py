"""What a table file is to the reader: a `Table`, its `RawRow`s, its header judged.

`Table` says what differs between job files and recipe product sheets (the
formats, which columns are kept, what the header must hold); `judge_header`
applies the column rules of `batchgen.jobs.columns` to a CSV, TSV or XLSX
header and words its problems: a missing required column names the columns
found, the one that looks meant (`'Promt'`), and, in a workbook, the other
sheet that has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from batchgen.errors import InputProblem
from batchgen.jobs.columns import (
    KNOWN_FIELDS,
    ReadOptions,
    normalise,
    resolve_header,
    suggestion,
)
from batchgen.jobs.workbook import Sheet

__all__ = ["FORMATS", "JOB_FILE", "RawRow", "SourceItem", "Table", "column_name", "judge_header"]

REQUIRED_FIELDS = ("id", "prompt")

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".xlsx": "xlsx",
}


@dataclass(frozen=True, slots=True)
class Table:
    """What one kind of file keeps from a table and what its header must hold.

    `known`: the columns kept, under the column rules of `jobs.columns` (a job
    file's fields: any other column is an error); None keeps every named
    column as written (a product sheet's, which a recipe names). `too_wide`:
    the message for a CSV row with more cells than its header (`{cells}`,
    `{width}`, `{extra}`). `sheet_hint`: how to pick another XLSX sheet."""

    noun: str
    formats: Mapping[str, str]
    known: tuple[str, ...] | None
    required: tuple[str, ...] = ()
    too_wide: str = (
        "row has {cells} cells but the header has {width} (a comma in an unquoted field?)"
    )
    sheet_hint: str = "use --sheet {sheet}"


JOB_FILE = Table("job file", FORMATS, KNOWN_FIELDS, REQUIRED_FIELDS)


@dataclass(frozen=True, slots=True)
class RawRow:
    """One record's known fields before validation.

    `table` is true for CSV, XLSX and Parquet, where a cell may hold a
    `;`-separated list or a number written as text; JSONL values are taken
    at their JSON type, so `"priority": "3"` is a type error there. `file`
    names the row's file when it is not its source's own (a recipe's jobs
    come from its sheet); empty otherwise.
    """

    line: int
    fields: Mapping[str, object]
    table: bool
    file: str = ""


SourceItem = RawRow | InputProblem


def judge_header(
    cells: Sequence[object],
    name: str,
    line: int,
    table: Table,
    options: ReadOptions,
    forced: str | None,
    sheet: Sheet | None,
) -> tuple[dict[str, int], tuple[int, ...]] | list[InputProblem]:
    """The header's columns (and unnamed ones), or its problems."""
    if table.known is None:
        problems = _sheet_header_problems(cells, name, line)
        return problems if problems else (_sheet_columns(cells), ())
    names = [column_name(c) for c in cells]
    header = resolve_header(names, table.required, options, forced)
    if not header.missing:
        found = [InputProblem(name, line, key, msg) for key, msg in header.problems]
        return found if found else (header.columns, header.blank)
    # Without its id and prompt this is likely not a job file at all (another
    # sheet, a product sheet given instead of its recipe): the missing columns
    # are the news, not every other column of the sheet.
    found = [InputProblem(name, line, key, msg) for key, msg in header.problems if key]
    hint = _other_sheet(sheet, header.missing, options, table)
    shown = ", ".join(repr(n) for n in names[:20])
    for key in header.missing:
        near = [n for n in names if suggestion(normalise(n)) == key]
        like = f"; is {near[0]!r} meant to be {key}?" if near else ""
        msg = f"missing column '{key}' (found {shown}){like}{hint}"
        found.append(InputProblem(name, line, key, msg))
        hint = ""  # said once, on the first
    return found


def _other_sheet(
    sheet: Sheet | None, missing: tuple[str, ...], options: ReadOptions, table: Table
) -> str:
    """ "; sheet 'Products' has them: use --sheet Products", when exactly one
    other sheet of the workbook has every required column."""
    if sheet is None or options.sheet is not None:
        return ""
    required = table.required

    def has(row: Sequence[object]) -> bool:
        names = resolve_header([column_name(c) for c in row], required, options)
        return not names.missing

    others = sheet.others_with(has)
    if len(others) != 1:
        return ""
    what = "column" if len(missing) == 1 else "columns"
    missing_text = ", ".join(repr(k) for k in missing)
    use = table.sheet_hint.format(sheet=others[0])
    return f"; sheet {sheet.title!r} has no {missing_text} {what}; sheet {others[0]!r} does: {use}"


def column_name(cell: object) -> str:
    return str(cell).strip() if cell is not None else ""


def _sheet_columns(header: Sequence[object]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(header):
        key = str(cell).strip() if cell is not None else ""
        if key and key not in columns:
            columns[key] = i
    return columns


def _sheet_header_problems(header: Sequence[object], name: str, line: int) -> list[InputProblem]:
    keys = [str(c).strip() if c is not None else "" for c in header]
    problems = []
    for key in dict.fromkeys(k for k in keys if k):
        if keys.count(key) > 1:
            problems.append(InputProblem(name, line, key, f"column '{key}' appears twice"))
    return problems
