"""pool: this run's pending jobs in, finished jobs in the store out.

A feeder streams pending jobs from the store into a queue that is never
longer than twice the concurrency, and N workers take from it: memory grows
with concurrency, never with the job file. Admission of every request goes
through the shared `Pacer` (rate and 429 back-pressure), and a `Budget`
reserves the worst case of each request before it is sent. A retry does not
hold a worker while it waits: it is put back on the queue when its delay ends.

The pool only moves work and carries out what its parts decide: `policy`
(retry, end or stop, after each answer), `chains` (when a chained job may
run), `cache` (an earlier identical answer), `writer` (the images on disk)
and `ledger` (the store and the counters, one commit per loop turn).

Stopping: `request_stop` (first Ctrl-C, a fatal answer, the daily quota, the
budget) stops admitting requests; in-flight requests finish, or are cancelled
after the grace period; whatever did not end stays `pending`.

A Ray worker's pool asks `holds` just before each send whether the job's lease
is still its own; a job whose lease has passed (the worker was frozen) is dropped unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import replace

from batchgen.config import RunConfig
from batchgen.engine.budget import Reserves
from batchgen.engine.cache import AnswerCache, CachedAnswer, Coalescer, Coalescing, SharedCache
from batchgen.engine.chains import Chains, RunNow, Skip
from batchgen.engine.items import Retries, WorkItem, prepare
from batchgen.engine.ledger import Ledger
from batchgen.engine.limiter import Admission, backoff
from batchgen.engine.outage import Outage, host_of
from batchgen.engine.policy import Limits, Retry, Stop, decide, stop_for
from batchgen.engine.pricing import PriceTable
from batchgen.engine.sender import Sender
from batchgen.errors import EXIT_ABORTED
from batchgen.jobs.models_check import gone_message
from batchgen.models import Counters, Job, Outcome, OutcomeKind, Status, StopReason
from batchgen.output import client
from batchgen.output.spool import Spooled
from batchgen.output.storage import run_output
from batchgen.output.writer import ExtrasMaker, Writer, Written
from batchgen.store import Store
from batchgen.store.recorder import Recorder

log = logging.getLogger(__name__)


class _LeaseLost(Exception):
    """The job's lease is no longer this worker's: drop it unsent."""


class Pool:
    """One run's workers: build it, `await run(pending)`; `request_stop` may come
    from anywhere on the loop (a signal handler, a part that failed)."""

    def __init__(
        self,
        config: RunConfig,
        store: Store,
        send: Sender,
        *,
        prices: PriceTable,
        pacer: Admission,
        budget: Reserves,
        sharded: bool,
        on_change: Callable[[Counters], None] | None = None,
        shared_cache: SharedCache | None = None,
        fresh: frozenset[str] = frozenset(),
        coalescer: Coalescing | None = None,
        extras: ExtrasMaker | None = None,
        holds: Callable[[str], bool] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        """`pacer`, `budget` and `coalescer` are this process's own, or (the Ray
        engine) stand-ins for the one of a whole cluster; there, `extras` makes
        sizes and previews as tasks and `holds` says whether a lease is still ours.
        `recorder`: a process that commits the job rows and writes the small
        images of each unit of work (`store/recorder.py`)."""
        self.config = config
        self.pacer = pacer
        self.budget = budget
        self.counters = Counters()
        self.stop: StopReason | None = None
        self._send = send
        self._prices = prices
        self._service_tier = config.mode_spec.service_tier
        self._on_change = on_change or (lambda c: None)
        output = run_output(config)
        self._writer = Writer(output, sharded=sharded, thumbnails=config.thumbnails, extras=extras)
        if recorder is not None:
            self._writer.deferring()
        self._ledger = Ledger(
            store,
            self.counters,
            prices,
            mode=config.mode,
            on_change=self._on_change,
            on_error=lambda exc: self.request_stop(stop_for(exc, "the state could not be saved")),
            busy=self._writer.busy,
            recorder=recorder,
            files=self._writer.take_files,
        )
        self._holds = holds
        #: Jobs dropped unsent: their lease had passed to another worker.
        self.dropped = 0
        self._chains = Chains(store.lookup, output)
        self._answers = AnswerCache(store, shared_cache, output)
        #: Jobs sent even when an earlier identical answer exists (a rejected image's redo).
        self._fresh = fresh
        self._coalescer = coalescer or Coalescer()
        self._limits = Limits.of(config)
        self._rng = random.Random(config.seed)
        self._backoff = functools.partial(
            backoff, rng=self._rng, base=config.backoff_base, cap=config.backoff_cap
        )
        self._queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._room = asyncio.Semaphore(2 * config.concurrency)
        #: A slot is a request whose answer is not yet on record: in flight, or
        #: answered and being written. A kill loses at most these, and a resumed
        #: run sends only these again (issue 18: answers waiting for a writer sat
        #: outside the slots, and two kills at C=16 re-sent up to 37 requests).
        self._slots = asyncio.Semaphore(config.concurrency)
        #: Large (spooled) answers being decoded and written at once.
        self._gate = asyncio.Semaphore(self._writer.at_once)
        self._outstanding = 0
        self._feeding = True
        self._idle, self._stopped, self._quiet = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._retries = Retries(self._queue, self.counters)
        self.outage = Outage(
            host_of(config.base_url),
            on_stop=self.request_stop,
            max_outage_s=config.max_outage,
            never_answered_s=config.unreachable_after,
            probe_base=min(1.0, config.backoff_base),
        )
        #: Models known to answer. The first request to any other (an id the
        #: catalogue does not know) goes alone: if the API answers 404, the run
        #: stops after that one request rather than after --concurrency of them.
        self._answering = {m.id for m in prices.catalogue.served()}
        self._probes: dict[str, asyncio.Event] = {}

    # -- lifecycle -----------------------------------------------------------
    def request_stop(self, reason: StopReason) -> None:
        if self.stop is None:
            self.stop = reason
            # Said once, by whoever ran the pool (the CLI prints it as the run ends).
            log.info("stopping: %s", reason.message)
        self._stopped.set()
        self._retries.cancel()
        self.outage.halt()
        self.budget.close()

    async def run(self, pending: Iterator[Job]) -> Counters:
        # Twice as many workers as request slots: a worker waits for its slot
        # while others' answers are written (the queue never holds more than 2x).
        n_workers = 2 * self.config.concurrency
        self._writer.start()
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
            self._retries.cancel()
            self._writer.close()
            self._ledger.close()
        return self.counters

    async def _drain(self) -> None:
        """Wait for in-flight requests (not queued ones) up to the grace period."""
        if self.counters.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.config.grace_seconds)

    def _check_idle(self) -> None:
        if not self._feeding and self._outstanding == 0:
            self._idle.set()

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
        verdict = self._chains.admit(job)
        if isinstance(verdict, Skip):
            self._ledger.end(job.id, Status.SKIPPED, error=verdict.error)
            self._release_children(job.id)
        elif isinstance(verdict, RunNow):
            self._enqueue(WorkItem(job))

    def _release_children(self, parent: str) -> None:
        for child in self._chains.release(parent):
            if self.stop is None:
                self._admit_chained(child)

    # -- working -------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            if self.stop is not None:
                self._settle_item(item, final=False)
                continue
            try:
                final = await self._attempt(item)
            except _LeaseLost:
                self.dropped += 1
                self._settle_item(item, final=False)
                continue
            except Exception as exc:
                # A worker that died here would leave its job unsettled: the run
                # would wait for it for ever. Stop cleanly instead; the job stays pending.
                self.request_stop(stop_for(exc, f"job {item.job.id} hit an unexpected error"))
                final = False
            if final or self.stop is not None:
                self._settle_item(item, final=final)

    def _settle_item(self, item: WorkItem, *, final: bool) -> None:
        """An item leaves the run: ended, or left pending by a stop."""
        if item.claimed:
            # Once its answer is committed: another process (a Ray worker) that
            # claims the key next looks the answer up on its own connection, which
            # sees only what is committed, and a commit may wait `ledger.GROUP_S`.
            self._ledger.after_commit(functools.partial(self._coalescer.release, item.cache_key))
            item.claimed = False
        self._outstanding -= 1
        if not item.job.chained:
            self._room.release()
        if final:
            self._release_children(item.job.id)
        self._check_idle()

    async def _attempt(self, item: WorkItem) -> bool:
        """One turn of `item`: an earlier answer, or one request; True when the job ended."""
        if item.body is None:
            item.model = item.job.model or self.config.model
            request = await prepare(
                item.job, item.model, self._chains.reference, self._service_tier
            )
            if request.fingerprint is not None:
                self._ledger.fingerprint(item.job.id, request.fingerprint)
            item.body, item.cache_key = request.body, request.cache_key
            item.expected = self._expected(item)
        if not item.claimed and item.job.id not in self._fresh and await self._from_cache(item):
            return True
        try:
            send = self._request if item.model in self._answering else self._first_request
            outcome = await send(item, item.body)
            while outcome is not None and outcome.kind is OutcomeKind.UNREACHABLE:
                # The network's fault, not the job's: no attempt used, no end; wait
                # for the endpoint (or the outage's stop) and send the same request.
                if not await self.outage.wait(outcome.message):
                    return False
                send = self._request if item.model in self._answering else self._first_request
                outcome = await send(item, item.body)
            return outcome is not None and await self._handle(item, outcome)
        finally:
            if item.gated:
                item.gated = False
                self._gate.release()
            if item.holds_slot:
                # The answer is on record (ended, or its retry noted) once this
                # turn commits: only then may another request take its slot.
                item.holds_slot = False
                self._ledger.after_commit(self._slots.release)

    def _expected(self, item: WorkItem) -> str | None:
        job = item.job
        size = self._prices.catalogue.expected_pixels(
            item.model, job.aspect_ratio, job.image_size, edit=bool(job.images)
        )
        return None if size is None else f"{size[0]}x{size[1]}"

    async def _first_request(self, item: WorkItem, body: bytes) -> Outcome | None:
        """A request to a model not known to answer: the first goes alone, the
        others wait for its answer (a 404 then stops the run after one request)."""
        event = self._probes.get(item.model)
        if event is not None:
            await event.wait()
            return None if self.stop is not None else await self._request(item, body)
        self._probes[item.model] = asyncio.Event()
        outcome: Outcome | None = None
        try:
            outcome = await self._request(item, body)
            return outcome
        finally:
            # An endpoint that did not answer said nothing about the model.
            if outcome is not None and outcome.kind is not OutcomeKind.UNREACHABLE:
                self._answering.add(item.model)
            self._probes.pop(item.model).set()

    async def _request(self, item: WorkItem, body: bytes) -> Outcome | None:
        """Send within a slot, the budget and the pacer; None when the run stops first."""
        job = item.job
        await self._slots.acquire()
        reserve = self._prices.worst_case(item.model, job.prompt, len(job.images), job.image_size)
        if not self.budget.reserve(reserve) and not await self.budget.wait_to_reserve(reserve):
            self._slots.release()
            if self.stop is None:
                self.request_stop(self.budget.stop())
            return None
        try:
            item.admitted_at = await self.pacer.acquire()
            if self.stop is not None:
                self.budget.settle(reserve, 0.0)
                return None
            if self._holds is not None and not self._holds(job.id):
                raise _LeaseLost(job.id)  # the budget is settled and the slot freed below
            self.counters.in_flight += 1
            self.counters.requests += 1
            self._quiet.clear()
            try:
                outcome = await self._send(item.model, body)
            finally:
                self.counters.in_flight -= 1
                if not self.counters.in_flight:
                    self._quiet.set()
            if isinstance(outcome, Spooled):
                outcome = await self._unspool(item, outcome)
            # An answer keeps its slot until it is on record (`_attempt`): a kill
            # then loses at most --concurrency answers, those still in slots.
            item.holds_slot = outcome.kind is not OutcomeKind.UNREACHABLE
        except BaseException:
            self.budget.settle(reserve, 0.0)
            raise
        finally:
            if not item.holds_slot:
                self._slots.release()
        outage = self.outage
        if outcome.kind is OutcomeKind.UNREACHABLE:
            self.budget.settle(reserve, 0.0)
            return outcome
        if outage.since is not None or not outage.answered:
            outage.answered_now()
        item.last_cost = self._ledger.attempt(job.id, item.model, outcome, job.image_size)
        self.budget.settle(reserve, item.last_cost)
        item.tries = item.tries.after(outcome.kind)
        return outcome

    async def _unspool(self, item: WorkItem, answer: Spooled) -> Outcome:
        """Parse a large answer from its spool file on a writer thread, a few at
        once (`Writer.at_once`): its decoded image stays in memory until
        `_attempt` has written it, so memory follows those few, not the pool."""
        try:
            await self._gate.acquire()
        except BaseException:
            answer.path.unlink(missing_ok=True)
            raise
        item.gated = True
        return await self._writer.call(client.parse_spooled, answer)

    async def _handle(self, item: WorkItem, outcome: Outcome) -> bool:
        """Carry out the policy's decision on an answer; True when the job ended."""
        key = self.config.api_key
        if key is not None and (outcome.message or outcome.text):
            # A proxy or a model may echo the key back: it must not reach the store.
            # (`redact` returns its argument when the key is not in it: no copy then.)
            message, text = key.redact(outcome.message), key.redact(outcome.text)
            if message is not outcome.message or text is not outcome.text:
                outcome = replace(outcome, message=message, text=text)
        written: Written | None = None
        if outcome.kind is OutcomeKind.OK:
            written = await self._writer.save(item.job, outcome.images)
            if written is None:
                # A right signature before garbage, or a cut-off body: never a finished image.
                outcome = replace(
                    outcome,
                    kind=OutcomeKind.NO_IMAGE,
                    images=(),
                    message="an image in the answer is cut off or corrupt",
                )
        decision = decide(
            outcome, item.tries, self._limits, backoff=self._backoff, jitter=self._rng.random
        )
        if isinstance(decision, Stop):
            message = decision.message
            if outcome.kind is OutcomeKind.FATAL and outcome.http_status == 404:
                gone = gone_message(self._prices.catalogue, item.model)
                message = f"the API does not serve {item.model} (HTTP 404): {gone}"
            self.request_stop(StopReason(decision.kind, message, EXIT_ABORTED))
            return False
        self._pace(item, outcome)
        if isinstance(decision, Retry):
            self._ledger.retried(item.job.id, outcome.kind)
            self._retry_later(item, outcome, decision.delay)
            return False
        if written is not None:
            self._ledger.remember(
                item.cache_key, item.job.id, written.images, outcome.text, item.last_cost
            )
            answer = CachedAnswer(outcome.images, outcome.text, item.last_cost)
            await self._answers.share(item.cache_key, answer)
        self._ledger.end(
            item.job.id,
            decision.status,
            error=decision.error,
            text=outcome.text,
            written=written,
            expected=item.expected,
        )
        return True

    def _pace(self, item: WorkItem, outcome: Outcome) -> None:
        """Tell the pacer how an answer went (a stop tells it nothing)."""
        kind = outcome.kind
        if kind is OutcomeKind.OK or kind is OutcomeKind.BLOCKED:
            self.pacer.on_success(item.admitted_at)
        elif kind is OutcomeKind.RATE_LIMITED:
            self.pacer.on_rate_limited(outcome.retry_after, item.admitted_at)
        elif kind is OutcomeKind.SERVER_ERROR:
            self.pacer.on_server_error()

    async def _from_cache(self, item: WorkItem) -> bool:
        """Finish `item` from an identical earlier answer, waiting for one in flight;
        False (with the key claimed) when this item has to send the request itself."""
        while True:
            answer = await self._answers.lookup(item.cache_key)
            if answer is not None:
                # Checked again: a shared cache is a folder anyone may have damaged.
                written = await self._writer.save(item.job, answer.images)
                if written is not None:
                    self._ledger.cache_hit(
                        item.job.id, answer.cost_usd, written, answer.text, item.expected
                    )
                    return True
            if await self._coalescer.claim(item.cache_key):
                if self._coalescer.recheck and await self._answers.lookup(item.cache_key):
                    # Its holder ended between our lookup and our claim: use its answer.
                    self._coalescer.release(item.cache_key)
                    continue
                item.claimed = True
                return False

    def _retry_later(self, item: WorkItem, outcome: Outcome, delay: float) -> None:
        log.info(
            "retry job=%s kind=%s status=%s attempt=%d delay=%.1fs limit=%s",
            item.job.id,
            outcome.kind.value,
            outcome.http_status,
            item.tries.attempts,
            delay,
            outcome.quota_id or "-",
        )
        self._retries.add(item, delay)
        self._on_change(self.counters)
