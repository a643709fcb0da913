"""One file's bytes in, records with the line each starts on out (CSV, TSV).

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
import itertools
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from batchgen.errors import InputProblem
from batchgen.jobs.checks import human_size as _size
from batchgen.jobs.columns import DELIMITERS

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
    path: Path, name: str, max_line_bytes: int, delimiter: str | Callable[[str], str]
) -> Generator[Record, None, None]:
    """Every non-blank record with the physical line it starts on, or a problem.

    `delimiter` may be a function of the first non-blank line (the header)
    that returns it, so detecting it costs no second open of the file.

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
    lines: Iterator[str] = decoded()
    if callable(delimiter):
        try:
            lines, delimiter = _detect(lines, delimiter)
        except (Utf16Error, _LineTooLong) as exc:
            yield _stopped(name, exc, max_line_bytes)
            return
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (Utf16Error, _LineTooLong) as exc:
            yield _stopped(name, exc, max_line_bytes)
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


def _detect(lines: Iterator[str], find: Callable[[str], str]) -> tuple[Iterator[str], str]:
    """Read up to the first non-blank line, ask `find` for the delimiter, and
    give every line read back, so the CSV reader still counts them."""
    head: list[str] = []
    for text in lines:
        head.append(text)
        if text.strip():
            break
    return itertools.chain(head, lines), find(head[-1] if head else "")


def _stopped(name: str, exc: Exception, max_line_bytes: int) -> InputProblem:
    """The problem that ends a file: UTF-16, or a line over the cap."""
    if isinstance(exc, _LineTooLong):
        limit = _size(max_line_bytes)
        msg = f"line is longer than {limit}; the rest of the file was not read"
        return InputProblem(name, exc.line, "", msg)
    return InputProblem(name, 1, "", UTF16)


def sniff_delimiter(line: str, default: str) -> str:
    """The delimiter of a header line: the one of `DELIMITERS` seen most often
    outside quotes, else `default`.

    Excel in many European locales saves "CSV" with `;`, since `,` is their
    decimal mark; a header line names every column, so it holds one fewer
    delimiter than columns and no decimal numbers to confuse the count."""
    outside = "".join(line.split('"')[::2])  # the text between quoted cells
    counts = {d: outside.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == default))
    return best if counts[best] else default


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
