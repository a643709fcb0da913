"""batchmode: this run's pending jobs in, Batch Mode batches submitted, polled and collected out.

The run goes in rounds: find the batches an earlier run recorded but may not
have created (by display name, every page of the list), poll the open ones
(state and ``batchStats`` for the progress line), collect each that ended,
then submit the next wave (`batchwaves`): the jobs no open batch holds —
new ones, follow-ups of retryable lines, chained jobs whose parents are now
done, the jobs of an expired batch — and sleep ``--poll-interval`` (jittered;
a failed call doubles it, up to 32 times, and never ends the run by itself).

**One batch per wave, whatever is killed when.** A batch's row, with its
deterministic display name ``batchgen-<folder>-w<wave>-b<n>`` and its jobs,
commits *before* its input is uploaded and long before ``batchGenerateContent``
(which is not idempotent) is called; a run that finds such a row without a
batch id lists the project's batches and adopts the one of that name, and
creates it only when there is none. A create that got no clear answer is
looked up the same way before it is tried again.

Ends: SUCCEEDED is collected (`batchresults`); EXPIRED puts its jobs in the
next wave, their attempts untouched, and says so; FAILED, or CANCELLED from
outside, leaves its jobs pending and stops the run (exit 3). Input and
results files are deleted once their batch is handled. ``--no-wait`` does one
round and exits 4 while batches are left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from batchgen.config import RunConfig
from batchgen.engine.batchresults import COLLECT_WINDOW, Collector, Window
from batchgen.engine.batchwaves import MAX_OPEN_BATCHES, Draft, WaveForm, batch_name, build_input
from batchgen.engine.budget import Budget
from batchgen.engine.cache import AnswerCache, SharedCache
from batchgen.engine.chains import Skip
from batchgen.engine.ledger import Ledger
from batchgen.engine.policy import stop_for
from batchgen.engine.pricing import PriceTable
from batchgen.errors import EXIT_ABORTED, EXIT_OK, EXIT_STILL_RUNNING
from batchgen.models import Counters, Job, Status, StopKind, StopReason
from batchgen.output import batch_api, files_api
from batchgen.output.batch_api import BatchInfo
from batchgen.output.files_api import Api, WireError
from batchgen.output.storage import run_output
from batchgen.output.writer import Writer
from batchgen.store import Store
from batchgen.store.batches import INTENT, BatchRow

log = logging.getLogger(__name__)

#: Meta key: this folder's identity in its batches' display names.
FOLDER_ID = "batch_folder_id"
#: A failing call doubles the poll interval up to this many times.
MAX_BACKOFF_DOUBLINGS = 5


class BatchRun:
    """One run in Batch Mode: build it, `await run()`; `request_stop` from anywhere."""

    def __init__(
        self,
        config: RunConfig,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        prices: PriceTable,
        sharded: bool,
        on_change: Callable[[Counters], None],
        shared_cache: SharedCache | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.session = session
        self.api = Api.of(config)
        self.counters = Counters()
        self.stop: StopReason | None = None
        #: Sentences for the person at the end of the run (submitted, expired, ...).
        self.notes: list[str] = []
        self.budget = Budget(config.budget, store.spent())
        self.ledger = Ledger(
            store,
            self.counters,
            prices,
            mode=config.mode,
            on_change=on_change,
            on_error=lambda exc: self.request_stop(stop_for(exc, "the state could not be saved")),
        )
        output = run_output(config)
        self.writer = Writer(output, sharded=sharded, thumbnails=config.thumbnails)
        answers = AnswerCache(store, shared_cache, output)
        self.collector = Collector(
            config, store, prices=prices, ledger=self.ledger, writer=self.writer,
            budget=self.budget, answers=answers, counters=self.counters,
            on_stop=self.request_stop,
        )  # fmt: skip
        self.waves = WaveForm(
            store, default_model=config.model, batch_size=config.batch_size, prices=prices,
            budget=self.budget, finish_cached=self._finish_cached, skip=self._skip,
        )  # fmt: skip
        self._answers = answers
        self._unsure: set[str] = set()
        self._refusals: dict[str, int] = {}
        self._failures = 0
        self._taken = 0
        self._wake = asyncio.Event()
        self._rng = random.Random(config.seed)
        self.status = ""

    def request_stop(self, reason: StopReason) -> None:
        if self.stop is None:
            self.stop = reason
            log.info("stopping: %s", reason.message)
        self._wake.set()

    async def run(self) -> Counters:
        self.writer.start()
        try:
            await self._rounds()
        finally:
            self.writer.close()
            self.ledger.close()
        return self.counters

    async def _rounds(self) -> None:
        opened = self.store.batches(open_only=True)
        # Their worst case stands against --budget until they are collected.
        self.budget.reserved += sum(row.reserved_usd for row in opened)
        self._unsure = {row.name for row in opened if row.state == INTENT}
        while True:
            await self._find_unsure()
            await self._poll_round()
            if self.stop is None:
                await self._submit()
            left = self.store.batches(open_only=True)
            self._show(left)
            if self.stop is not None or not left:
                return
            if self.config.no_wait:
                # The contract: the run that submits, with nothing already out,
                # exits 0; every later run exits 4 until every job has ended.
                self.request_stop(_submitted(left) if not opened else _still_running(left))
                return
            await self._sleep()

    # -- finding and polling -------------------------------------------------
    async def _find_unsure(self) -> None:
        """Batches recorded but perhaps never created: adopt each one the API has."""
        if not self._unsure:
            return
        try:
            found = await batch_api.find(self.session, self.api, set(self._unsure))
        except WireError as exc:
            self._failed(exc, "listing the batches")
            return
        with self.store.transaction():
            for name, info in found.items():
                self.store.update_batch(name, batch_id=info.name, state=info.state)
        self._unsure.clear()

    async def _poll_round(self) -> None:
        for row in self.store.batches(open_only=True):
            if self._interrupted():
                return
            if row.batch_id is None:
                continue
            try:
                info = await batch_api.get(self.session, self.api, row.batch_id)
            except WireError as exc:
                if exc.status == 404:
                    await self._lost(row, "no longer exists (deleted outside batchgen)")
                else:
                    self._failed(exc, f"polling {row.name}")
                continue
            self._failures = 0
            with self.store.transaction():
                self.store.update_batch(
                    row.name, state=info.state, stats=dict(info.stats),
                    results_file=info.responses_file,
                )  # fmt: skip
            if info.ended:
                await self._ended(row, info)

    async def _ended(self, row: BatchRow, info: BatchInfo) -> None:
        if info.state == batch_api.SUCCEEDED and info.responses_file:
            await self._collect(row, info.responses_file)
        elif info.state == batch_api.EXPIRED:
            n = self._close(row, "expired: jobs resubmitted")
            self.notes.append(
                f"batch {row.name} expired (not run within 48 h): its {n} unfinished jobs "
                "go into a new batch, their attempts not counted"
            )
            log.warning("%s", self.notes[-1])
            await self._delete(row.input_file)
        else:
            await self._lost(row, f"ended {info.state.lower()} ({info.message or 'no reason'})")

    async def _lost(self, row: BatchRow, why: str) -> None:
        """A batch that will deliver nothing: its jobs are pending again; the run stops."""
        n = self._close(row, why)
        await self._delete(row.input_file)
        self.request_stop(
            StopReason(
                StopKind.ERROR,
                f"batch {row.name} {why}: its {n} jobs are pending again; run the same "
                "command to submit them in a new batch",
                EXIT_ABORTED,
            )
        )

    def _close(self, row: BatchRow, note: str) -> int:
        """Close the batch: its jobs not handled are free for the next wave."""
        with self.store.transaction():
            n = self.store.release_members(row.name)
            self.store.update_batch(row.name, closed=1, note=note)
        self.budget.settle(row.reserved_usd, 0.0)
        return n

    async def _collect(self, row: BatchRow, results: str) -> None:
        members = {m.job_id: m for m in self.store.members(row.name)}
        lines = files_api.download_lines(
            self.session, self.api, results, max_line=self.config.max_response_bytes
        )
        window = Window(COLLECT_WINDOW)
        try:
            async for raw in lines:
                await window.add(self.collector.line(row, members, raw))
                if self._interrupted():
                    await window.drain()
                    return
            await window.drain()
        except WireError as exc:
            await window.drain()
            if exc.retryable:
                self._failed(exc, f"downloading the results of {row.name}")
                return
            # The results file is gone (expired, deleted): what was not handled is lost.
            n = self._close(row, f"results unavailable: {exc}")
            self.notes.append(
                f"the results of batch {row.name} could not be downloaded ({exc}): its {n} "
                "unhandled jobs go into a new batch"
            )
            log.warning("%s", self.notes[-1])
            return
        finally:
            await lines.aclose()
        missing = self._close(row, "collected")
        if missing:
            log.warning("batch %s: %d jobs had no result line; sent again", row.name, missing)
        await self._delete(row.input_file)
        await self._delete(results)

    # -- submitting ------------------------------------------------------------
    async def _submit(self) -> None:
        open_rows = self.store.batches(open_only=True)
        room = MAX_OPEN_BATCHES - len(open_rows)
        if room > 0:
            limit = None if self.config.limit is None else self.config.limit - self._taken
            wave = await self.waves.form(self.store.run_id, room, limit)
            self._record(wave.drafts)
            if wave.refused and not wave.drafts and not open_rows:
                self.request_stop(self.budget.stop())
                return
        for row in self.store.batches(open_only=True):
            if row.state == INTENT and row.name not in self._unsure and self.stop is None:
                await self._create(row)

    def _record(self, drafts: list[Draft]) -> None:
        """The wave's intents, all in one unit of work, before any upload or create."""
        if not drafts:
            return
        folder = self._folder_id()
        with self.store.transaction():
            wave = self.store.last_wave() + 1
            for number, draft in enumerate(drafts, 1):
                self.store.add_batch(
                    batch_name(folder, wave, number), wave=wave, number=number,
                    model=draft.model, members=draft.members, reserved_usd=draft.reserved,
                )  # fmt: skip
                self._taken += len(draft.members)

    def _folder_id(self) -> str:
        folder = self.store.meta(FOLDER_ID)
        if folder is None:
            folder = uuid.uuid4().hex[:12]
            with self.store.transaction():
                self.store.set_meta(FOLDER_ID, folder)
        return folder

    async def _create(self, row: BatchRow) -> None:
        file = row.input_file
        if file is None:
            file = await self._upload(row)
            if file is None:
                return
        try:
            info = await batch_api.create(self.session, self.api, row.model, row.name, file)
        except WireError as exc:
            self._create_failed(row, exc)
            return
        with self.store.transaction():
            self.store.update_batch(row.name, batch_id=info.name, state=info.state)
        self.notes.append(f"submitted {row.name} ({row.jobs} jobs) as {info.name}")

    async def _upload(self, row: BatchRow) -> str | None:
        folder = self.store.dir / "batches"
        folder.mkdir(exist_ok=True)
        path = folder / f"{row.name}.jsonl"
        try:
            await build_input(self.store, row.name, path, self._upload_ref)
            uploaded = await files_api.upload(
                self.session, self.api, path, display_name=row.name, mime_type="application/jsonl"
            )
        except WireError as exc:
            self._failed(exc, f"uploading the input of {row.name}")
            return None
        finally:
            path.unlink(missing_ok=True)
        with self.store.transaction():
            self.store.update_batch(row.name, input_file=uploaded.name)
        return uploaded.name

    async def _upload_ref(self, path: Path, mime: str) -> tuple[str, str]:
        up = await files_api.upload(
            self.session, self.api, path, display_name=f"batchgen-ref-{path.name}", mime_type=mime
        )
        return up.uri, up.mime_type

    def _create_failed(self, row: BatchRow, exc: WireError) -> None:
        if exc.status is None or exc.status >= 500:
            self._unsure.add(row.name)  # it may exist: look it up before trying again
        elif exc.status != 429:
            tries = self._refusals[row.name] = self._refusals.get(row.name, 0) + 1
            if tries == 1 and row.input_file is not None:
                # An input file of an earlier run may have expired: upload it again.
                with self.store.transaction():
                    self.store.update_batch(row.name, input_file=None)
            else:
                self._close(row, f"refused: {exc}")
                self.request_stop(
                    StopReason(StopKind.ERROR, f"the API refused batch {row.name}: {exc}; "
                               "its jobs are pending", EXIT_ABORTED)
                )  # fmt: skip
                return
        self._failed(exc, f"creating {row.name}")

    # -- helpers -----------------------------------------------------------------
    async def _finish_cached(self, job: Job, key: str) -> bool:
        answer = await self._answers.lookup(key)
        if answer is None:
            return False
        written = await self.writer.save(job, answer.images)
        if written is None:
            return False
        self.ledger.cache_hit(job.id, answer.cost_usd, written, answer.text)
        return True

    def _skip(self, job: Job, verdict: Skip) -> None:
        self.ledger.end(job.id, Status.SKIPPED, error=verdict.error)

    async def _delete(self, name: str | None) -> None:
        if name is not None:
            await files_api.delete(self.session, self.api, name)

    def _failed(self, exc: WireError, what: str) -> None:
        self._failures += 1
        log.warning("%s failed (%s); trying again at the next poll", what, exc)

    def _interrupted(self) -> bool:
        return self.stop is not None and self.stop.kind is StopKind.INTERRUPTED

    async def _sleep(self) -> None:
        doublings = min(self._failures, MAX_BACKOFF_DOUBLINGS)
        delay = self.config.poll_interval * 2**doublings * (0.9 + 0.2 * self._rng.random())
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    def _show(self, rows: list[BatchRow]) -> None:
        """The progress line's note: the open batches by state, with their counts."""
        by_state: dict[str, int] = {}
        answered = total = 0
        for row in rows:
            by_state[row.state.lower()] = by_state.get(row.state.lower(), 0) + 1
            total += row.stats.get("requestCount") or row.jobs
            answered += row.stats.get("successfulRequestCount", 0)
            answered += row.stats.get("failedRequestCount", 0)
        states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        self.status = f"batches: {states} ({answered}/{total} answered)" if rows else ""


def _submitted(rows: list[BatchRow]) -> StopReason:
    jobs = sum(row.jobs for row in rows)
    return StopReason(
        StopKind.WAITING,
        f"submitted {len(rows)} batches ({jobs} jobs); run the same command again later to "
        "collect them (it exits 4 while they are pending or running, 0 or 1 once every job "
        "has ended)",
        EXIT_OK,
    )


def _still_running(rows: list[BatchRow]) -> StopReason:
    jobs = sum(row.jobs for row in rows)
    return StopReason(
        StopKind.WAITING,
        f"{len(rows)} batches ({jobs} jobs) still pending or running; run the same command "
        "again later to collect them (exit 4 until every job has ended)",
        EXIT_STILL_RUNNING,
    )
