"""Turn one job file into a stream of raw rows and problems, per format.

Consumes a path; produces `RawRow`s (a row's known fields, not yet validated)
and `InputProblem`s (a row or the whole file could not be read). Every format
reports its own notion of "line": JSONL the physical line, CSV the line a
record starts on (header = 1), XLSX the sheet row, Parquet the 1-based row
number. Nothing here raises for bad input: a reader that can be crashed by a
hostile file would turn one bad row into a lost run.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from batchgen.errors import InputProblem
from batchgen.jobs.checks import human_size as _size

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
)
REQUIRED_FIELDS = ("id", "prompt")

FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".xlsx": "xlsx",
}

_BOM = b"\xef\xbb\xbf"
# Excel's "Unicode Text" export; one problem for the file beats one per line.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF16 = "file is UTF-16 encoded; save it as UTF-8"
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


class _Utf16(Exception):
    pass


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def iter_source(path: Path, max_line_bytes: int) -> Iterator[SourceItem]:
    """Yield the rows and problems of one job file, in file order."""
    name = str(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        allowed = ", ".join(sorted(FORMATS))
        found = path.suffix or "no extension"
        yield InputProblem(name, 0, "", f"unsupported file type ({found}); use one of {allowed}")
        return
    try:
        if kind == "jsonl":
            yield from _iter_jsonl(path, name, max_line_bytes)
        elif kind == "csv":
            yield from _iter_csv(path, name, max_line_bytes)
        elif kind == "parquet":
            yield from _iter_parquet(path, name)
        else:
            yield from _iter_xlsx(path, name)
    except FileNotFoundError:
        yield InputProblem(name, 0, "", "job file not found")
    except IsADirectoryError:
        yield InputProblem(name, 0, "", "job file is a directory")
    except PermissionError:
        yield InputProblem(name, 0, "", "job file cannot be read (permission denied)")
    except OSError as exc:
        yield InputProblem(name, 0, "", f"job file cannot be read: {exc.strerror or exc}")


def _utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    return (
        f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
        "save the file as UTF-8"
    )


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


def _read_line(f: BinaryIO, max_line_bytes: int) -> tuple[bytes, bool]:
    """Read one physical line, never more than the cap into memory.

    Returns the line and whether it was cut; a cut line's remainder is
    consumed so the next read starts on the next line.
    """
    raw = f.readline(max_line_bytes + 1)
    if len(raw) <= max_line_bytes or (raw.endswith(b"\n") and len(raw) == max_line_bytes + 1):
        return raw, False
    while True:
        rest = f.readline(1 << 20)
        if not rest or rest.endswith(b"\n"):
            return raw, True


def _iter_jsonl(path: Path, name: str, max_line_bytes: int) -> Iterator[SourceItem]:
    with path.open("rb") as f:
        line = 0
        while True:
            raw, cut = _read_line(f, max_line_bytes)
            if not raw:
                return
            line += 1
            if cut:
                limit = _size(max_line_bytes)
                yield InputProblem(name, line, "", f"line is longer than {limit}; skipped")
                continue
            if line == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if line == 1 and raw.startswith(_UTF16_BOMS):
                yield InputProblem(name, 1, "", _UTF16)
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InputProblem(name, line, "", _utf8_problem(raw, exc))
                continue
            if not text.strip(_JSON_BLANK):
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield InputProblem(name, line, "", f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except RecursionError:
                yield InputProblem(name, line, "", "invalid JSON: nested too deeply")
                continue
            except ValueError as exc:  # e.g. an integer with thousands of digits
                yield InputProblem(name, line, "", f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                msg = f"expected a JSON object {{...}}, got {json_type(obj)}"
                yield InputProblem(name, line, "", msg)
                continue
            yield RawRow(line, {k: obj[k] for k in KNOWN_FIELDS if k in obj}, table=False)


def _iter_csv(path: Path, name: str, max_line_bytes: int) -> Iterator[SourceItem]:
    """Parse CSV with the stdlib reader fed one physical line at a time.

    pandas' chunked reader is faster but cannot say which physical line a
    record started on once quoted fields span lines; here each record starts
    one line after the previous one ended (`csv.reader.line_num`). Lines are
    decoded one by one so a stray latin-1 byte costs one row, not the file.
    """
    bad_lines: dict[int, str] = {}

    def physical_lines() -> Iterator[str]:
        with path.open("rb") as f:
            n = 0
            while True:
                raw, cut = _read_line(f, max_line_bytes)
                if not raw:
                    return
                n += 1
                if cut:
                    raise _LineTooLong(n)
                if n == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                if n == 1 and raw.startswith(_UTF16_BOMS):
                    raise _Utf16
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad_lines[n] = _utf8_problem(raw, exc)
                    yield raw.decode("utf-8", "replace")

    # The limit is module-wide: raise it (never lower it) so one quoted field
    # may be as long as a line may be, instead of the default 128 KB.
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)
    reader = csv.reader(physical_lines(), strict=True)
    columns: dict[str, int] | None = None
    width = 0
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _Utf16:
            yield InputProblem(name, 1, "", _UTF16)
            return
        except _LineTooLong as exc:
            limit = _size(max_line_bytes)
            msg = f"line is longer than {limit}; the rest of the file was not read"
            yield InputProblem(name, exc.line, "", msg)
            return
        except csv.Error as exc:
            end = reader.line_num
            yield InputProblem(name, start, "", f"broken CSV: {exc}")
            continue
        end = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        bad = next((bad_lines[n] for n in range(start, end + 1) if n in bad_lines), None)
        if bad is not None:
            yield InputProblem(name, start, "", bad)
            if columns is None:
                return
            continue
        if columns is None:
            problems = _header_problems(cells, name, start)
            if problems:
                yield from problems
                return
            columns = _columns(cells)
            width = len(cells)
            continue
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            msg = (
                f"row has {len(cells)} cells but the header has {width} "
                "(a comma in an unquoted field?)"
            )
            yield InputProblem(name, start, "", msg)
            continue
        fields = {k: cells[i] for k, i in columns.items() if i < len(cells)}
        yield RawRow(start, fields, table=True)


def _columns(header: Sequence[object]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for i, cell in enumerate(header):
        key = str(cell).strip().lower() if cell is not None else ""
        if key in KNOWN_FIELDS and key not in columns:
            columns[key] = i
    return columns


def _header_problems(header: Sequence[object], name: str, line: int) -> list[InputProblem]:
    keys = [str(c).strip().lower() if c is not None else "" for c in header]
    problems = []
    for key in KNOWN_FIELDS:
        if keys.count(key) > 1:
            problems.append(InputProblem(name, line, key, f"column '{key}' appears twice"))
    missing = [key for key in REQUIRED_FIELDS if key not in keys]
    hint = ""
    if len(keys) == 1 and (";" in keys[0] or "\t" in keys[0]):
        hint = "; the header looks ';'- or tab-separated, batchgen expects commas"
    for key in missing:
        found = ", ".join(repr(k) for k in keys[:20])
        msg = f"missing column '{key}' (found {found}){hint}"
        problems.append(InputProblem(name, line, key, msg))
    return problems


def _iter_parquet(path: Path, name: str) -> Iterator[SourceItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        present = [c for c in pf.schema_arrow.names if c in KNOWN_FIELDS]
    except (pa.ArrowException, ValueError, TypeError) as exc:
        yield InputProblem(name, 0, "", f"not a readable Parquet file: {exc}")
        return
    missing = [c for c in REQUIRED_FIELDS if c not in present]
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


def _iter_xlsx(path: Path, name: str) -> Iterator[SourceItem]:
    """Stream the first sheet with openpyxl's read-only mode (no DataFrame)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except Exception as exc:  # openpyxl raises a zoo of types for a corrupt zip/XML
        yield InputProblem(name, 0, "", f"not a readable .xlsx workbook: {exc}")
        return
    line = 0
    try:
        sheet = book.worksheets[0]
        columns: dict[str, int] | None = None
        for line, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            cells = list(values)
            if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
                continue
            if columns is None:
                problems = _header_problems(cells, name, line)
                if problems:
                    yield from problems
                    return
                columns = _columns(cells)
                continue
            fields = {k: cells[i] for k, i in columns.items() if i < len(cells)}
            yield RawRow(line, fields, table=True)
    except OSError:
        raise
    except Exception as exc:  # same zoo, from a sheet's XML read lazily
        yield InputProblem(name, line + 1, "", f"workbook cannot be read past here: {exc}")
    finally:
        book.close()
