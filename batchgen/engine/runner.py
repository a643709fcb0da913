"""pipeline: job files and a `RunConfig` in, a finished (or cleanly stopped) run out.

Wires the stages in the design's order — reader, planner, scheduler (client,
sink), store, report — and owns the run's lifecycle: the state lock, signal
handling (first Ctrl-C/SIGTERM drains, the second cancels), and the `finally`
that always commits the store and rewrites the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from batchgen.config import RunConfig
from batchgen.engine.budget import Budget
from batchgen.engine.cache import SharedCache
from batchgen.engine.limiter import Pacer
from batchgen.engine.planner import SETTLED_INPUTS, Plan, inputs_digest, plan, settled
from batchgen.engine.pool import Pool
from batchgen.engine.pricing import PriceTable
from batchgen.engine.progress import Progress
from batchgen.engine.sender import http_sender
from batchgen.errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    UsageError,
)
from batchgen.jobs import reader
from batchgen.models import Counters, Job, StopKind, StopReason
from batchgen.output.sink import SHARD_THRESHOLD, DiskFullError, clean_temporaries, is_disk_full
from batchgen.report.summary import summarize, write_reports
from batchgen.store.db import DB_NAME, STATE_DIR, Store

log = logging.getLogger(__name__)

#: Meta key: "1" while the report files describe every job row as it is.
REPORT_CURRENT = "report_current"

#: Seconds an interrupted or aborted run may spend making missing gallery previews.
THUMB_BUDGET_ON_STOP = 5.0


@dataclass
class RunResult:
    """What a run did. `report` is the summary written to report.json."""

    exit_code: int
    plan: Plan
    counters: Counters = field(default_factory=Counters)
    report: dict[str, Any] = field(default_factory=dict)
    stop: StopReason | None = None


def expand_inputs(paths: Sequence[Path], out: Path | None) -> list[Path]:
    """Recipe files (`.toml`) become expanded JSONL job files; others pass through."""
    result: list[Path] = []
    for path in paths:
        if path.suffix.lower() != ".toml":
            result.append(path)
            continue
        from batchgen.recipes.expand import write_expanded

        dest_dir = (out / STATE_DIR / "expanded") if out is not None else None
        if dest_dir is None:
            import tempfile

            dest_dir = Path(tempfile.mkdtemp(prefix="batchgen-expand-"))
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / f"{path.stem}.jsonl"
        write_expanded(path, dest)
        result.append(dest)
    return result


def dry_run(paths: Sequence[Path], config: RunConfig, prices: PriceTable) -> RunResult:
    """Count new, changed and done jobs and estimate the cost, without sending or writing."""

    def expected(job: Job) -> float:
        return prices.expected(job.model or config.model, job.prompt, len(job.images))

    state = config.out / STATE_DIR / DB_NAME
    if state.exists():
        with Store(config.out, readonly=True) as store:
            result = plan(
                reader.read_jobs(paths),
                store,
                default_model=config.model,
                retry_failed=config.retry_failed,
                retry_blocked=config.retry_blocked,
                write=False,
                expected_cost=expected,
            )
    else:
        result = Plan()
        for job in reader.read_jobs(paths):
            result.total += 1
            result.new += 1
            result.expected_cost += expected(job)
    return RunResult(EXIT_OK, result)


@contextlib.asynccontextmanager
async def _endpoint(config: RunConfig, sim: bool) -> AsyncIterator[RunConfig]:
    if not sim:
        yield config
        return
    from dataclasses import replace

    from batchgen.sim import SimConfig, Simulator

    async with Simulator(SimConfig(seed=config.seed or 0)) as server:
        yield replace(config, base_url=server.base_url)


async def arun_files(paths: Sequence[Path], config: RunConfig, *, sim: bool = False) -> RunResult:
    """The whole run. Raises `BatchgenError`s for bad input/usage before anything is sent."""
    with _sigterm_as_interrupt():
        return await _arun_files(paths, config, sim=sim)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, like Ctrl-C, while validating, planning and
    writing the report (the scheduler has its own two-stage handlers in between), so
    a supervisor's stop never kills the run without its `finally`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


async def _arun_files(paths: Sequence[Path], config: RunConfig, *, sim: bool) -> RunResult:
    paths = expand_inputs(paths, None if config.dry_run else config.out)
    prices = PriceTable.load(config.prices_file)
    if not config.dry_run and config.api_key is None and not sim:
        raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or use --sim")
    digest = ""
    if not config.dry_run and not (config.retry_failed or config.retry_blocked):
        with contextlib.suppress(OSError):  # an unreadable file is validate's to report
            digest = inputs_digest(paths, config.model)
        done = _already_settled(config, digest) if digest else None
        if done is not None:
            return done
    reader.validate(paths)
    if config.dry_run:
        return dry_run(paths, config, prices)
    config.out.mkdir(parents=True, exist_ok=True)
    with Store(config.out) as store:
        clean_temporaries(config.out)
        with store.transaction():
            store.start_run()
        sharded_meta = store.meta("sharded")
        result = RunResult(EXIT_OK, Plan())
        try:
            result.plan = plan(
                reader.read_jobs(paths),
                store,
                default_model=config.model,
                retry_failed=config.retry_failed,
                retry_blocked=config.retry_blocked,
            )
            with store.transaction():
                if sharded_meta is None:
                    sharded_meta = "1" if result.plan.total > SHARD_THRESHOLD else "0"
                    store.set_meta("sharded", sharded_meta)
                if result.plan.to_run:
                    store.set_meta(REPORT_CURRENT, "0")
            async with _endpoint(config, sim) as cfg:
                await _schedule(store, cfg, prices, result, sharded=sharded_meta == "1")
        finally:
            result.exit_code = _exit_code(result)
            try:
                with store.transaction():
                    store.end_run(result.exit_code)
                # A stopped run exits within seconds; the next report makes missing previews.
                budget = None if result.stop is None else THUMB_BUDGET_ON_STOP
                result.report = _report(store, result, thumb_budget_s=budget)
                settled_now = result.stop is None and result.report["pending"] == 0
                with store.transaction():
                    store.set_meta(SETTLED_INPUTS, digest if settled_now else "")
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise DiskFullError(
                    f"disk full while writing the report in {config.out}; free some space "
                    "and run the same command again (finished images are kept)"
                ) from exc
    return result


def _already_settled(config: RunConfig, digest: str) -> RunResult | None:
    """The fast path of a re-run: these exact inputs already finished in this
    folder, so there is nothing to validate, plan or send (a million-line file
    is hashed, not parsed). None when the full path must run."""
    if not (config.out / STATE_DIR / DB_NAME).exists():
        return None
    with Store(config.out) as store:
        if not settled(store, digest):
            return None
        with store.transaction():
            store.start_run()
        counts = store.counts()
        result = RunResult(EXIT_OK, Plan(total=sum(counts.values()), done=counts["done"]))
        with store.transaction():
            store.end_run(EXIT_OK)
        result.report = _report(store, result)
    return result


def _report(
    store: Store, result: RunResult, *, thumb_budget_s: float | None = None
) -> dict[str, Any]:
    """The run's summary; the report files are rewritten only when a job changed."""
    if _reports_current(store, result):
        return summarize(store)
    summary = write_reports(store, thumb_budget_s=thumb_budget_s)
    with store.transaction():
        store.set_meta(REPORT_CURRENT, "1")
    return summary


