"""One file's bytes in, records with the line each starts on out (CSV, TSV, XLSX).

The rules about bytes that a hostile or merely foreign file tests, in one
place for every table batchgen reads (job files and recipe sheets, through
`batchgen.jobs.sources`): a line is never read past a cap into memory, a UTF-8
BOM is dropped and UTF-16 is one clear problem, lines are decoded one by one
so a stray latin-1 byte costs one row, and a record carries the physical line
it starts on even when a quoted cell spans lines. Blank records are skipped.
A record that cannot be read is an `InputProblem`, never an exception.
"""

from __future__ import annotations

import csv
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from batchgen.errors import InputProblem
from batchgen.jobs.checks import human_size as _size

BOM = b"\xef\xbb\xbf"
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF16 = "file is UTF-16 encoded; save it as UTF-8"

#: A record (its first line, its cells) or why it could not be read.
Record = tuple[int, Sequence[object]] | InputProblem


class Utf16Error(Exception):
    """The file starts with a UTF-16 byte-order mark: one problem for the file."""


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def csv_records(
    path: Path, name: str, max_line_bytes: int, delimiter: str
) -> Generator[Record, None, None]:
    """Every non-blank record with the physical line it starts on, or a problem.

    The stdlib reader is fed one physical line at a time: pandas' chunked
    reader is faster but cannot say which physical line a record started on
    once quoted fields span lines; here each record starts one line after the
    previous one ended (`csv.reader.line_num`). Lines are decoded one by one so
    a stray latin-1 byte costs one row, not the file.
    """
    bad_lines: dict[int, str] = {}

    def decoded() -> Iterator[str]:
        with path.open("rb") as f:
            for n, raw in physical_lines(f, max_line_bytes):
                if raw is None:
                    raise _LineTooLong(n)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad_lines[n] = utf8_problem(raw, exc)
                    yield raw.decode("utf-8", "replace")

    # The limit is module-wide: raise it (never lower it) so one quoted field
    # may be as long as a line may be, instead of the default 128 KB.
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)
    reader = csv.reader(decoded(), delimiter=delimiter, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except Utf16Error:
            yield InputProblem(name, 1, "", UTF16)
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
        yield (start, cells) if bad is None else InputProblem(name, start, "", bad)


def utf8_problem(raw: bytes, exc: UnicodeDecodeError) -> str:
    return (
        f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line); "
        'if the file is not UTF-8, save it as UTF-8 ("CSV UTF-8" in Excel)'
    )


def physical_lines(f: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """Each physical line with its number (from 1), a UTF-8 BOM dropped; None for
    a line longer than the cap (never read into memory). Raises `Utf16Error` at
    a UTF-16 BOM (Excel's "Unicode Text" export)."""
    n = 0
    while True:
        raw, cut = read_line(f, max_line_bytes)
        if not raw:
            return
        n += 1
        if cut:
            yield n, None
            continue
        if n == 1:
            if raw.startswith(BOM):
                raw = raw[len(BOM) :]
            if raw.startswith(UTF16_BOMS):
                raise Utf16Error
        yield n, raw


def read_line(f: BinaryIO, max_line_bytes: int) -> tuple[bytes, bool]:
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


def filled(cell: object) -> bool:
    return cell is not None and (not isinstance(cell, str) or bool(cell.strip()))


def xlsx_records(path: Path, name: str) -> Generator[Record, None, None]:
    """The first sheet's non-blank rows, streamed with openpyxl's read-only mode
    (no DataFrame)."""
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
        for line, values in enumerate(book.worksheets[0].iter_rows(values_only=True), start=1):
            if any(filled(c) for c in values):
                yield line, values
    except OSError:
        raise
    except Exception as exc:  # same zoo, from a sheet's XML read lazily
        yield InputProblem(name, line + 1, "", f"workbook cannot be read past here: {exc}")
    finally:
        book.close()
