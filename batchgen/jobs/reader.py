"""The reader stage: job sources in, validated `Job`s out, in one pass.

Consumes `JobSource`s (job files of any format, recipes, records from
Python: `batchgen.jobs.inputs`); produces each valid `Job` once, as its row
is read, and at the end one `InputError` listing every problem with its
file, line and field (`read_sources`). The same pass feeds the planner and
collects the problems: the planner records what it is fed in one unit of
work that the error rolls back, so nothing is sent or kept unless every row
of every source is good. Rows are streamed and never kept, so a
million-line file costs the same memory as a small one, apart from a
compact table of ids (duplicates and `@id` chains span files and need it).

After the first problem the pass stops feeding jobs (the run will not
start, so planning them would be wasted) but reads on to report the rest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from batchgen.errors import InputError, InputProblem
from batchgen.jobs.checks import (
    ChainNode,
    IdTable,
    ImageChecker,
    ProblemSink,
    chain_problems,
    duplicate_problem,
    image_problems,
)
from batchgen.jobs.inputs import MAX_LINE_BYTES, FileSource, JobSource
from batchgen.jobs.models_check import ModelRules
from batchgen.jobs.rows import ID_PATTERN, Parsed, parse_row, validate_id
from batchgen.jobs.sources import RawRow
from batchgen.models import Job

__all__ = [
    "ID_PATTERN",
    "MAX_INLINE_BYTES",
    "MAX_LINE_BYTES",
    "MAX_PROBLEMS",
    "check",
    "read_jobs",
    "read_sources",
    "validate",
    "validate_id",
]

#: The API's inline request limit; one image, and all of a job's images
#: together, must fit under it.
MAX_INLINE_BYTES: int = 20 * 1024 * 1024
#: Problems kept for the report; the rest are only counted.
MAX_PROBLEMS: int = 10_000


def read_sources(
    sources: Iterable[JobSource], *, check_images: bool = True, rules: ModelRules | None = None
) -> Iterator[Job]:
    """Yield every valid job once, in source order; then, if any row of any
    source was bad, raise `InputError` with every problem found (up to
    `MAX_PROBLEMS`, then a count).

    Checks that span rows (duplicate ids, `@id` references to unknown jobs,
    cycles) are complete only when the last row is read: a consumer must treat
    what it was fed as provisional until the iterator ends without raising.
    `sources` is read lazily, one source at a time. `rules` checks each job
    against the model it will be sent to (`models_check`).
    """
    state = _Pass(check_images)
    state.rules = rules
    for source in sources:
        yield from state.read(source)
    state.finish()


def check(
    sources: Iterable[JobSource], *, check_images: bool = True, rules: ModelRules | None = None
) -> int:
    """The number of jobs, or `InputError` with every problem (`read_sources`)."""
    return sum(1 for _job in read_sources(sources, check_images=check_images, rules=rules))


def validate(paths: Sequence[str | os.PathLike[str]], *, check_images: bool = True) -> int:
    """`check` for job files."""
    return check([FileSource(p) for p in paths], check_images=check_images)


def read_jobs(paths: Sequence[str | os.PathLike[str]]) -> Iterator[Job]:
    """Stream the jobs of job files without the whole-run checks.

    A bad row raises `InputError` for that row rather than being skipped, so
    no job is ever dropped without a word; image files, duplicates and chains
    are not checked (`read_sources` does all of it).
    """
    for given in paths:
        source = FileSource(given)
        for item in source.items():
            if isinstance(item, InputProblem):
                raise InputError([item])
            parsed = parse_row(item, source.name, source.base)
            if parsed.job is None:
                raise InputError(parsed.problems)
            yield parsed.job


class _Pass:
    """What one pass over a run's sources remembers across rows: the problems
    so far and what the whole-run checks need (ids, chain edges, images seen)."""

    def __init__(self, check_images: bool) -> None:
        self.sink = ProblemSink(MAX_PROBLEMS)
        self.ids = IdTable()
        self.images = ImageChecker(MAX_INLINE_BYTES) if check_images else None
        self.chains: dict[str, ChainNode] = {}
        self.orphans: list[ChainNode] = []
        #: File names in the order first met: ids and chain edges keep an
        #: index, and problems are listed in this order.
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self._files: dict[str, str] = {}  # real path -> the name it was first given as
        self.rules: ModelRules | None = None

    def file_index(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self.names)
            self.names.append(name)
        return index

    def add(self, problem: InputProblem) -> None:
        self.file_index(problem.file)
        self.sink.add(problem)

    def read(self, source: JobSource) -> Iterator[Job]:
        name, base = source.name, source.base
        own = self.file_index(name)
        if source.path is not None:
            real = os.path.realpath(source.path)
            if real in self._files:
                msg = f"same file as {self._files[real]}; given twice"
                self.add(InputProblem(name, 0, "", msg))
                return
            self._files[real] = name
        items = 0
        sink = self.sink
        for item in source.items():
            items += 1
            if isinstance(item, InputProblem):
                self.add(item)
                continue
            if item.file:
                parsed = self.row(item.file, self.file_index(item.file), item.line, item, base)
            else:
                parsed = self.row(name, own, item.line, item, base)
            if parsed.job is not None and not len(sink):
                yield parsed.job
        if items == 0:
            self.add(InputProblem(name, 0, "", "no jobs in file"))

    def row(self, name: str, index: int, line: int, item: RawRow, base: str) -> Parsed:
        """Parse one row and run the checks that span rows on it."""
        parsed = parse_row(item, name, base)
        sink = self.sink
        sink.extend(parsed.problems)
        job_id = parsed.job_id
        seen = None if job_id is None else self.ids.add(job_id, index, line)
        if seen is not None:
            sink.add(duplicate_problem(str(job_id), seen, self.names, name, line))
        if parsed.refs:
            node = ChainNode(index, line, parsed.refs)
            if job_id is None or seen is not None:
                self.orphans.append(node)  # still check that its targets exist
            else:
                self.chains[job_id] = node
        if self.images is not None and len(parsed.images) > len(parsed.refs):
            sink.extend(image_problems(parsed.images, self.images, name, line))
        if self.rules is not None and parsed.job is not None:
            sink.extend(self.rules.problems(parsed.job, name, line))
        return parsed

    def finish(self) -> None:
        """Raise `InputError` with every problem, in file order, if there was one."""
        sink = self.sink
        sink.extend(chain_problems(self.chains, self.orphans, self.ids, self.names))
        if not len(sink):
            return
        order = self._index
        problems = sorted(sink.kept, key=lambda p: (order.get(p.file, -1), p.line))
        if sink.dropped:
            more = f"... and {sink.dropped} more problems not listed; fix the ones above first"
            problems.append(InputProblem(sink.first_dropped_file, 0, "", more))
        raise InputError(problems, omitted=sink.dropped - 1 if sink.dropped else 0)
