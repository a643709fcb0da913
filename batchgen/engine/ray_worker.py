"""ray_worker: one Ray worker actor, the existing `Pool` over pages of claimed jobs.

In: a `WorkerSpec` (the run's config without its key, the run id, the image
layout), and the handles of the run's shared actors (pacer, budget,
coalescer). Out: the jobs it claimed, ended in the shared state, and a
`WorkerReport` (counters, stop, requests on record, refused writes).

- **Claims**: the pool's feeder reads jobs from `store.claim` pages of
  `--concurrency` jobs (``FOR UPDATE SKIP LOCKED``: two workers never get one
  job), and a heartbeat renews the worker's leases every third of the lease
  (`store/pg/queue.py`). Every write to a claimed job's row is fenced by the
  lease: a worker frozen past it (a zombie) changes nothing.
- **Rounds**: when no job is free the pool ends its round; the worker hands
  back the leases it did not end (a chained job waiting for a parent that
  another worker runs) and, while the run has jobs pending, looks again
  shortly: a job whose worker died is free once its lease expires, and a
  waiting child once its parent ended. It stops when nothing is pending, or
  when what is pending is leased by nobody and its last round ended nothing
  (a child whose parent is not in this run: it stays pending, as inline).
- **Leases before sending**: the pool asks `store.holds` just before each
  request; a worker that wakes from a freeze past its lease drops the jobs
  another worker took over, unsent. What it had in flight is answered and
  paid: its cost is recorded (`store/pg/late.py`), its outcome refused.
- **Sizes and previews** are Ray tasks (`ray_post`) when the spec says so
  (the engine does), awaited before each job's end is committed.
- **The key** is read here, from this process's environment, by variable
  name (`config.key_from_env`): it never travels through Ray (actor
  arguments and `runtime_env` are visible in Ray's state and files).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

import aiohttp

from batchgen.config import RunConfig, key_from_env
from batchgen.engine.budget import Budget, Reserves
from batchgen.engine.cache import SharedCache
from batchgen.engine.limiter import Pacer
from batchgen.engine.pool import Pool
from batchgen.engine.pricing import PriceTable
from batchgen.engine.ray_pacer import RemotePacer
from batchgen.engine.ray_post import RayExtras
from batchgen.engine.ray_shared import RemoteBudget, RemoteCoalescer
from batchgen.engine.sender import http_sender
from batchgen.errors import UsageError
from batchgen.models import Counters, Job, StopReason
from batchgen.output.storage import run_output
from batchgen.store.pg import PgStore

#: Seconds between looks at the run while its last jobs are leased by others.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of a run is started with (no secret in it)."""

    config: RunConfig
    prices: PriceTable
    run_id: int
    sharded: bool
    lease_seconds: float
    #: The key must be found in each worker's environment (not --sim).
    needs_key: bool
    redo: frozenset[str] = frozenset()
    #: Benchmarks only: each worker paces alone (what N separate runs would do).
    own_pacer: bool = False
    #: Sizes and previews as Ray tasks (`ray_post`); False: on the writer's threads.
    post_tasks: bool = False


@dataclass
class WorkerReport:
    #: The worker's incarnation (a restarted actor has a new one).
    name: str = ""
    counters: Counters = field(default_factory=Counters)
    stop: StopReason | None = None
    requests: int = 0
    retried: dict[str, int] = field(default_factory=dict)
    #: Writes the state refused because this worker's lease had ended.
    refused: int = 0
    #: Of those, requests answered after it: paid, recorded as late spend.
    late: int = 0
    #: Jobs dropped unsent: their lease had passed to another worker.
    dropped: int = 0
    #: Size and preview tasks, by the node they ran on.
    nodes: dict[str, int] = field(default_factory=dict)


def add_counters(total: Counters, more: Counters) -> None:
    for f in fields(Counters):
        setattr(total, f.name, getattr(total, f.name) + getattr(more, f.name))


