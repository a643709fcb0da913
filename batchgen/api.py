"""The Python API: `run` and `arun`, the CLI's behaviour for notebooks and programs.

Jobs may be paths to job files and recipes, or job records (dicts in the
JSONL format or `Job`s). Records are read straight from what was given, as
a source of the reader's single pass: checked by the same rules as a file's
rows, once, and never written to disk first. Resume and the report work as
from the CLI; only the settled-folder fast path needs files (records cannot
be hashed without being consumed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any, TypeGuard

from batchgen.config import RunConfig, Secret, key_from_env
from batchgen.engine import eventloop
from batchgen.engine.runner import RunResult, arun_sources, sources_for
from batchgen.errors import UsageError
from batchgen.jobs.inputs import JobSource, RecordsSource
from batchgen.models import Job
from batchgen.output.storage import redact, split_out

JobsArg = str | os.PathLike[str] | Iterable[str | os.PathLike[str] | Mapping[str, Any] | Job]


def _sources(jobs: JobsArg) -> list[JobSource] | Iterator[JobSource]:
    """Paths alone give a list (so the fast path can hash the files); anything
    else is streamed: each run of consecutive records is one source, whose
    rows are numbered by their place in `jobs`."""
    if isinstance(jobs, str | os.PathLike):
        return sources_for([jobs])
    if isinstance(jobs, list | tuple):
        paths = [item for item in jobs if isinstance(item, str | os.PathLike)]
        if len(paths) == len(jobs):
            return sources_for(paths)
    return _streamed(jobs)


def _streamed(jobs: Iterable[object]) -> Iterator[JobSource]:
    base = os.getcwd()
    numbered = enumerate(jobs, start=1)
    for paths, group in itertools.groupby(numbered, key=lambda item: _is_path(item[1])):
        if paths:
            yield from sources_for(item for _, item in group if _is_path(item))
        else:
            yield _records(group, base)


def _is_path(item: object) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(item, str | os.PathLike)


def _records(numbered: Iterator[tuple[int, object]], base: str) -> RecordsSource:
    first, record = next(numbered)
    rest = (item for _, item in numbered)
    return RecordsSource(itertools.chain([record], rest), first_line=first, base=base)


async def arun(
    jobs: JobsArg,
    *,
    out: str | os.PathLike[str],
    sim: bool = False,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Run jobs into `out`; options are `RunConfig` fields (concurrency, rpm, budget, …).
    Returns the `RunResult`; `result.report` is the report.json summary."""
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(unknown)}")
    out_path, url = split_out(out)
    if url is not None:
        # An object store's OUT: its state must be named (`state=`), like --state.
        if options.get("state") is None:
            raise UsageError(f"out={redact(url)} is an object store: give state= too")
        options["out_url"] = url
    key = Secret(api_key) if api_key else key_from_env()
    options.setdefault("progress", False)
    config = RunConfig(out=out_path, api_key=key, **options)
    return await arun_sources(_sources(jobs), config, sim=sim)


def run(
    jobs: JobsArg,
    *,
    out: str | os.PathLike[str],
    sim: bool = False,
    api_key: str | None = None,
    **options: Any,
) -> RunResult:
    """Blocking `arun`, for scripts and notebooks.

    Inside a running event loop (a Jupyter cell, an async framework) the run
    can neither nest `asyncio.run` in that loop nor use it without blocking
    it: it runs on a fresh event loop in a worker thread, as many libraries
    do, and this call waits for it (the caller's loop is blocked meanwhile;
    `await batchgen.arun(...)` runs on that loop instead and keeps it free).
    Interrupting the wait (the kernel's stop button) cancels the run as a
    second Ctrl-C does on the command line: requests in flight are dropped,
    the state and the report are written, unfinished jobs stay pending."""

    def start() -> Coroutine[Any, Any, RunResult]:
        return arun(jobs, out=out, sim=sim, api_key=api_key, **options)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return eventloop.run(start())
    return _in_worker_thread(start)


def _in_worker_thread(start: Callable[[], Coroutine[Any, Any, RunResult]]) -> RunResult:
    """`asyncio.run(start())` on a worker thread, waited for. The coroutine is made
    on that thread, so none is left never-awaited should the thread fail."""
    runner = asyncio.Runner(loop_factory=eventloop.loop_factory())
    ready = threading.Event()
    task: list[asyncio.Task[RunResult]] = []

    async def main() -> RunResult:
        current = asyncio.current_task()
        if current is not None:
            task.append(current)
        ready.set()
        return await start()

    def go() -> RunResult:
        with runner:
            try:
                return runner.run(main())
            finally:
                ready.set()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchgen-run") as worker:
        # Ctrl-C is held while the run is handed over: one pressed then is raised
        # inside the `try` (where it cancels the run), never in between, where the
        # run would be left going and the wait below would never end.
        held = _hold_sigint()
        future = worker.submit(go)
        try:
            _release_sigint(held)
            return future.result()
        except KeyboardInterrupt:
            ready.wait()
            if task:
                runner.get_loop().call_soon_threadsafe(task[0].cancel)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                future.result()
            raise


def _hold_sigint() -> set[int | signal.Signals] | None:
    """Block SIGINT on this thread (the main one: only it raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _release_sigint(held: set[int | signal.Signals] | None) -> None:
    """Restore the mask; a SIGINT that came meanwhile is raised now."""
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
