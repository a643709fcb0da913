"""Read a recipe's product sheet: CSV, TSV, JSONL or parquet rows with line numbers.

Consumes the sheet a recipe names; produces `Row` records (the row's line,
its cells as text, and any problem with the row itself) one at a time, so a
50,000-row sheet is never held in memory. CSV/TSV and JSONL rows carry the
line they start on, so a problem is reported where the user can find it;
parquet has no lines, so its rows are numbered from 1. Rows whose cells are
all empty are skipped. Cells become the text a pattern receives (`cell_text`),
the same rule the recipe's own ``[vars]`` and matrix values follow.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The delimited kinds share one reader; only the delimiter differs.
_DELIMITERS = {"csv": ",", "tsv": "\t"}


@dataclass
class Row:
    line: int
    values: dict[str, str]
    problem: str = ""


def sheet_kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
        suffix, "parquet" if suffix in (".parquet", ".pq") else None
    )


def cell_text(value: object) -> str:
    """A sheet or TOML value as the text a pattern receives."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:  # NaN: an empty parquet cell
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(cell_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def csv_columns(path: Path) -> list[str] | None:
    """A CSV/TSV header's column names; None for other kinds of sheet, or if
    unreadable (the row pass says why)."""
    delimiter = _delimiter(path)
    if delimiter is None:
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return _header(csv.reader(fh, delimiter=delimiter))
    except (csv.Error, OSError, ValueError):
        return None


def read_rows(path: Path) -> Iterator[Row]:
    """Stream rows with their line numbers; never loads the whole sheet.

    A sheet that cannot be read to the end becomes a last row carrying the
    problem (line 0: the reader does not know where it stopped)."""
    delimiter = _delimiter(path)
    try:
        if delimiter is not None:
            yield from _read_csv(path, delimiter)
        elif sheet_kind(path) == "jsonl":
            yield from _read_jsonl(path)
        else:
            yield from _read_parquet(path)
    except UnicodeDecodeError:
        yield Row(0, {}, 'the sheet is not UTF-8 text; save it as UTF-8 ("CSV UTF-8")')
    except (csv.Error, OSError, ValueError) as exc:
        yield Row(0, {}, f"cannot read the sheet: {exc}")


def _delimiter(path: Path) -> str | None:
    return _DELIMITERS.get(sheet_kind(path) or "")


def _header(reader: Iterator[list[str]]) -> list[str]:
    return [name.strip() for name in next(reader, [])]


def _read_csv(path: Path, delimiter: str) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = _header(reader)
        last = reader.line_num
        for cells in reader:
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            values = {name: cell for name, cell in zip(header, cells, strict=False) if name}
            extra = len(cells) - len(header)
            problem = f"{extra} more cell(s) than the header has columns" if extra > 0 else ""
            yield Row(line, values, problem)


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Row(line_no, {}, f"not valid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                yield Row(line_no, {}, "each line must be a JSON object")
                continue
            yield Row(line_no, {str(k): cell_text(v) for k, v in obj.items()})


def _read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, {str(k): cell_text(v) for k, v in record.items()})
