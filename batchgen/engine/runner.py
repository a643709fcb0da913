"""pipeline: job sources and a `RunConfig` in, a finished (or cleanly stopped) run out.

Wires the stages in the design's order — reader, planner, pool (client,
sink), store, report — and owns the run's lifecycle: the state lock, signal
handling (`signals`: first Ctrl-C/SIGTERM drains, the second cancels), the
watch (`watch`: progress and report refreshes), and the `finally`
that always commits the store and rewrites the report. The inputs (job files,
recipes, records from Python: `batchgen.jobs.inputs`) are read once, by the
reader's pass that feeds the planner inside one unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from batchgen.catalogue import load_catalogue
from batchgen.config import RunConfig, RunMode
from batchgen.engine.budget import Budget
from batchgen.engine.cache import SharedCache
from batchgen.engine.limiter import Pacer
from batchgen.engine.planner import SETTLED_INPUTS, Plan, plan, settled, sources_digest
from batchgen.engine.policy import stop_for
from batchgen.engine.pool import Pool
from batchgen.engine.pricing import PriceTable, TierCosts
from batchgen.engine.progress import Progress
from batchgen.engine.redo import move_history, redo_map
from batchgen.engine.sender import http_sender
from batchgen.engine.signals import TwoStage, sigterm_as_interrupt
from batchgen.engine.watch import Watch
from batchgen.errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    InputError,
    UsageError,
)
from batchgen.jobs import reader
from batchgen.jobs.columns import DEFAULT_OPTIONS, ReadOptions
from batchgen.jobs.inputs import FileSource, JobSource
from batchgen.jobs.models_check import ModelRules
from batchgen.models import Counters, Job, StopKind, StopReason
from batchgen.output.sink import SHARD_THRESHOLD, DiskFullError, is_disk_full
from batchgen.output.storage import LocalOutput, Output, run_output
from batchgen.report.junit import judge_folder, write_run_junit
from batchgen.report.summary import summarize, write_reports
from batchgen.store import DB_NAME, STATE_DIR, Store
from batchgen.store.open import open_state, state_exists
from batchgen.store.recorder import Recorder, wanted

log = logging.getLogger(__name__)

#: Meta key: "1" while the report files describe every job row as it is.
REPORT_CURRENT = "report_current"

#: Seconds an interrupted or aborted run may spend making missing gallery previews.
THUMB_BUDGET_ON_STOP = 5.0

#: The store's lock file in the state folder (`Store` holds it while open).
LOCK_NAME = "lock"


@dataclass
class RunResult:
    """What a run did. `report` is the summary written to report.json."""

    exit_code: int
    plan: Plan
    counters: Counters = field(default_factory=Counters)
    report: dict[str, Any] = field(default_factory=dict)
    stop: StopReason | None = None
    #: After a budget stop: this run's jobs still pending and what they would
    #: cost, priced as the run priced its requests (`--prices`, each job's model).
    left: tuple[int, float] | None = None
    #: Dry run: jobs per model that has no price (left out of the estimate).
    unpriced: dict[str, int] = field(default_factory=dict)
    #: Dry run: the estimate at every tier (live, flex, Batch Mode).
    tiers: TierCosts | None = None
    #: For people: Batch Mode's submitted, expired, resubmitted batches; the Ray
    #: engine's size and preview tasks per node.
    notes: list[str] = field(default_factory=list)


def sources_for(
    paths: Iterable[str | os.PathLike[str]], options: ReadOptions = DEFAULT_OPTIONS
) -> list[JobSource]:
    """One source per input file: a recipe (`.toml`) is expanded as it is read;
    any other file is a job file (its format is the reader's to judge).
    `options`: how to read them (`--delimiter`, `--sheet`, `--ignore-columns`)."""
    sources: list[JobSource] = []
    for given in paths:
        if Path(given).suffix.lower() == ".toml":
            # Imported here: the recipe machinery is slow to import.
            from batchgen.recipes.expand import RecipeSource

            sources.append(RecipeSource(given, options))
        else:
            sources.append(FileSource(given, options))
    return sources


def model_rules(config: RunConfig, prices: PriceTable) -> ModelRules:
    """The checks of each job against its model (a retired ``--model`` fails here)."""
    rules = ModelRules(prices.catalogue, config.model, config.image_size, prices.billing)
    rules.check_defaults()
    return rules


def read_jobs(sources: Iterable[JobSource], config: RunConfig, rules: ModelRules) -> Iterator[Job]:
    """The reader's pass, each job checked against its model and given the
    run's ``--image-size`` when it names none (so its request, fingerprint and
    report carry the size it is sent with)."""
    jobs = reader.read_sources(sources, rules=rules)
    size = config.image_size
    if size is None:
        return jobs
    return (job if job.image_size else replace(job, image_size=size) for job in jobs)


def dry_run(sources: Iterable[JobSource], config: RunConfig, prices: PriceTable) -> RunResult:
    """Count new, changed and done jobs and estimate the cost, without sending or writing:
    the run's own pass over the inputs, planned against a read-only store. Jobs
    of a model without a price are counted apart, never priced as another."""
    unpriced: dict[str, int] = {}
    tiers = TierCosts(prices)

    def expected(job: Job) -> float:
        model = job.model or config.model
        usd = prices.expected(model, job.prompt, len(job.images), job.image_size)
        if usd is None:
            unpriced[model] = unpriced.get(model, 0) + 1
            return 0.0
        tiers.add(model, usd)
        return usd

    rules = model_rules(config, prices)
    has_state = state_exists(config.out, config.state)
    readonly = open_state(config.out, config.state, readonly=True)
    with readonly if has_state else contextlib.nullcontext() as store:
        result = plan(
            read_jobs(sources, config, rules),
            store,
            default_model=config.model,
            retry_failed=config.retry_failed,
            retry_blocked=config.retry_blocked,
            write=False,
            expected_cost=expected,
            redo=redo_map(store, config) if store is not None else None,
            output=run_output(config),
        )
    return RunResult(EXIT_OK, result, unpriced=unpriced, tiers=tiers)


@contextlib.asynccontextmanager
async def _endpoint(config: RunConfig, sim: bool) -> AsyncIterator[RunConfig]:
    if not sim:
        yield config
        return
    from batchgen.sim import SimConfig, Simulator

    # Batch Mode on the simulator: a simulated hour passes each real second.
    scale = 3600.0 if config.mode is RunMode.BATCH else 1.0
    async with Simulator(
        SimConfig(seed=config.seed or 0, models_file=config.models_file, time_scale=scale)
    ) as server:
        yield replace(config, base_url=server.base_url)


async def arun_files(
    paths: Sequence[str | os.PathLike[str]], config: RunConfig, *, sim: bool = False
) -> RunResult:
    """The whole run of job files and recipes (`sources_for`)."""
    return await arun_sources(sources_for(paths), config, sim=sim)


async def arun_sources(
    sources: Iterable[JobSource], config: RunConfig, *, sim: bool = False
) -> RunResult:
    """The whole run. Raises `BatchgenError`s for bad input/usage before anything is sent.

    `sources` is read once, lazily. A sequence of sources that are all
    identified by their bytes may take the settled-folder fast path."""
    with sigterm_as_interrupt():
        return await _arun(sources, config, sim=sim)


async def _arun(sources: Iterable[JobSource], config: RunConfig, *, sim: bool) -> RunResult:
    catalogue = load_catalogue(config.models_file)
    prices = PriceTable.load(config.prices_file, catalogue, config.mode_spec.tier)
    if not config.dry_run and config.api_key is None and not sim:
        raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or use --sim")
    digest = ""
    if not config.dry_run and not (config.retry_failed or config.retry_blocked or config.redo):
        # The run's defaults shape every request: part of what "the same inputs" means.
        defaults = config.model + (f"@{config.image_size}" if config.image_size else "")
        digest = sources_digest(sources, defaults)
        done = _already_settled(config, digest) if digest else None
        if done is not None:
            return done
    if config.dry_run:
        return dry_run(sources, config, prices)
    if config.engine == "ray":
        from batchgen.engine import ray_engine

        ray_engine.check(config, sim=sim)
    output = run_output(config)
    with (
        _no_trace_of_bad_input(config.out, config.state),
        open_state(config.out, config.state) as store,
    ):
        result = RunResult(EXIT_OK, Plan())
        result.plan, sharded, redo = _plan_run(store, sources, config, prices, output)
        output.clean_temporaries()
        move_history(store, output)
        try:
            async with _endpoint(config, sim) as cfg:
                if cfg.engine == "ray":
                    from batchgen.engine import ray_engine

                    await ray_engine.schedule(
                        store, cfg, prices, result, sharded=sharded, redo=redo, sim=sim
                    )
                else:
                    await _schedule(store, cfg, prices, result, sharded=sharded, redo=redo)
        finally:
            result.exit_code = judge_folder(store, _exit_code(result), config.fail_under)
            try:
                with store.transaction():
                    store.end_run(result.exit_code)
                    store.drop_stale_reviews()
                if result.stop is not None and result.stop.kind is StopKind.BUDGET:
                    result.left = _left_to_run(store, config, prices)
                # A stopped run exits within seconds; the next report makes missing previews.
                budget = None if result.stop is None else THUMB_BUDGET_ON_STOP
                result.report = _report(store, result, thumb_budget_s=budget, output=output)
                write_run_junit(store, config, result.exit_code, result.stop)
                settled_now = result.stop is None and result.report["pending"] == 0
                with store.transaction():
                    store.set_meta(SETTLED_INPUTS, digest if settled_now else "")
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise DiskFullError(
                    f"disk full while writing the report in {output}; free some space "
                    "and run the same command again (finished images are kept)"
                ) from exc
    return result


def _plan_run(
    store: Store,
    sources: Iterable[JobSource],
    config: RunConfig,
    prices: PriceTable,
    output: Output | None = None,
) -> tuple[Plan, bool, frozenset[str]]:
    """Read, check and plan every job in one pass and one unit of work: the run's
    record, its jobs and its meta commit together once the last row is read,
    or a bad row anywhere (`InputError` as the pass ends) rolls all of it back,
    as does a `--budget` over a model without a price.
    Returns the plan, whether images are sharded into sub-folders, and the
    jobs made again for a reviewer (`--redo rejected`: no earlier answer for them)."""
    rules = model_rules(config, prices)
    with store.transaction():
        store.start_run()
        redo = redo_map(store, config)
        planned = plan(
            read_jobs(sources, config, rules),
            store,
            default_model=config.model,
            retry_failed=config.retry_failed,
            retry_blocked=config.retry_blocked,
            redo=redo,
            output=output,
        )
        unpriced = prices.unpriced(rules.used) if config.budget is not None else []
        if unpriced:
            raise UsageError(
                f"--budget cannot be kept: no price for {', '.join(unpriced)} (not in the "
                "model catalogue); give one with --prices FILE or --models FILE"
            )
        sharded = store.meta("sharded")
        if sharded is None:
            sharded = "1" if planned.total > SHARD_THRESHOLD else "0"
            store.set_meta("sharded", sharded)
        if planned.to_run:
            store.set_meta(REPORT_CURRENT, "0")
    return planned, sharded == "1", frozenset(redo)


@contextlib.contextmanager
def _no_trace_of_bad_input(out: Path, state_at: str | None) -> Iterator[None]:
    """Bad input leaves the output folder as it was. The planning transaction
    undoes the rows; a folder that had no state before this run has its new
    state file, journals and lock removed, and the folders this run made, so a
    typo in a job file leaves nothing behind (the store must exist to plan
    into, and the pass that plans is the one that finds the typo). A state
    given with `--state` is the user's: only its rows are undone."""
    if state_at is not None:
        yield
        return
    state = out / STATE_DIR
    fresh = not (state / DB_NAME).exists()
    made = [folder for folder in (state, out, *out.parents) if not folder.exists()]
    try:
        yield
    except InputError:
        if fresh:
            _remove_state(state)
            for folder in made:  # deepest first; one that is no longer empty stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def _remove_state(state: Path) -> None:
    """Delete a state just made, under its lock: a run that got in since is left alone."""
    with contextlib.suppress(OSError):
        fd = os.open(state / LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME):
                (state / name).unlink(missing_ok=True)
        finally:
            os.close(fd)


