"""Turn one table file into a stream of raw rows and problems, per format.

Consumes a path; produces `RawRow`s (a row's fields, not yet validated) and
`InputProblem`s (a row or the whole file could not be read). Every format
reports its own notion of "line": JSONL the physical line, CSV/TSV the line a
record starts on (header = 1), XLSX the sheet row, Parquet the 1-based row
number. Nothing here raises for bad input: a reader that can be crashed by a
hostile file would turn one bad row into a lost run.

Job files and recipe product sheets are both read here, so both get every
rule about bytes (line caps, BOMs and UTF-16, per-line decoding, physical line
numbers); a `Table` says what differs: the formats, which columns are kept,
what the header must hold. `cell_text` is the one way a typed cell (an Excel
number, a Parquet boolean) becomes text for both.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from batchgen.errors import InputProblem
from batchgen.jobs.checks import human_size as _size
from batchgen.jobs.records import (
    UTF16,
    Record,
    Utf16Error,
    csv_records,
    filled,
    physical_lines,
    utf8_problem,
    xlsx_records,
)

#: Columns the reader understands; other columns (product sheets carry many)
#: are dropped as early as possible so they cost no memory.
KNOWN_FIELDS = (
    "id",
    "prompt",
    "images",
    "aspect_ratio",
    "tags",
    "priority",
    "model",
    "variant",
    "sizes",
    "image_size",
)
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

    `known`: the columns kept, matched case-insensitively (a job file's fields);
    None keeps every named column as written (a product sheet's, which a
    recipe names). `too_wide`: the message for a CSV row with more cells than
    its header (`{cells}`, `{width}`, `{extra}`)."""

    noun: str
    formats: Mapping[str, str]
    known: tuple[str, ...] | None
    required: tuple[str, ...] = ()
    too_wide: str = (
        "row has {cells} cells but the header has {width} (a comma in an unquoted field?)"
    )


JOB_FILE = Table("job file", FORMATS, KNOWN_FIELDS, REQUIRED_FIELDS)

_DELIMITERS = {"csv": ",", "tsv": "\t"}
_JSON_BLANK = " \t\r\n"
_BATCH_ROWS = 4096


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


def iter_source(path: Path, max_line_bytes: int, table: Table = JOB_FILE) -> Iterator[SourceItem]:
    """Yield the rows and problems of one file, in file order."""
    name = str(path)
    kind = table.formats.get(path.suffix.lower())
    if kind is None:
        allowed = ", ".join(sorted(table.formats))
        found = path.suffix or "no extension"
        yield InputProblem(name, 0, "", f"unsupported file type ({found}); use one of {allowed}")
        return
    noun = table.noun
    try:
        if kind == "jsonl":
            yield from _iter_jsonl(path, name, max_line_bytes, table)
        elif kind in _DELIMITERS:
            records = csv_records(path, name, max_line_bytes, _DELIMITERS[kind])
            yield from _table_rows(records, name, table, check_width=True)
        elif kind == "parquet":
            yield from _iter_parquet(path, name, table)
        else:
            yield from _table_rows(xlsx_records(path, name), name, table, check_width=False)
    except FileNotFoundError:
        yield InputProblem(name, 0, "", f"{noun} not found")
    except IsADirectoryError:
        yield InputProblem(name, 0, "", f"{noun} is a directory")
    except PermissionError:
        yield InputProblem(name, 0, "", f"{noun} cannot be read (permission denied)")
    except OSError as exc:
        yield InputProblem(name, 0, "", f"{noun} cannot be read: {exc.strerror or exc}")


def table_header(path: Path, max_line_bytes: int, table: Table) -> list[str] | None:
    """The column names of a CSV, TSV or XLSX file's header (its first non-blank
    record) as `table` keys its rows; None for other formats, or when the
    header cannot be read (`iter_source` says why)."""
    kind = table.formats.get(path.suffix.lower())
    records: Generator[Record, None, None]
    if kind in _DELIMITERS:
        records = csv_records(path, str(path), max_line_bytes, _DELIMITERS[kind])
    elif kind == "xlsx":
        records = xlsx_records(path, str(path))
    else:
        return None
    with contextlib.closing(records):
        try:
            first = next(records, None)
        except OSError:
            return None
    if first is None or isinstance(first, InputProblem):
        return None
    return [_column_name(cell, table) for cell in first[1]]


