"""scheduler: this run's pending jobs in, finished jobs in the store out.

A feeder streams pending jobs from the store into a queue that is never
longer than twice the concurrency, and N workers take from it: memory grows
with concurrency, never with the job file. Admission of every request goes
through the shared `Pacer` (rate and 429 back-pressure), and a `Budget`
reserves the worst case of each request before it is sent. A retry does not
hold a worker while it waits: it is put back on the queue when its delay ends.

A chained job (`@parent` reference) waits, outside the queue, until its
parents end; it then runs with a fingerprint that includes their output bytes,
or ends `skipped` if a parent did not end `done`.

Stopping: `request_stop` (first Ctrl-C, a fatal answer, the daily quota, the
budget) stops admitting requests; in-flight requests finish, or are cancelled
after the grace period; whatever did not end stays `pending`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from batchgen.config import RunConfig
from batchgen.engine.cache import CachedAnswer, Coalescer, SharedCache, request_key
from batchgen.engine.limiter import Pacer, backoff
from batchgen.engine.planner import fingerprint
from batchgen.engine.pricing import PriceTable
from batchgen.errors import EXIT_ABORTED, AbortError
from batchgen.models import (
    Counters,
    ErrorInfo,
    GeneratedImage,
    Job,
    Outcome,
    OutcomeKind,
    Status,
    StopKind,
    StopReason,
)
from batchgen.output import client
from batchgen.output.handoff import Handoff
from batchgen.output.mime import extension_for, sniff_mime
from batchgen.output.sink import is_disk_full, write_images, write_sizes
from batchgen.output.thumbs import is_own_preview, preview
from batchgen.store.db import Store

log = logging.getLogger(__name__)

#: Image output (check, write, sizes, previews) runs on its own threads, one per
#: core: more only fight over the GIL. They take answers in batches (`Handoff`).
WRITER_THREADS = min(8, os.cpu_count() or 2)

#: Answers up to this many image bytes are checked and written on the loop while
#: the loop is busier than `BUSY_LOOP` (its thread's CPU over wall time, sampled
#: every `LOAD_PERIOD_S`): see `_save`.
INLINE_BYTES = 256 * 1024
BUSY_LOOP = 0.6
LOAD_PERIOD_S = 0.5

#: 429s do not use up a job's attempts (the quota is not the job's fault), up to this.
MAX_RATE_LIMITED = 100


class Budget:
    """Reserve the worst case before sending, settle on the answer: spend never
    passes the limit, counting what earlier runs in this folder already spent."""

    def __init__(self, limit: float | None, spent_before: float) -> None:
        self.limit = limit
        self.committed = spent_before
        self.reserved = 0.0

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.committed + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.committed += actual


@dataclass(slots=True)
class Written:
    """What was put on disk for one answer (paths relative to OUT)."""

    images: list[str]
    #: Platform sizes: (path, upscaled?).
    sized: list[tuple[str, bool]]
    preview: str | None


@dataclass
class WorkItem:
    job: Job
    body: bytes | None = None
    attempts: int = 0
    rate_limited: int = 0
    model: str = ""
    #: The Pacer's ticket for the last request: when it was admitted.
    admitted_at: float | None = None
    cache_key: str = ""
    #: This item is the one request in flight for its cache key.
    claimed: bool = False
    last_cost: float = 0.0


class Scheduler:
    def __init__(
        self,
        config: RunConfig,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        prices: PriceTable,
        pacer: Pacer,
        budget: Budget,
        sharded: bool,
        on_change: Callable[[Counters], None] | None = None,
        shared_cache: SharedCache | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.session = session
        self.prices = prices
        self.pacer = pacer
        self.budget = budget
        self.sharded = sharded
        self.counters = Counters()
        self.shared_cache = shared_cache
        self._coalescer = Coalescer()
        self.stop: StopReason | None = None
        self._on_change = on_change or (lambda c: None)
        self._rng = random.Random(config.seed)
        self._queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._room = asyncio.Semaphore(2 * config.concurrency)
        #: A slot is a request in flight. Writing an answer's image happens outside
        #: it, so --concurrency requests stay in flight while images are written.
        self._slots = asyncio.Semaphore(config.concurrency)
        self._writers = Handoff(WRITER_THREADS, name="batchgen-writer")
        self._outstanding = 0
        self._feeding = True
        self._idle = asyncio.Event()
        self._stopped = asyncio.Event()
        self._quiet = asyncio.Event()
        self._waiting: dict[str, list[Job]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._commit_due = False
        #: Share of the last `LOAD_PERIOD_S` the loop's thread was on the CPU.
        self._loop_busy = 0.0
        self._load_mark = (0.0, 0.0)
        self._load_timer: asyncio.TimerHandle | None = None
        self._headers = {
            "Content-Type": "application/json",
            **config.extra_headers,
            **config.auth_headers(),
        }

    # -- lifecycle -----------------------------------------------------------
    def request_stop(self, reason: StopReason) -> None:
        if self.stop is None:
            self.stop = reason
            if reason.kind is not StopKind.INTERRUPTED:
                log.warning("stopping: %s", reason.message)
        self._stopped.set()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def run(self, pending: Iterator[Job]) -> Counters:
        # Twice as many workers as request slots: while some write images, the
        # others keep every slot busy (the queue never holds more than 2x anyway).
        n_workers = 2 * self.config.concurrency
        self._sample_load()
        workers = [asyncio.create_task(self._worker()) for _ in range(n_workers)]
        feeder = asyncio.create_task(self._feed(pending))
        idle = asyncio.create_task(self._idle.wait())
        stopped = asyncio.create_task(self._stopped.wait())
        try:
            await asyncio.wait({idle, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not self._idle.is_set():
                # Stopping: let in-flight requests end within the grace period.
                await asyncio.wait(
                    {idle, *workers},
                    timeout=self.config.grace_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                await self._drain()
        finally:
            # Cancelled too when a second Ctrl-C cancels the run mid-wait, so that
            # no task is left pending ("Task was destroyed but it is pending!").
            for helper in (idle, stopped, feeder, *workers):
                helper.cancel()
            await asyncio.gather(idle, stopped, feeder, *workers, return_exceptions=True)
            for timer in self._timers:
                timer.cancel()
            if self._load_timer is not None:
                self._load_timer.cancel()
            self.store.commit()
            self._writers.close()
        return self.counters

    async def _drain(self) -> None:
        """Wait for in-flight requests (not queued ones) up to the grace period."""
        if self.counters.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.config.grace_seconds)

    def _check_idle(self) -> None:
        if not self._feeding and self._outstanding == 0:
            self._idle.set()

    def _sample_load(self) -> None:
        """Measure how busy the loop's thread was since the last sample (for `_save`)."""
        loop = asyncio.get_running_loop()
        now, cpu = loop.time(), time.thread_time()
        wall_then, cpu_then = self._load_mark
        if wall_then:
            self._loop_busy = (cpu - cpu_then) / max(now - wall_then, 1e-6)
        self._load_mark = (now, cpu)
        self._load_timer = loop.call_later(LOAD_PERIOD_S, self._sample_load)

    def _commit_soon(self) -> None:
        """Open the unit of work this turn of the event loop writes in, and commit
        it once, when the turn ends.

        Every job that ends in one turn shares a commit: there were two a job, each
        ~30 µs of the loop and a dozen locking and WAL-writing syscalls. The
        durability is unchanged in kind: a kill loses what was not yet committed,
        as it always lost answers still in flight, and this adds less than a turn.
        """
        self.store.begin()
        if not self._commit_due:
            self._commit_due = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._commit_due = False
        try:
            self.store.commit()
        except Exception as exc:
            self.request_stop(_stop_for(exc, "the state could not be saved"))

    # -- feeding -------------------------------------------------------------
    async def _feed(self, pending: Iterator[Job]) -> None:
        try:
            for job in pending:
                if self.stop is not None:
                    break
                if job.chained:
                    self._admit_chained(job)
                    continue
                await self._room.acquire()
                if self.stop is not None:
                    self._room.release()
                    break
                self._enqueue(WorkItem(job))
        finally:
            self._feeding = False
            self._check_idle()

    def _enqueue(self, item: WorkItem) -> None:
        self._outstanding += 1
        self._queue.put_nowait(item)

    def _admit_chained(self, job: Job) -> None:
        """Run now, skip, or wait for the parents to end."""
        waiting_on: str | None = None
        for ref in job.images:
            if not ref.startswith("@"):
                continue
            known = self.store.lookup(ref[1:])
            if known is None or known.status is Status.PENDING:
                waiting_on = ref[1:]
                continue
            if known.status is not Status.DONE:
                self._finish_skipped(job, ref[1:], known.status)
                return
        if waiting_on is not None:
            self._waiting.setdefault(waiting_on, []).append(job)
            return
        self._enqueue(WorkItem(job))

    def _release_children(self, parent: str) -> None:
        for child in self._waiting.pop(parent, []):
            if self.stop is None:
                self._admit_chained(child)

    def _finish_skipped(self, job: Job, parent: str, status: Status) -> None:
        error = ErrorInfo("skipped", None, f"parent {parent} ended {status.value}")
        self._commit_soon()
        self.store.finish(job.id, Status.SKIPPED, error=error)
        self.counters.count(Status.SKIPPED)
        self._on_change(self.counters)
        self._release_children(job.id)

    # -- working -------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            if self.stop is not None:
                self._settle_item(item, final=False)
                continue
            try:
                final = await self._attempt(item)
            except Exception as exc:
                # A worker that died here would leave its job unsettled: the run
                # would wait for it for ever. Stop cleanly instead; the job stays pending.
                self.request_stop(_stop_for(exc, f"job {item.job.id} hit an unexpected error"))
                final = False
            if final or self.stop is not None:
                self._settle_item(item, final=final)

    def _settle_item(self, item: WorkItem, *, final: bool) -> None:
        """An item leaves the run: ended, or left pending by a stop."""
        if item.claimed:
            self._coalescer.release(item.cache_key)
            item.claimed = False
        self._outstanding -= 1
        if not item.job.chained:
            self._room.release()
        if final:
            self._release_children(item.job.id)
        self._check_idle()

    async def _prepare(self, item: WorkItem) -> None:
        job = item.job
        item.model = job.model or self.config.model
        refs: list[tuple[str, bytes]] = []
        for ref in job.images:
            path = self._ref_path(ref)
            data = await asyncio.to_thread(path.read_bytes)
            refs.append((sniff_mime(data[:16]) or "image/png", data))
        if job.chained:
            # Now that the parents are done, the fingerprint covers their output bytes
            # (hashed here from the bytes just read: the store stays on this thread).
            digests = [hashlib.sha256(data).hexdigest() for _mime, data in refs]
            self._commit_soon()
            self.store.set_fingerprint(job.id, fingerprint(job, item.model, digests))
        item.body = json.dumps(client.build_request(job, refs)).encode()
        item.cache_key = request_key(job, item.model, [data for _mime, data in refs])

    def _ref_path(self, ref: str) -> Path:
        if not ref.startswith("@"):
            return Path(ref)
        known = self.store.lookup(ref[1:])
        if known is None or not known.files:
            raise AbortError(f"chained input {ref} has no image", kind=StopKind.ERROR)
        return self.store.out / known.files[0]

    async def _attempt(self, item: WorkItem) -> bool:
        """Send one request for `item`; True when the job ended."""
        if item.body is None:
            await self._prepare(item)
        assert item.body is not None
        job = item.job
        if not item.claimed and await self._from_cache(item):
            return True
        await self._slots.acquire()
        reserve = self.prices.worst_case(item.model, job.prompt, len(job.images))
        if not self.budget.reserve(reserve):
            self._slots.release()
            self.request_stop(
                StopReason(
                    StopKind.BUDGET,
                    f"budget ${self.budget.limit:.2f} reached (spent ${self.budget.committed:.2f})",
                    EXIT_ABORTED,
                )
            )
            return False
        try:
            item.admitted_at = await self.pacer.acquire()
            if self.stop is not None:
                return False
            self.counters.in_flight += 1
            self.counters.requests += 1
            self._quiet.clear()
            try:
                outcome = await client.send(
                    self.session,
                    self.config.endpoint(item.model),
                    item.body,
                    self._headers,
                    timeout_s=self.config.timeout,
                    max_bytes=self.config.max_response_bytes,
                )
            finally:
                self.counters.in_flight -= 1
                if not self.counters.in_flight:
                    self._quiet.set()
        except BaseException:
            self.budget.settle(reserve, 0.0)
            raise
        finally:
            self._slots.release()
        if outcome.kind in (OutcomeKind.FATAL, OutcomeKind.QUOTA_EXHAUSTED):
            self.budget.settle(reserve, 0.0)
        else:
            n_images = len(outcome.images)
            cost, source = self.prices.cost(item.model, outcome.usage, n_images)
            if outcome.usage is None and n_images == 0:
                cost, source = 0.0, ""
            self.budget.settle(reserve, cost)
            item.last_cost = cost
            self.counters.spent += cost
            usage = outcome.usage
            self._commit_soon()
            self.store.record_attempt(
                job.id,
                cost=cost,
                cost_source=source,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
            )
        item.attempts += 1
        return await self._handle(item, outcome)

    async def _handle(self, item: WorkItem, outcome: Outcome) -> bool:
        job = item.job
        kind = outcome.kind
        key = self.config.api_key
        if key is not None and (outcome.message or outcome.text):
            # A proxy or a model may echo the key back: it must not reach the store.
            outcome = replace(
                outcome, message=key.redact(outcome.message), text=key.redact(outcome.text)
            )
        written: Written | None = None
        if kind is OutcomeKind.OK:
            # Let the worker that the slot went to send its request before this
            # answer is checked and written (on the loop when small): at C requests
            # of latency L, every delay here lowers the rate below C/L. Refusals are
            # handled without this pause: they must stop or slow the pool at once.
            await asyncio.sleep(0)
            written = await self._save(job, outcome.images)
        if kind is OutcomeKind.OK and written is None:
            # A right signature before garbage, or a cut-off body: never a finished image.
            kind = OutcomeKind.NO_IMAGE
            outcome = replace(
                outcome,
                kind=kind,
                images=(),
                message="an image in the answer is cut off or corrupt",
            )
        message = outcome.message
        if kind is OutcomeKind.OK and written is not None:
            self.pacer.on_success(item.admitted_at)
            await self._remember(item, outcome, written.images)
            return self._end_done(item, written, outcome.text)
        if kind is OutcomeKind.FATAL:
            self.request_stop(
                StopReason(
                    StopKind.FATAL,
                    f"the API refused the run (HTTP {outcome.http_status}, "
                    f"{outcome.reason or 'error'}): {message}",
                    EXIT_ABORTED,
                )
            )
            return False
        if kind is OutcomeKind.QUOTA_EXHAUSTED:
            self.request_stop(
                StopReason(
                    StopKind.QUOTA,
                    f"daily quota exhausted ({outcome.quota_id}); it resets at midnight "
                    "Pacific time; run the same command again then",
                    EXIT_ABORTED,
                )
            )
            return False
        error = ErrorInfo(kind.value, outcome.http_status, message)
        if kind is OutcomeKind.BLOCKED:
            self.pacer.on_success(item.admitted_at)
            return self._end(item, Status.BLOCKED, error=error, text=outcome.text)
        if kind is OutcomeKind.BAD_REQUEST:
            return self._end(item, Status.FAILED, error=error, text=outcome.text)
        # Retryable kinds.
        if kind is OutcomeKind.RATE_LIMITED:
            self.counters.rate_limited += 1
            too_long = self.config.max_retry_delay
            if outcome.retry_after is not None and outcome.retry_after > too_long:
                self.request_stop(
                    StopReason(
                        StopKind.QUOTA,
                        f"the server asked to wait {outcome.retry_after:.0f}s (more than "
                        f"{self.config.max_retry_delay:.0f}s): treating it as a quota stop; "
                        "run the same command again later",
                        EXIT_ABORTED,
                    )
                )
                return False
            self.pacer.on_rate_limited(outcome.retry_after, item.admitted_at)
            item.attempts -= 1
            item.rate_limited += 1
            if item.rate_limited >= MAX_RATE_LIMITED:
                return self._end(item, Status.FAILED, error=error)
            delay = (outcome.retry_after or self._backoff(item.rate_limited)) * (
                1 + 0.1 * self._rng.random()
            )
        else:
            if kind is OutcomeKind.SERVER_ERROR:
                self.pacer.on_server_error()
            cap = self.config.max_attempts
            if kind is OutcomeKind.NO_IMAGE:
                cap = min(cap, self.config.max_no_image_attempts)
            if item.attempts >= cap:
                return self._end(item, Status.FAILED, error=error, text=outcome.text)
            delay = self._backoff(item.attempts)
        log.info(
            "retry job=%s kind=%s status=%s attempt=%d delay=%.1fs",
            job.id,
            kind.value,
            outcome.http_status,
            item.attempts,
            delay,
        )
        self._retry_later(item, delay)
        return False

    async def _save(self, job: Job, images: tuple[GeneratedImage, ...]) -> Written | None:
        """Check and write an answer's images: None when one does not parse.

        When the event loop is busy (it, not the API, bounds the run), a small
        answer that needs no decoding (no platform sizes, no preview to make) is
        written right here on the loop: handing it to a thread cost the loop more
        than the write, and the threads' GIL hand-overs stalled it (measured at
        zero latency: ~0.2 ms a job). Otherwise the loop has time to spare and
        should spend it reading answers promptly (at 0.2 s latency, writing on
        the loop cost 1.5 % of C/L), so everything goes to a writer thread.
        """
        inline = self._loop_busy > BUSY_LOOP and not job.sizes
        if not inline or sum(len(image.data) for image in images) > INLINE_BYTES:
            return await self._writers.submit(self._check_and_write, job, images)
        dims = _dims(images)
        if dims is None:
            return None
        first = dims[0]
        head = images[0]
        if self.config.thumbnails and not is_own_preview(_suffix(head), first, len(head.data)):
            return await self._writers.submit(self._write, job, images, first)
        return self._write(job, images, first)

    def _check_and_write(self, job: Job, images: tuple[GeneratedImage, ...]) -> Written | None:
        dims = _dims(images)
        return None if dims is None else self._write(job, images, dims[0])

    def _write(
        self, job: Job, images: tuple[GeneratedImage, ...], first: tuple[int, int]
    ) -> Written:
        """The images, their platform sizes, and the first one's preview (made now,
        as it lands, so the report never has to make them all; the gallery shows
        only that one). `first` is the first image's pixel size."""
        out = self.store.out
        files = write_images(out, job.id, images, sharded=self.sharded)
        sized = write_sizes(out, job.id, images[0].data, job.sizes) if job.sizes else []
        nbytes = len(images[0].data)
        shown = preview(out, files[0], first, nbytes) if self.config.thumbnails else None
        return Written(files, sized, shown)

    def _end_done(self, item: WorkItem, written: Written, text: str) -> bool:
        files = written.images + [path for path, _up in written.sized]
        upscaled = [path for path, up in written.sized if up]
        return self._end(
            item, Status.DONE, files=files, text=text, upscaled=upscaled, preview=written.preview
        )

    async def _from_cache(self, item: WorkItem) -> bool:
        """Finish `item` from an identical earlier answer, waiting for one in flight;
        False (with the key claimed) when this item has to send the request itself."""
        while True:
            answer = await self._cached_answer(item.cache_key)
            if answer is not None:
                # Checked again: a shared cache is a folder anyone may have damaged.
                written = await self._save(item.job, answer.images)
                if written is not None:
                    self._commit_soon()
                    self.store.mark_cache_hit(item.job.id, answer.cost_usd)
                    self.counters.cache_hits += 1
                    return self._end_done(item, written, answer.text)
            if await self._coalescer.claim(item.cache_key):
                item.claimed = True
                return False

    async def _cached_answer(self, key: str) -> CachedAnswer | None:
        local = self.store.cached_request(key)
        if local is not None:
            files, text, cost = local
            paths = [self.store.out / f for f in files]
            try:
                datas = await asyncio.to_thread(lambda: [p.read_bytes() for p in paths])
            except OSError:
                datas = []
            mimes = [sniff_mime(d[:16]) for d in datas]
            if datas and all(mimes):
                images = tuple(GeneratedImage(m, d) for m, d in zip(mimes, datas, strict=True) if m)
                return CachedAnswer(images, text, cost)
        if self.shared_cache is not None:
            return await asyncio.to_thread(self.shared_cache.get, key)
        return None

    async def _remember(self, item: WorkItem, outcome: Outcome, files: list[str]) -> None:
        if not item.cache_key:
            return
        images_only = files[: len(outcome.images)]
        self._commit_soon()
        self.store.remember_request(
            item.cache_key, item.job.id, images_only, outcome.text, item.last_cost
        )
        if self.shared_cache is not None:
            answer = CachedAnswer(outcome.images, outcome.text, item.last_cost)
            await asyncio.to_thread(self.shared_cache.put, item.cache_key, answer)

    def _backoff(self, attempt: int) -> float:
        return backoff(
            attempt, self._rng, base=self.config.backoff_base, cap=self.config.backoff_cap
        )

    def _retry_later(self, item: WorkItem, delay: float) -> None:
        self.counters.retrying += 1
        self._on_change(self.counters)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self.counters.retrying -= 1
            self._queue.put_nowait(item)

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    def _end(
        self,
        item: WorkItem,
        status: Status,
        *,
        files: list[str] | None = None,
        error: ErrorInfo | None = None,
        text: str = "",
        upscaled: list[str] | None = None,
        preview: str | None = None,
    ) -> bool:
        self._commit_soon()
        self.store.finish(
            item.job.id,
            status,
            files=files,
            error=error,
            text=text,
            upscaled=upscaled,
            preview=preview,
        )
        self.counters.count(status)
        self._on_change(self.counters)
        return True


def _stop_for(exc: Exception, what: str) -> StopReason:
    """The stop for an error no outcome covers: an `AbortError` says its kind
    itself; a full disk; anything else, `what` saying where it happened."""
    if isinstance(exc, AbortError):
        return StopReason(exc.kind, str(exc), exc.exit_code)
    if isinstance(exc, OSError) and is_disk_full(exc):
        where = exc.filename or "the output folder"
        return StopReason(
            StopKind.DISK,
            f"disk full while writing {where}; free some space and run the same command "
            "again (finished images are kept)",
            EXIT_ABORTED,
        )
    log.error("%s: %s", what, type(exc).__name__, exc_info=exc)
    return StopReason(
        StopKind.ERROR,
        f"stopped: {what} ({type(exc).__name__}: {exc}); fix it and run the same command again",
        EXIT_ABORTED,
    )


def _dims(images: tuple[GeneratedImage, ...]) -> list[tuple[int, int]] | None:
    """Every image's pixel size, or None when one does not parse (or there is none)."""
    dims = [client.image_size(image.data, image.mime_type) for image in images]
    if not dims or None in dims:
        return None
    return [d for d in dims if d is not None]


def _suffix(image: GeneratedImage) -> str:
    return "." + extension_for(image.mime_type)
