"""ray_engine: `--engine ray --workers N`, a planned run carried out by a Ray cluster.

In: the run's store (PostgreSQL, planned and locked by this driver), its
`RunConfig`, prices and image layout. Out: the same `RunResult` fields the
inline engine's `_schedule` fills (counters, stop), the jobs ended in the
shared state by N worker actors.

The runner does everything else as it does inline: plan once under the
driver lock, then report and exit with the same codes. This module only
starts the actors, waits for them, and stops them:

- one `PacerHost` actor (`ray_pacer`): ``--rpm`` and the learned quota hold
  for the whole cluster; one `BudgetHost` when ``--budget`` is set and one
  `CoalescerHost` (`ray_shared`): the budget and the answer cache hold
  across workers;
- N `WorkerHost` actors (`ray_worker`), spread over the nodes, each the
  existing pool over claimed pages of jobs. Ray restarts a worker that died
  and runs it again; the jobs it held are claimable once their lease ends.
  The workers ask for no CPU: the sizes and previews they need are Ray tasks
  of one CPU each (`ray_post`), spread over every core of every node; the
  run's summary says how many ran on each node.
- Ctrl-C: the first asks every worker to stop admitting requests (in-flight
  ones finish within the grace period), the second cancels them at once,
  as inline. A worker that stops the run (a fatal answer, the daily quota,
  the budget) stops the others with the same reason.
- Ray is imported here, lazily, only under ``--engine ray``; the driver joins
  ``--ray-address`` or starts a local cluster (and stops what it started).
  Workers read the API key from their own environment (`ray_worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from batchgen.config import RunConfig, RunMode, key_from_env
from batchgen.engine.limiter import quota_window
from batchgen.engine.outage import host_of
from batchgen.engine.pricing import PriceTable
from batchgen.engine.progress import Progress
from batchgen.engine.ray_pacer import PacerHost
from batchgen.engine.ray_shared import BudgetHost, CoalescerHost
from batchgen.engine.ray_worker import WorkerHost, WorkerReport, WorkerSpec, add_counters
from batchgen.errors import EXIT_INTERRUPTED, BatchgenError, UsageError
from batchgen.models import Counters, StopKind, StopReason
from batchgen.store import Store
from batchgen.store.open import is_pg
from batchgen.store.pg.queue import LEASE_SECONDS

if TYPE_CHECKING:
    from batchgen.engine.runner import RunResult

log = logging.getLogger(__name__)

#: Hidden (tests, chaos runs): the lease of a claimed job, in seconds.
LEASE_ENV = "BATCHGEN_LEASE_SECONDS"
#: Hidden (scripts/bench_ray.py's control): "own" gives each worker its own pacer.
PACER_ENV = "BATCHGEN_RAY_PACER"

INTERRUPTED = StopReason(
    StopKind.INTERRUPTED,
    "interrupted: unfinished jobs stay pending; run the same command again to continue",
    EXIT_INTERRUPTED,
)


def check(config: RunConfig, *, sim: bool) -> None:
    """Refuse what the Ray engine cannot do, before anything is planned or sent."""
    if not is_pg(config.state):
        raise UsageError(
            "--engine ray needs --state postgresql://… that every worker reaches "
            "(a SQLite file cannot be shared between machines)"
        )
    if urlsplit(str(config.state)).password or "password=" in str(config.state).lower():
        raise UsageError(
            "--engine ray: give the database password in PGPASSWORD or ~/.pgpass on every "
            "node, not in the --state URL (it would travel through Ray)"
        )
    if config.mode is RunMode.BATCH:
        raise UsageError(
            "--engine ray sends live requests; --mode batch hands the jobs to Gemini's "
            "Batch Mode from one process (run it without --engine ray)"
        )
    if config.limit is not None:
        raise UsageError("--limit is not supported with --engine ray; run inline for a sample")
    if config.api_key is not None and not sim and key_from_env() != config.api_key:
        raise UsageError(
            "--engine ray: the workers read the API key from GEMINI_API_KEY (or "
            "GOOGLE_API_KEY) in their own environment; set it there (it never travels "
            "through Ray)"
        )
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'batchgen[ray]'") from None


def lease_seconds() -> float:
    try:
        value = float(os.environ.get(LEASE_ENV, ""))
    except ValueError:
        return LEASE_SECONDS
    return value if math.isfinite(value) and value > 0 else LEASE_SECONDS


async def schedule(
    store: Store,
    config: RunConfig,
    prices: PriceTable,
    result: RunResult,
    *,
    sharded: bool,
    redo: frozenset[str],
    sim: bool,
) -> None:
    """Run the planned jobs on the cluster; fills `result.counters` and `result.stop`."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False)
    actors: list[Any] = []
    try:
        spec = WorkerSpec(
            config=_without_key(config),
            prices=prices,
            run_id=store.run_id,
            sharded=sharded,
            lease_seconds=lease_seconds(),
            needs_key=config.api_key is not None and not sim,
            redo=redo,
            own_pacer=os.environ.get(PACER_ENV) == "own",
            post_tasks=True,
        )
        shared = _shared_actors(ray, store, config)
        actors += [a for a in shared if a is not None]
        worker = ray.remote(WorkerHost).options(
            num_cpus=0, max_restarts=-1, max_task_retries=-1, scheduling_strategy="SPREAD"
        )
        workers = [worker.remote(spec, i, *shared) for i in range(config.workers)]
        actors += workers
        progress = Progress(result.plan.to_run, enabled=config.progress)
        tasks = Tasks()
        try:
            reports = await _wait(ray, workers, config, progress, result, tasks)
        finally:
            progress.close(result.counters)
        _record(store, reports)
        if tasks.by_worker:
            result.notes.append(tasks.summary())
            log.info("%s", result.notes[-1])
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started:
            ray.shutdown()