def _already_settled(config: RunConfig, digest: str) -> RunResult | None:
    """The fast path of a re-run: these exact inputs already finished in this
    folder, so there is nothing to validate, plan or send (a million-line file
    is hashed, not parsed). None when the full path must run."""
    if not state_exists(config.out, config.state):
        return None
    with open_state(config.out, config.state) as store:
        if not settled(store, digest):
            return None
        with store.transaction():
            store.start_run()
        counts = store.counts()
        result = RunResult(EXIT_OK, Plan(total=sum(counts.values()), done=counts["done"]))
        result.exit_code = judge_folder(store, EXIT_OK, config.fail_under)
        with store.transaction():
            store.end_run(result.exit_code)
        result.report = _report(store, result, output=run_output(config))
        write_run_junit(store, config, result.exit_code, result.stop)
    return result


def _report(
    store: Store,
    result: RunResult,
    *,
    thumb_budget_s: float | None = None,
    output: Output | None = None,
) -> dict[str, Any]:
    """The run's summary; the report files are rewritten only when a job changed.
    `output`: where OUT's files are, when not the store's folder (an object store)."""
    if _reports_current(store, result, output):
        return summarize(store, output)
    summary = write_reports(store, thumb_budget_s=thumb_budget_s, output=output)
    with store.transaction():
        store.set_meta(REPORT_CURRENT, "1")
    return summary


