"""An `.xlsx` workbook in, the chosen sheet's records and its name for messages out.

Catalogue workbooks often open on a "Readme" or "Notes" sheet; reading the
first sheet blindly turned that into "missing column 'id'" with no word of
which sheet was read. So a sheet is chosen (`--sheet NAME|N`, else the
first), every message about its rows names it when the workbook has more
than one sheet (`jobs.xlsx [Products]`), and a header that lacks the
required columns says which other sheet has them.

Streamed with openpyxl's read-only mode (no DataFrame); anything openpyxl
raises for a corrupt workbook becomes an `InputProblem`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import InputProblem
from batchgen.jobs.records import Record, filled

#: Rows looked at to find another sheet's header (its first non-blank row).
_HEADER_SCAN = 20


@dataclass(slots=True)
class Sheet:
    """The chosen sheet: its label for messages, its records, and a way to ask
    which other sheets have a set of columns (for the missing-column hint)."""

    label: str
    title: str
    records: Generator[Record, None, None]
    others_with: Callable[[Callable[[Sequence[object]], bool]], list[str]]


def open_sheet(path: Path, name: str, selector: str | None) -> Sheet | InputProblem:
    """Open the workbook and pick the sheet; a problem if either cannot be done.

    OSError (not found, permission) propagates: the caller words it for files
    of every format."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except OSError:
        raise
    except Exception as exc:  # openpyxl raises a zoo of types for a corrupt zip/XML
        return InputProblem(name, 0, "", f"not a readable .xlsx workbook: {exc}")
    sheets = list(book.worksheets)
    chosen = _choose(sheets, selector)
    if chosen is None:
        book.close()
        titles = ", ".join(repr(s.title) for s in sheets)
        msg = (
            f"no sheet {selector!r} in the workbook (its sheets: {titles}); "
            "--sheet takes a name or a number from 1"
        )
        return InputProblem(name, 0, "", msg)
    label = f"{name} [{chosen.title}]" if len(sheets) > 1 or selector else name

    def others_with(has: Callable[[Sequence[object]], bool]) -> list[str]:
        return [s.title for s in sheets if s is not chosen and has(_first_row(s))]

    return Sheet(label, chosen.title, _records(book, chosen, label), others_with)


def _choose(sheets: list[Any], selector: str | None) -> Any | None:
    """By exact name, then ignoring case, then by 1-based position."""
    if not sheets:
        return None
    if selector is None:
        return sheets[0]
    exact = [s for s in sheets if s.title == selector]
    folded = [s for s in sheets if s.title.casefold() == selector.casefold()]
    if exact or folded:
        return (exact or folded)[0]
    text = selector.strip()
    if text.isdigit() and 1 <= int(text) <= len(sheets):
        return sheets[int(text) - 1]
    return None


def _first_row(sheet: Any) -> Sequence[object]:
    with contextlib.suppress(Exception):  # a corrupt other sheet only loses the hint
        for n, values in enumerate(sheet.iter_rows(values_only=True)):
            if n >= _HEADER_SCAN:
                break
            if any(filled(c) for c in values):
                return tuple(values)
    return ()


def _records(book: Any, sheet: Any, label: str) -> Generator[Record, None, None]:
    """The sheet's non-blank rows with their sheet row numbers; closes the book."""
    line = 0
    try:
        for line, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            if any(filled(c) for c in values):
                yield line, values
    except OSError:
        raise
    except Exception as exc:  # same zoo, from a sheet's XML read lazily
        yield InputProblem(label, line + 1, "", f"workbook cannot be read past here: {exc}")
    finally:
        book.close()