class Tasks:
    """The size and preview tasks of the run, per worker incarnation and node:
    the last count each worker gave (its report, or its last answer to the
    progress poll if it was lost with its node)."""

    def __init__(self) -> None:
        self.by_worker: dict[str, dict[str, int]] = {}

    def note(self, worker: str, nodes: dict[str, int]) -> None:
        if worker and nodes:
            self.by_worker[worker] = nodes

    def per_node(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for nodes in self.by_worker.values():
            total.update(nodes)
        return total

    def summary(self) -> str:
        """One line for the run's summary: tasks per node (ids shortened)."""
        per_node = self.per_node()
        shown = ", ".join(f"{node[:8]} {n}" for node, n in per_node.most_common())
        noun = "node" if len(per_node) == 1 else "nodes"
        return (
            f"sizes and previews: {per_node.total()} Ray tasks on {len(per_node)} {noun} ({shown})"
        )


def _record(store: Store, reports: list[WorkerReport]) -> None:
    """The workers' requests and retries go on the run's record; late writes are said."""
    requests, refused, late, dropped, retried = 0, 0, 0, 0, dict[str, int]()
    for report in reports:
        requests += report.requests
        refused += report.refused
        late += report.late
        dropped += report.dropped
        for kind, n in report.retried.items():
            retried[kind] = retried.get(kind, 0) + n
    store.add_run_counts(requests, retried)
    if refused:
        log.warning(
            "%d late writes refused: a worker's lease had ended (it was frozen or cut off) "
            "and another worker took its jobs over; %d of them were requests answered "
            "after it, whose cost is on record",
            refused,
            late,
        )
    if dropped:
        log.warning(
            "%d jobs not sent by a worker whose lease on them had ended: another worker "
            "took them over",
            dropped,
        )


def _without_key(config: RunConfig) -> RunConfig:
    """The config the workers are given: no key, and no header that may carry one."""
    from dataclasses import replace

    return replace(config, api_key=None, extra_headers={})


def _shared_actors(ray: Any, store: Store, config: RunConfig) -> tuple[Any, Any, Any]:
    """The run's pacer, budget (None without --budget) and coalescer actors."""
    options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
    scope = f"{host_of(config.base_url)} {config.mode}"
    state = (config.out, str(config.state))
    pacer = ray.remote(PacerHost).options(**options)
    pacer = pacer.remote(config.rpm, quota_window(), state, scope)
    budget = None
    if config.budget is not None:
        budget = ray.remote(BudgetHost).options(**options).remote(config.budget, store.spent())
    coalescer = ray.remote(CoalescerHost).options(**options).remote()
    return pacer, budget, coalescer


async def _wait(
    ray: Any,
    workers: list[Any],
    config: RunConfig,
    progress: Progress,
    result: RunResult,
    tasks: Tasks,
) -> list[WorkerReport]:
    """Wait for every worker's report; stop them all on the first stop or signal."""
    running = {asyncio.ensure_future(w.run.remote()): w for w in workers}
    reports: list[WorkerReport] = []
    stop: StopReason | None = None

    def stop_all(reason: StopReason) -> None:
        nonlocal stop
        stop = stop or reason
        for w in workers:
            w.stop.remote(reason)

    def cancel_all() -> None:
        for task in running:
            task.cancel()

    with _two_stage(lambda: stop_all(INTERRUPTED), cancel_all, config.grace_seconds):
        while running:
            done, _ = await asyncio.wait(running, timeout=1.0)
            for task in done:
                running.pop(task)
                report = _report_of(ray, task)
                reports.append(report)
                tasks.note(report.name, report.nodes)
                if report.stop is not None:
                    stop_all(report.stop)
            result.counters = await _counters(reports, running.values(), tasks)
            progress.update(result.counters)
    result.counters = Counters()
    for report in reports:
        add_counters(result.counters, report.counters)
    result.stop = stop
    return reports


def _report_of(ray: Any, task: asyncio.Future[WorkerReport]) -> WorkerReport:
    """A worker's report; its cancellation (a second Ctrl-C) is an interrupted one."""
    if task.cancelled():
        return WorkerReport(stop=INTERRUPTED)
    try:
        return task.result()
    except ray.exceptions.TaskCancelledError:
        return WorkerReport(stop=INTERRUPTED)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, BatchgenError):
            raise exc.cause from None
        raise


async def _counters(reports: list[WorkerReport], running: Any, tasks: Tasks) -> Counters:
    total = Counters()
    for report in reports:
        add_counters(total, report.counters)
    asked = [asyncio.ensure_future(worker.tally.remote()) for worker in running]
    if asked:
        # A worker on a node that went away answers only once Ray has noticed:
        # the progress line goes on without it.
        await asyncio.wait(asked, timeout=1.0)
    for answer in asked:
        if answer.done() and not answer.cancelled() and answer.exception() is None:
            name, counters, nodes = answer.result()
            add_counters(total, counters)
            tasks.note(name, nodes)
        else:
            answer.cancel()
    return total


@contextlib.contextmanager
def _two_stage(
    first: Callable[[], None], second: Callable[[], None], grace: float
) -> Iterator[None]:
    """SIGINT/SIGTERM: the first drains (`first`), the second cancels (`second`)."""
    loop = asyncio.get_running_loop()
    heard = 0

    def on_signal() -> None:
        nonlocal heard
        heard += 1
        if heard == 1:
            log.warning(
                "interrupted: finishing in-flight requests (up to %gs); "
                "interrupt again to stop at once",
                grace,
            )
            first()
        else:
            second()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, on_signal)
            installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