def _reports_current(store: Store, result: RunResult) -> bool:
    """Nothing to do and the reports of the last run still stand: re-running a
    finished million-job folder must not rewrite a million report rows."""
    if result.plan.to_run or result.counters.requests or result.stop is not None:
        return False
    names = ("report.json", "failed.jsonl", "report.html")
    present = all((store.out / name).is_file() for name in names)
    return present and store.meta(REPORT_CURRENT) == "1"


async def _schedule(
    store: Store, config: RunConfig, prices: PriceTable, result: RunResult, *, sharded: bool
) -> None:
    to_run = result.plan.to_run if config.limit is None else min(config.limit, result.plan.to_run)
    progress = Progress(to_run, enabled=config.progress)
    connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=config.concurrency)
    shared = SharedCache(config.cache_dir) if config.cache_dir is not None else None
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        scheduler = Pool(
            config,
            store,
            http_sender(session, config),
            prices=prices,
            pacer=Pacer(config.rpm),
            budget=Budget(config.budget, store.spent()),
            sharded=sharded,
            on_change=progress.update,
            shared_cache=shared,
        )
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interrupts = 0

        def on_signal() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                # Said at once, so that the person (or supervisor) knows it was heard.
                log.warning(
                    "interrupted: finishing in-flight requests (up to %gs); "
                    "interrupt again to stop at once",
                    config.grace_seconds,
                )
                scheduler.request_stop(
                    StopReason(
                        StopKind.INTERRUPTED,
                        "interrupted: finishing in-flight requests",
                        EXIT_INTERRUPTED,
                    )
                )
            elif task is not None:
                task.cancel()

        installed = []
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
        try:
            result.counters = await scheduler.run(store.pending(config.limit))
        except asyncio.CancelledError:
            if interrupts < 2:
                raise
            scheduler.stop = scheduler.stop or StopReason(
                StopKind.INTERRUPTED, "interrupted", EXIT_INTERRUPTED
            )
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
                # asyncio resets to the default; put back what was there before.
                handler = previous[sig]
                if handler is not None:
                    signal.signal(sig, handler)
            result.stop = scheduler.stop
            result.counters = scheduler.counters
            progress.close(scheduler.counters)
            if shared is not None:
                shared.close()


def _exit_code(result: RunResult) -> int:
    if result.stop is not None:
        return result.stop.exit_code
    c = result.counters
    if c.failed or c.blocked or c.skipped:
        return EXIT_SOME_FAILED
    return EXIT_OK


def describe(result: RunResult, budget: float | None = None) -> str:
    """The one-paragraph end-of-run message for people."""
    lines = []
    if result.stop is not None:
        lines.append(result.stop.message)
    r = result.report
    if r:
        lines.append(
            f"{r['done']} done, {r['blocked']} blocked, {r['failed']} failed, "
            f"{r['skipped']} skipped, {r['pending']} pending of {r['total']}; "
            f"{result.counters.requests} requests this run; spent ${r['cost_usd']:.4f} in all"
        )
    if result.stop is not None and result.stop.kind == "budget" and r:
        per = PriceTable().price("gemini-2.5-flash-image").per_image
        lines.append(f"the {r['pending']} jobs left would cost about ${r['pending'] * per:.2f}")
    return "\n".join(lines)


__all__ = ["EXIT_ABORTED", "RunResult", "arun_files", "describe"]