def cell_text(value: object) -> str | None:
    """A typed table cell as the text a person typed: `12` not `12.0`, `true` not
    `True` (JSON's and TOML's spelling, so a sheet cell and a recipe's values
    agree); None for an empty cell (None, or pandas' NaN).

    Raises TypeError for anything else (a list, a date): whether that is an
    error or how it reads is the caller's to say."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN: pandas' empty cell
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    raise TypeError(f"not a text cell: {type(value).__name__}")


def json_type(value: object) -> str:
    """A JSON value's kind as a user would name it in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _iter_jsonl(path: Path, name: str, max_line_bytes: int, table: Table) -> Iterator[SourceItem]:
    with path.open("rb") as f:
        try:
            for line, raw in physical_lines(f, max_line_bytes):
                if raw is None:
                    limit = _size(max_line_bytes)
                    yield InputProblem(name, line, "", f"line is longer than {limit}; skipped")
                    continue
                item = _jsonl_item(raw, name, line, table)
                if item is not None:
                    yield item
        except Utf16Error:
            yield InputProblem(name, 1, "", UTF16)


def _jsonl_item(raw: bytes, name: str, line: int, table: Table) -> SourceItem | None:
    """One line's row, or its problem; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputProblem(name, line, "", utf8_problem(raw, exc))
    if not text.strip(_JSON_BLANK):
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return InputProblem(name, line, "", f"not valid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return InputProblem(name, line, "", "not valid JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer with thousands of digits
        return InputProblem(name, line, "", f"not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return InputProblem(name, line, "", f"expected a JSON object {{...}}, got {json_type(obj)}")
    known = table.known
    fields = obj if known is None else {k: obj[k] for k in known if k in obj}
    return RawRow(line, fields, table=False)


def _table_rows(
    records: Generator[Record, None, None], name: str, table: Table, *, check_width: bool
) -> Iterator[SourceItem]:
    """Header, then rows keyed by column. A header that cannot be read ends the
    file: every row would be misread. `check_width`: a row wider than the
    header is a problem (in CSV, a sign of an unquoted comma)."""
    columns: dict[str, int] | None = None
    width = 0
    with contextlib.closing(records):
        for record in records:
            if isinstance(record, InputProblem):
                yield record
                if columns is None:
                    return
                continue
            line, cells = record
            if columns is None:
                problems = _header_problems(cells, name, line, table)
                if problems:
                    yield from problems
                    return
                columns = _columns(cells, table)
                width = len(cells)
                continue
            if check_width and len(cells) > width and any(filled(c) for c in cells[width:]):
                n = len(cells)
                msg = table.too_wide.format(cells=n, width=width, extra=n - width)
                yield InputProblem(name, line, "", msg)
                continue
            fields = {k: cells[i] for k, i in columns.items() if i < len(cells)}
            yield RawRow(line, fields, table=True)


def _column_name(cell: object, table: Table) -> str:
    key = str(cell).strip() if cell is not None else ""
    return key if table.known is None else key.lower()


def _columns(header: Sequence[object], table: Table) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(header):
        key = _column_name(cell, table)
        if key and (table.known is None or key in table.known) and key not in columns:
            columns[key] = i
    return columns


def _header_problems(
    header: Sequence[object], name: str, line: int, table: Table
) -> list[InputProblem]:
    keys = [_column_name(c, table) for c in header]
    checked = table.known if table.known is not None else dict.fromkeys(k for k in keys if k)
    problems = []
    for key in checked:
        if keys.count(key) > 1:
            problems.append(InputProblem(name, line, key, f"column '{key}' appears twice"))
    missing = [key for key in table.required if key not in keys]
    hint = ""
    if len(keys) == 1 and (";" in keys[0] or "\t" in keys[0]):
        hint = "; the header looks ';'- or tab-separated, batchgen expects commas"
    for key in missing:
        found = ", ".join(repr(k) for k in keys[:20])
        msg = f"missing column '{key}' (found {found}){hint}"
        problems.append(InputProblem(name, line, key, msg))
    return problems


def _iter_parquet(path: Path, name: str, table: Table) -> Iterator[SourceItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        present = names if table.known is None else [c for c in names if c in table.known]
    except (pa.ArrowException, ValueError, TypeError) as exc:
        yield InputProblem(name, 0, "", f"not a readable Parquet file: {exc}")
        return
    missing = [c for c in table.required if c not in present]
    if missing:
        for key in missing:
            yield InputProblem(name, 0, key, f"missing column '{key}'")
        return
    line = 0
    try:
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=present):
            for row in batch.to_pylist():
                line += 1
                yield RawRow(line, row, table=True)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        yield InputProblem(name, line + 1, "", f"Parquet file cannot be read past here: {exc}")
