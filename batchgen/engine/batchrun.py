"""batchrun: the runner's Batch Mode, a `BatchRun` with the run's progress display,
report refreshes (`watch`) and two-stage signals around it, as the pool has; and
``batchgen cancel``'s cancelling of a folder's open batches."""

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
from batchgen.output import batch_api, files_api
from batchgen.output.files_api import Api, WireError
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
        watch = Watch(
            config.out_url or config.out,
            progress,
            lambda: run.counters,
            report_every=config.report_every,
            state=config.state,
        )
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


async def cancel_all(store: Store, config: RunConfig) -> list[str]:
    """``batchgen cancel``: cancel every open batch of the folder (one recorded
    but not known to be created is looked up by name first); their jobs go back
    to pending, their input files are deleted. One line per batch, for people."""
    lines: list[str] = []
    api = Api.of(config)
    async with aiohttp.ClientSession(trust_env=False) as session:
        rows = store.batches(open_only=True)
        unsure = {row.name for row in rows if row.batch_id is None}
        found = await batch_api.find(session, api, unsure) if unsure else {}
        for row in rows:
            batch_id = row.batch_id or (found[row.name].name if row.name in found else None)
            if batch_id is not None:
                try:
                    await batch_api.cancel(session, api, batch_id)
                except WireError as exc:
                    if exc.status not in (400, 404):  # 400: it had ended already
                        raise
            with store.transaction():
                n = store.release_members(row.name)
                store.update_batch(row.name, closed=1, state="CANCELLED", note="batchgen cancel")
            if row.input_file is not None:
                await files_api.delete(session, api, row.input_file)
            lines.append(f"cancelled {row.name} ({batch_id or 'never created'}): {n} jobs pending")
    return lines