def _reports_current(store: Store, result: RunResult, output: Output | None = None) -> bool:
    """Nothing to do and the reports of the last run still stand: re-running a
    finished million-job folder must not rewrite a million report rows."""
    if result.plan.to_run or result.counters.requests or result.stop is not None:
        return False
    names = ("report.json", "failed.jsonl", "report.html")
    where = output or LocalOutput(store.out)
    present = all(where.exists(name) for name in names)
    return present and store.meta(REPORT_CURRENT) == "1"


def _recorder(
    store: Store, config: RunConfig, to_run: int, on_error: Callable[[Exception], None]
) -> Recorder | None:
    """A process to commit the pool's job rows and small images (`store/recorder.py`):
    for SQLite state and a local folder, on runs long enough to pay for it."""
    if not store.holds_rows or not wanted(to_run):
        return None
    if run_output(config).root is None:
        return None
    return Recorder(store.path, store.out, on_error=on_error)


async def _schedule(
    store: Store,
    config: RunConfig,
    prices: PriceTable,
    result: RunResult,
    *,
    sharded: bool,
    redo: frozenset[str] = frozenset(),
) -> None:
    to_run = result.plan.to_run if config.limit is None else min(config.limit, result.plan.to_run)
    if config.mode is RunMode.BATCH:
        from batchgen.engine.batchrun import schedule

        result.counters, result.stop, result.notes = await schedule(
            store, config, prices, to_run=to_run, sharded=sharded
        )
        return
    progress = Progress(to_run, enabled=config.progress)
    recorder = _recorder(
        store,
        config,
        to_run,
        lambda exc: pool.request_stop(stop_for(exc, "the state could not be saved")),
    )
    try:
        connector = aiohttp.TCPConnector(
            limit=config.concurrency, limit_per_host=config.concurrency
        )
        shared = SharedCache(config.cache_dir) if config.cache_dir is not None else None
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            pool = Pool(
                config,
                store,
                http_sender(session, config),
                prices=prices,
                pacer=Pacer(config.rpm, slow_start=True),
                budget=Budget(config.budget, store.spent()),
                sharded=sharded,
                on_change=progress.update,
                shared_cache=shared,
                fresh=redo,
                recorder=recorder,
            )
            progress.note = pool.outage.note
            watch = Watch(
                config.out_url or config.out,
                progress,
                lambda: pool.counters,
                report_every=config.report_every,
                state=config.state,
            )
            watch.start()
            handlers = TwoStage(pool, config.grace_seconds)
            try:
                with handlers:
                    result.counters = await pool.run(store.pending(config.limit))
            except asyncio.CancelledError:
                if handlers.interrupts < 2:
                    raise
                pool.stop = pool.stop or StopReason(
                    StopKind.INTERRUPTED, "interrupted", EXIT_INTERRUPTED
                )
            finally:
                if recorder is not None:
                    recorder.close()
                result.stop = pool.stop
                result.counters = pool.counters
                await watch.close()
                progress.close(pool.counters)
                if shared is not None:
                    shared.close()
    finally:
        # Again, for a failure before the pool ran (closing twice is harmless):
        # the process must not outlive the run.
        if recorder is not None:
            recorder.close()


