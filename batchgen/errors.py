"""Exceptions that stop a command, and the exit codes they map to.

A failed *job* is never an exception: it is an `Outcome` and a row in the
store. Exceptions are for the things that end a whole command::

    BatchgenError                 exit_code
    ├── UsageError                2  bad flags, missing key, unsafe base URL
    ├── InputError                2  bad job files; carries every `InputProblem`
    ├── StateError                2  state folder corrupt, foreign, newer, or locked
    └── AbortError                3  fatal API answer, daily quota, budget; jobs left pending

Messages never contain the API key: the key is only ever held by `Secret`.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


class BatchgenError(Exception):
    exit_code = EXIT_USAGE


class UsageError(BatchgenError):
    exit_code = EXIT_USAGE


class StateError(BatchgenError):
    exit_code = EXIT_USAGE


class AbortError(BatchgenError):
    exit_code = EXIT_ABORTED


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
    exit_code = EXIT_USAGE

    def __init__(self, problems: list[InputProblem], *, omitted: int = 0) -> None:
        self.problems = problems
        #: Problems found but not kept (a garbage file must not eat memory).
        self.omitted = omitted
        total = len(problems) + omitted
        noun = "problem" if total == 1 else "problems"
        super().__init__(f"{total} {noun} in the job files")

    def render(self, limit: int = 200) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        lines.append(f"{self.args[0]}; nothing was sent.")
        return "\n".join(lines)
