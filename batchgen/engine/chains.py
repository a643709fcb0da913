"""chains: jobs with `@parent` references in, when each may run out.

A chained job edits another job's output, so it waits, outside the pool's
queue, until its parents end: it then runs (`RunNow`), or ends skipped when
a parent ended other than done (`Skip`). The gate reads the parents' state
from the store and says what to do; the pool does it, and hands back every
parent that ends so its waiting children are looked at again (`release`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batchgen.errors import AbortError
from batchgen.models import ErrorInfo, Job, Status, StopKind
from batchgen.output.storage import Output, StoredFile
from batchgen.store.jobs import Known

Lookup = Callable[[str], Known | None]


@dataclass(frozen=True, slots=True)
class RunNow:
    """Every parent is done: the job may be sent."""


@dataclass(frozen=True, slots=True)
class Skip:
    """A parent ended without an image: the job ends skipped, saying which."""

    parent: str
    status: Status

    @property
    def error(self) -> ErrorInfo:
        return ErrorInfo("skipped", None, f"parent {self.parent} ended {self.status.value}")


@dataclass(frozen=True, slots=True)
class Wait:
    """A parent has not ended yet: the job waits for it."""

    parent: str


Gate = RunNow | Skip | Wait
RUN_NOW = RunNow()


def gate(job: Job, lookup: Lookup) -> Gate:
    """Run, skip or wait, by the parents' state: a parent that ended other than
    done skips the job at once, even while another parent is still pending."""
    waiting_on: str | None = None
    for ref in job.images:
        if not ref.startswith("@"):
            continue
        parent = ref[1:]
        known = lookup(parent)
        if known is None or known.status is Status.PENDING:
            waiting_on = parent
            continue
        if known.status is not Status.DONE:
            return Skip(parent, known.status)
    return RUN_NOW if waiting_on is None else Wait(waiting_on)


class Chains:
    """The chained jobs of a run that wait for a parent, by parent."""

    def __init__(self, lookup: Lookup, out: Path | Output) -> None:
        self._lookup = lookup
        self._out = out
        self._waiting: dict[str, list[Job]] = {}

    def admit(self, job: Job) -> Gate:
        """The job's gate; a job told to `Wait` is kept until its parent is released."""
        verdict = gate(job, self._lookup)
        if isinstance(verdict, Wait):
            self._waiting.setdefault(verdict.parent, []).append(job)
        return verdict

    def release(self, parent: str) -> list[Job]:
        """`parent` ended: the jobs that waited for it, to be admitted again."""
        return self._waiting.pop(parent, [])

    def reference(self, ref: str) -> Path | StoredFile:
        """Where a reference image is: its own path, or a done parent's first image."""
        if not ref.startswith("@"):
            return Path(ref)
        known = self._lookup(ref[1:])
        if known is None or not known.files:
            raise AbortError(f"chained input {ref} has no image", kind=StopKind.ERROR)
        if isinstance(self._out, Output):
            if self._out.root is None:
                return StoredFile(self._out, known.files[0])
            return self._out.root / known.files[0]
        return self._out / known.files[0]
