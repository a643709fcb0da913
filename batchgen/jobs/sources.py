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
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from batchgen.errors import InputProblem
from batchgen.jobs.checks import human_size as _size
from batchgen.jobs.columns import (
    DEFAULT_OPTIONS,
    DELIMITERS,
    KNOWN_FIELDS,
    KeyMap,
    ReadOptions,
    resolve_header,
)
from batchgen.jobs.records import (
    UTF16,
    Record,
    Utf16Error,
    csv_records,
    filled,
    physical_lines,
    sniff_delimiter,
    utf8_problem,
)
from batchgen.jobs.tables import (
    JOB_FILE,
    RawRow,
    SourceItem,
    Table,
    column_name,
    judge_header,
)
from batchgen.jobs.workbook import Sheet, open_sheet

__all__ = [
    "JOB_FILE",
    "KNOWN_FIELDS",
    "RawRow",
    "SourceItem",
    "Table",
    "cell_text",
    "iter_source",
    "json_type",
    "table_header",
]

_DELIMITERS = {"csv": ",", "tsv": "\t"}
_JSON_BLANK = " \t\r\n"
SURROGATE = "holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair): not text"
_BATCH_ROWS = 4096


def iter_source(
    path: Path,
    max_line_bytes: int,
    table: Table = JOB_FILE,
    options: ReadOptions = DEFAULT_OPTIONS,
) -> Iterator[SourceItem]:
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
            yield from _iter_jsonl(path, name, max_line_bytes, table, options)
        elif kind in _DELIMITERS:
            records = csv_records(path, name, max_line_bytes, _delimiter(name, kind, options))
            yield from _table_rows(records, name, table, options, forced=options.delimiter)
        elif kind == "parquet":
            yield from _iter_parquet(path, name, table, options)
        else:
            yield from _iter_xlsx(path, name, table, options)
    except FileNotFoundError:
        yield InputProblem(name, 0, "", f"{noun} not found")
    except IsADirectoryError:
        yield InputProblem(name, 0, "", f"{noun} is a directory")
    except PermissionError:
        yield InputProblem(name, 0, "", f"{noun} cannot be read (permission denied)")
    except OSError as exc:
        yield InputProblem(name, 0, "", f"{noun} cannot be read: {exc.strerror or exc}")


def _delimiter(name: str, kind: str, options: ReadOptions) -> str | Callable[[str], str]:
    """The forced delimiter, else how to find it in the header line (said once
    when it is not the extension's own)."""
    if options.delimiter:
        return options.delimiter
    default = _DELIMITERS[kind]

    def detect(header: str) -> str:
        found = sniff_delimiter(header, default)
        if found != default:
            options.tell(
                f"{name}: read as {DELIMITERS[found]}-separated (detected from the header "
                "line; --delimiter to choose)"
            )
        return found

    return detect


def table_header(
    path: Path, max_line_bytes: int, table: Table, options: ReadOptions = DEFAULT_OPTIONS
) -> list[str] | None:
    """The column names of a CSV, TSV or XLSX file's header (its first non-blank
    record) as `table` keys its rows; None for other formats, or when the
    header cannot be read (`iter_source` says why)."""
    kind = table.formats.get(path.suffix.lower())
    records: Generator[Record, None, None]
    try:
        if kind in _DELIMITERS:
            default = _DELIMITERS[kind]
            delimiter = options.delimiter or (lambda line: sniff_delimiter(line, default))
            records = csv_records(path, str(path), max_line_bytes, delimiter)
        elif kind == "xlsx":
            sheet = open_sheet(path, str(path), options.sheet)
            if isinstance(sheet, InputProblem):
                return None
            records = sheet.records
        else:
            return None
        with contextlib.closing(records):
            first = next(records, None)
    except OSError:
        return None
    if first is None or isinstance(first, InputProblem):
        return None
    return [column_name(cell) for cell in first[1]]


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


def _iter_jsonl(
    path: Path, name: str, max_line_bytes: int, table: Table, options: ReadOptions
) -> Iterator[SourceItem]:
    keys = None if table.known is None else KeyMap(options)
    with path.open("rb") as f:
        try:
            for line, raw in physical_lines(f, max_line_bytes):
                if raw is None:
                    limit = _size(max_line_bytes)
                    yield InputProblem(name, line, "", f"line is longer than {limit}; skipped")
                    continue
                yield from _jsonl_items(raw, name, line, keys)
        except Utf16Error:
            yield InputProblem(name, 1, "", UTF16)


