"""Exceptions that stop a command, and the exit codes they map to.

A failed *job* is never an exception: it is an `Outcome` and a row in the
store. Exceptions are for the things that end a whole command::

    BatchgenError                 exit_code
    ├── UsageError                2  bad flags, missing key, unsafe base URL
    ├── InputError                2  bad job files; carries every `InputProblem`
    ├── StateError                2  state folder corrupt, foreign, newer, or locked
    └── AbortError                3  the run cannot go on, its `kind` says why; jobs stay pending
        └── DiskFullError         3  no space left (kind `disk`; defined in `output.sink`)

Messages never contain the API key: the key is only ever held by `Secret`.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchgen.models import StopKind

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
#: Batch Mode with ``--no-wait``: batches are still pending or running; run the
#: same command again later (0 or 1 only once every job has ended).
EXIT_STILL_RUNNING = 4
EXIT_INTERRUPTED = 130


class BatchgenError(Exception):
    exit_code = EXIT_USAGE


class UsageError(BatchgenError):
    exit_code = EXIT_USAGE


class StateError(BatchgenError):
    exit_code = EXIT_USAGE


class AbortError(BatchgenError):
    """The run cannot go on. `kind` says why, and becomes the run's stop kind: a
    raiser that knows (a full disk) says so, the rest are plain errors. Keyword
    only, so that it is never mistaken for part of the message."""

    exit_code = EXIT_ABORTED
    kind: StopKind = StopKind.ERROR

    def __init__(self, message: str, *, kind: StopKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


@dataclass(frozen=True, slots=True)
class InputProblem:
    """One bad row or field: where it is and what is wrong with it."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" [{self.field}]" if self.field else ""
        return f"{where}:{field} {self.message}"


class InputError(BatchgenError):
    """Bad job files: every problem found, each with its file, line and field."""

    exit_code = EXIT_USAGE
    #: Problems listed by `str` (an uncaught error in a notebook or a script's
    #: traceback); `render` lists more, for the command line.
    STR_LIMIT = 10

    def __init__(self, problems: list[InputProblem], *, omitted: int = 0) -> None:
        self.problems = problems
        #: Problems found but not kept (a garbage file must not eat memory).
        self.omitted = omitted
        total = len(problems) + omitted
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{total} {noun} in the job files")

    def __str__(self) -> str:
        """The count and the first problems: an uncaught error must say what to fix."""
        shown = [str(p) for p in self.problems[: self.STR_LIMIT]]
        lines = [f"{self.args[0]}:", *shown]
        more = len(self.problems) + self.omitted - len(shown)
        if more > 0:
            lines.append(f"… and {more} more")
        return "\n".join(lines)

    def render(self, limit: int = 200) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        lines.append(f"{self.args[0]}; nothing was sent.")
        return "\n".join(lines)