def _left_to_run(store: Store, config: RunConfig, prices: PriceTable) -> tuple[int, float]:
    """This run's pending jobs and their expected cost, estimated as the dry run does."""
    count, usd = 0, 0.0
    for job in store.pending():
        count += 1
        usd += (
            prices.expected(job.model or config.model, job.prompt, len(job.images), job.image_size)
            or 0.0
        )
    return count, usd


def _exit_code(result: RunResult) -> int:
    if result.stop is not None:
        return result.stop.exit_code
    c = result.counters
    if c.failed or c.blocked or c.skipped:
        return EXIT_SOME_FAILED
    return EXIT_OK


def describe(result: RunResult, budget: float | None = None) -> str:
    """The one-paragraph end-of-run message for people. Each figure is named
    once: after a budget stop, the stop's sentence says what was spent."""
    lines = list(result.notes)
    stop = result.stop
    if stop is not None:
        lines.append(stop.message)
    if result.left is not None:
        count, usd = result.left
        lines[-1:] = [f"{lines[-1]}; the {count} jobs left would cost about ${usd:.2f}"]
    r = result.report
    if r:
        spent = (
            ""
            if stop is not None and stop.kind is StopKind.BUDGET
            else (f"; spent ${r['cost_usd']:.4f} in all")
        )
        lines.append(
            f"{r['done']} done, {r['blocked']} blocked, {r['failed']} failed, "
            f"{r['skipped']} skipped, {r['pending']} pending of {r['total']}; "
            f"{result.counters.requests} requests this run{spent}"
        )
        upscaled = r.get("upscaled", 0)
        if upscaled:
            noun = "platform size was" if upscaled == 1 else "platform sizes were"
            lines.append(f"{upscaled} {noun} upscaled beyond the model's output; see report.json")
    return "\n".join(lines)


__all__ = ["EXIT_ABORTED", "RunResult", "arun_files", "arun_sources", "describe", "sources_for"]