def _jsonl_items(raw: bytes, name: str, line: int, keys: KeyMap | None) -> Iterator[SourceItem]:
    """One line's row (nothing for a blank line) and its problems."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield InputProblem(name, line, "", utf8_problem(raw, exc))
        return
    if not text.strip(_JSON_BLANK):
        return
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        msg = "not valid JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer with thousands of digits
        msg = f"not valid JSON: {exc}"
    else:
        msg = (
            "" if isinstance(obj, dict) else f"expected a JSON object {{...}}, got {json_type(obj)}"
        )
    if msg:
        yield InputProblem(name, line, "", msg)
        return
    if "\\u" in text:
        bad = _surrogate_keys(obj)
        if bad:
            for key in bad:
                yield InputProblem(name, line, key, SURROGATE)
            return
    if keys is None:
        yield RawRow(line, obj, table=False)
        return
    fields, problems = keys.fields(obj)
    for key, message in problems:
        yield InputProblem(name, line, key, message)
    yield RawRow(line, fields, table=False)


def _surrogate_keys(obj: dict[str, Any]) -> list[str]:
    """The keys whose value holds a lone UTF-16 surrogate: JSON can spell one
    (`"\\ud800"`) but it is not text, and nothing downstream could write it. Only
    lines with a `\\u` escape are checked, so the common line costs nothing."""
    bad = []
    for key, value in obj.items():
        try:
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            bad.append(key)
    return bad


def _table_rows(
    records: Generator[Record, None, None],
    name: str,
    table: Table,
    options: ReadOptions,
    *,
    forced: str | None = None,
    check_width: bool = True,
    sheet: Sheet | None = None,
) -> Iterator[SourceItem]:
    """Header, then rows keyed by column. A header that cannot be read ends the
    file: every row would be misread. `check_width`: a row wider than the
    header is a problem (in CSV, a sign of an unquoted comma). `sheet`: the
    XLSX sheet read, for the hint about another sheet."""
    columns: dict[str, int] | None = None
    blank: tuple[int, ...] = ()
    width = 0
    file = "" if sheet is None or sheet.label == name else sheet.label
    where = file or name
    with contextlib.closing(records):
        for record in records:
            if isinstance(record, InputProblem):
                yield record
                if columns is None:
                    return
                continue
            line, cells = record
            if columns is None:
                problems = judge_header(cells, where, line, table, options, forced, sheet)
                if isinstance(problems, list):
                    yield from problems
                    return
                columns, blank = problems
                width = len(cells)
                continue
            if check_width and len(cells) > width and any(filled(c) for c in cells[width:]):
                n = len(cells)
                msg = table.too_wide.format(cells=n, width=width, extra=n - width)
                yield InputProblem(where, line, "", msg)
                continue
            if blank and any(filled(cells[i]) for i in blank if i < len(cells)):
                msg = (
                    "a value under a column with no name in the header; name the column or clear it"
                )
                yield InputProblem(where, line, "", msg)
            fields = {k: cells[i] for k, i in columns.items() if i < len(cells)}
            yield RawRow(line, fields, table=True, file=file)


def _iter_xlsx(path: Path, name: str, table: Table, options: ReadOptions) -> Iterator[SourceItem]:
    sheet = open_sheet(path, name, options.sheet)
    if isinstance(sheet, InputProblem):
        yield sheet
        return
    yield from _table_rows(sheet.records, name, table, options, check_width=False, sheet=sheet)


def _iter_parquet(
    path: Path, name: str, table: Table, options: ReadOptions
) -> Iterator[SourceItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, ValueError, TypeError) as exc:
        yield InputProblem(name, 0, "", f"not a readable Parquet file: {exc}")
        return
    if table.known is None:
        pairs = [(n, n) for n in names]
    else:
        header = resolve_header(names, table.required, options)
        problems = [InputProblem(name, 0, k, m) for k, m in header.problems]
        problems += [InputProblem(name, 0, k, f"missing column '{k}'") for k in header.missing]
        if problems:
            yield from problems
            return
        pairs = [(key, names[i]) for key, i in header.columns.items()]
    present = [raw for _key, raw in pairs]
    line = 0
    try:
        for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=present):
            for row in batch.to_pylist():
                line += 1
                yield RawRow(line, {key: row[raw] for key, raw in pairs}, table=True)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        yield InputProblem(name, line + 1, "", f"Parquet file cannot be read past here: {exc}")
