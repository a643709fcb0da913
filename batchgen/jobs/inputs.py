"""Where a run's jobs come from: one interface, whatever the input is.

A `JobSource` yields raw rows and the problems met while reading them; the
reader's single pass (`batchgen.jobs.reader.read_sources`) turns the rows of
every source into validated `Job`s, so a job file, a recipe and a list of
dicts given to `batchgen.run` are checked by the same rules, once, and
nothing is written to disk to get from one to the other.

Implementations: `FileSource` (CSV, JSONL, Parquet, XLSX), `RecordsSource`
(dicts or `Job`s from Python), and `batchgen.recipes.expand.RecipeSource`
(a recipe, expanded as it is read; it lives with the recipes, which sit
above this package).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

from batchgen.errors import InputProblem
from batchgen.jobs.columns import (
    DEFAULT_OPTIONS,
    KNOWN_FIELDS,
    KeyMap,
    ReadOptions,
)
from batchgen.jobs.sources import RawRow, SourceItem, iter_source
from batchgen.models import Job

__all__ = ["MAX_LINE_BYTES", "RECORDS_NAME", "FileSource", "JobSource", "RecordsSource"]

#: One line longer than this is reported, not read: it bounds memory.
MAX_LINE_BYTES: int = 32 * 1024 * 1024

#: What problems call jobs given from Python; the line is the item's
#: 1-based position in what was given.
RECORDS_NAME = "<jobs>"


class JobSource(Protocol):
    """A stream of one input's rows, read once.

    `name` is what problems and `Job.source` call the input (a row may name
    another file, as a recipe's rows name its sheet); `base` is the folder
    relative image paths are relative to. `path` is the file read, if any, so
    that a file given twice is reported. `identified_by_bytes` is true when
    the bytes of `path` alone decide its jobs: a re-run of a finished folder
    then hashes the file instead of reading its rows (`planner.settled`).
    """

    @property
    def name(self) -> str: ...

    @property
    def base(self) -> str: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def identified_by_bytes(self) -> bool: ...

    def items(self) -> Iterator[SourceItem]:
        """The rows and problems, in input order; never raises for bad input."""
        ...


class FileSource:
    """A job file in any supported format, streamed (`jobs.sources.iter_source`).

    `options` (delimiter, sheet, columns to skip) change which jobs the same
    bytes make, so with any of them set the bytes alone no longer decide."""

    def __init__(
        self, given: str | os.PathLike[str], options: ReadOptions = DEFAULT_OPTIONS
    ) -> None:
        self.path = Path(given)
        self.name = str(given)  # as the user wrote it: problems quote it back
        self.base = os.path.abspath(self.path.parent)
        self.options = options
        self.identified_by_bytes = not options.customised

    def items(self) -> Iterator[SourceItem]:
        return iter_source(self.path, MAX_LINE_BYTES, options=self.options)


class RecordsSource:
    """Job records from Python: dicts in the JSONL job format, or `Job`s.

    They are checked like a file's rows (a `Job` built by hand may carry a
    bad id or a missing image as easily as a dict), and relative image paths
    are relative to the working directory when the source was made: where a
    Python caller's own `open("photo.png")` would look.
    """

    path: Path | None = None
    identified_by_bytes = False  # an iterable cannot be hashed without being consumed

    def __init__(
        self,
        records: Iterable[object],
        *,
        first_line: int = 1,
        name: str = RECORDS_NAME,
        base: str | None = None,
    ) -> None:
        self._records = records
        self._first = first_line
        self.name = name
        self.base = os.getcwd() if base is None else base

    def items(self) -> Iterator[SourceItem]:
        keys = KeyMap()  # the JSONL rules: an unknown key is named, not dropped
        for line, record in enumerate(self._records, start=self._first):
            if isinstance(record, Job):
                yield RawRow(line, _job_fields(record), table=False)
            elif isinstance(record, Mapping):
                fields, problems = keys.fields(record)
                for key, message in problems:
                    yield InputProblem(self.name, line, key, message)
                yield RawRow(line, fields, table=False)
            else:
                kind = type(record).__name__
                msg = f"expected a job (a dict or a batchgen.Job) or a path, got {kind}"
                yield InputProblem(self.name, line, "", msg)


def _job_fields(job: Job) -> dict[str, object]:
    """A `Job`'s fields as a row, lists as JSON would give them."""
    fields: dict[str, object] = {}
    for key in KNOWN_FIELDS:
        value = getattr(job, key)
        fields[key] = list(value) if isinstance(value, tuple) else value
    return fields