class WorkerHost:
    """One worker actor (made an actor by `ray_engine`, so Ray is imported only there)."""

    def __init__(
        self, spec: WorkerSpec, index: int, pacer: Any, budget: Any, coalescer: Any
    ) -> None:
        self.spec = spec
        #: Stable across Ray's restarts of this actor: its shared reservations and
        #: requests in flight are given back under this name when it starts again.
        self.slot = f"w{index}"
        self.name = f"{self.slot}@{socket.gethostname()}:{os.getpid()}"
        self._pacer, self._budget, self._coalescer = pacer, budget, coalescer
        if budget is not None:
            budget.forget.remote(self.slot)
        coalescer.forget.remote(self.slot)
        self._stop: StopReason | None = None
        self._pool: Pool | None = None
        self._report = WorkerReport()
        self._own: Pacer | None = None
        self._extras: RayExtras | None = None

    def _config(self) -> RunConfig:
        key = key_from_env()
        if key is None and self.spec.needs_key:
            raise UsageError(
                f"worker {self.name} found no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) "
                "in the environment of every Ray node (the key never travels through Ray)"
            )
        return replace(self.spec.config, api_key=key)

    async def stop(self, reason: StopReason) -> None:
        """Stop admitting requests (the driver's first Ctrl-C, another worker's stop)."""
        self._stop = self._stop or reason
        if self._pool is not None:
            self._pool.request_stop(reason)

    async def counters(self) -> Counters:
        """This worker's counts so far (the driver's progress line)."""
        now = Counters()
        add_counters(now, self._report.counters)
        if self._pool is not None:
            add_counters(now, self._pool.counters)
        return now

    async def tally(self) -> tuple[str, Counters, dict[str, int]]:
        """This incarnation's name, counts and tasks per node so far (the
        driver's progress line; a worker lost with its node is not asked again)."""
        nodes = dict(self._extras.nodes) if self._extras is not None else {}
        return self.name, await self.counters(), nodes

    async def run(self) -> WorkerReport:
        config = self._config()
        spec = self.spec
        with PgStore(config.out, str(config.state), lock=False) as store:
            store.run_id = spec.run_id
            store.lease_seconds = spec.lease_seconds
            if spec.post_tasks and self._extras is None:
                self._extras = RayExtras(run_output(config))
            heartbeat = asyncio.create_task(self._heartbeat(store))
            shared = SharedCache(config.cache_dir) if config.cache_dir is not None else None
            connector = aiohttp.TCPConnector(
                limit=config.concurrency, limit_per_host=config.concurrency
            )
            try:
                async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
                    await self._rounds(store, config, session, shared)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                if shared is not None:
                    shared.close()
            report = self._report
            report.name = self.name
            report.requests, report.retried = store.run_counts()
            report.refused, report.late = store.refused, store.late
            report.nodes = dict(self._extras.nodes) if self._extras is not None else {}
        return report

    async def _rounds(
        self,
        store: PgStore,
        config: RunConfig,
        session: aiohttp.ClientSession,
        shared: SharedCache | None,
    ) -> None:
        report = self._report
        while True:
            pool = self._make_pool(store, config, session, shared)
            self._pool = pool
            if self._stop is not None:
                pool.request_stop(self._stop)
            try:
                counters = await pool.run(self._claims(store, config.concurrency))
            finally:
                self._pool = None
                add_counters(report.counters, pool.counters)
                report.dropped += pool.dropped
            if pool.stop is not None:
                report.stop = pool.stop
                return
            with store.transaction():
                store.release()  # chained jobs left waiting: free for whoever can run them
            left, leased = store.left_in_run()
            ended = counters.done + counters.failed + counters.blocked + counters.skipped
            if not left or (not leased and not ended):
                return
            await asyncio.sleep(POLL_SECONDS)

    def _make_pool(
        self,
        store: PgStore,
        config: RunConfig,
        session: aiohttp.ClientSession,
        shared: SharedCache | None,
    ) -> Pool:
        budget: Reserves
        if self._budget is None or config.budget is None:
            budget = Budget(None, 0.0)
        else:
            budget = RemoteBudget(self._budget, config.budget, self.slot)
        if self.spec.own_pacer and self._own is None:
            self._own = Pacer(config.rpm, slow_start=True)
        return Pool(
            config,
            store,
            http_sender(session, config),
            prices=self.spec.prices,
            pacer=self._own or RemotePacer(self._pacer),
            budget=budget,
            sharded=self.spec.sharded,
            shared_cache=shared,
            fresh=self.spec.redo,
            coalescer=RemoteCoalescer(self._coalescer, self.slot),
            extras=self._extras,
            holds=store.holds,
        )

    def _claims(self, store: PgStore, page: int) -> Iterator[Job]:
        """The run's free pending jobs, a page at a time, each page leased to this worker."""
        while self._stop is None:
            jobs = store.claim(self.name, page, self.spec.lease_seconds)
            if not jobs:
                return
            yield from jobs

    async def _heartbeat(self, store: PgStore) -> None:
        """Renew this worker's leases while it runs, whatever its jobs wait for."""
        while True:
            await asyncio.sleep(self.spec.lease_seconds / 3)
            store.renew()
