"""batchrun: the runner's Batch Mode, a `BatchRun` with the run's progress display,
report refreshes (`watch`) and two-stage signals around it, as the pool has."""

from __future__ import annotations

import asyncio

import aiohttp

from batchgen.config import RunConfig
from batchgen.engine.batchmode import BatchRun
from batchgen.engine.cache import SharedCache
from batchgen.engine.pricing import PriceTable
from batchgen.engine.progress import Progress
from batchgen.engine.signals import TwoStage
from batchgen.engine.watch import Watch
from batchgen.errors import EXIT_INTERRUPTED
from batchgen.models import Counters, StopKind, StopReason
from batchgen.store import Store


async def schedule(
    store: Store,
    config: RunConfig,
    prices: PriceTable,
    *,
    to_run: int,
    sharded: bool,
) -> tuple[Counters, StopReason | None, list[str]]:
    """The runner's Batch Mode: progress, report refreshes and the two-stage
    signals around a `BatchRun`. Returns its counters, its stop and its notes."""
    progress = Progress(to_run, enabled=config.progress)
    shared = SharedCache(config.cache_dir) if config.cache_dir is not None else None
    async with aiohttp.ClientSession(trust_env=False) as session:
        run = BatchRun(
            config, store, session, prices=prices, sharded=sharded,
            on_change=progress.update, shared_cache=shared,
        )  # fmt: skip
        progress.note = lambda: run.status
        watch = Watch(config.out, progress, lambda: run.counters, report_every=config.report_every)
        watch.start()
        handlers = TwoStage(run, config.grace_seconds)
        try:
            with handlers:
                await run.run()
        except asyncio.CancelledError:
            if handlers.interrupts < 2:
                raise
            run.stop = run.stop or StopReason(StopKind.INTERRUPTED, "interrupted", EXIT_INTERRUPTED)
        finally:
            await watch.close()
            progress.close(run.counters)
            if shared is not None:
                shared.close()
    return run.counters, run.stop, run.notes
