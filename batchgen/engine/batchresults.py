"""batchresults: a finished batch's result lines in, jobs ended (or sent again) out.

Each line is classified by the live path's own rules — ``response`` by
`client.parse_success`, ``error`` by `client.classify` of the status it
names — and decided by `policy.decide` with the job's tries as the store
counts them: done and blocked end; no-image, 5xx and 429 lines leave the job
pending for a follow-up batch until ``--max-attempts``; bad requests fail.
Each line is billed at the Batch rate by the ledger as it is read, its image
written by the one writer, and its membership settled in the same unit of
work, so a download cut off by a kill resumes at the first line not handled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from batchgen.config import RunConfig
from batchgen.engine.budget import Budget
from batchgen.engine.cache import AnswerCache, CachedAnswer
from batchgen.engine.ledger import Ledger
from batchgen.engine.limiter import backoff
from batchgen.engine.policy import End, Limits, Retry, Stop, Tries, decide
from batchgen.engine.pricing import PriceTable
from batchgen.errors import EXIT_ABORTED
from batchgen.models import Counters, Job, Outcome, OutcomeKind, Status, StopReason
from batchgen.output import client
from batchgen.output.writer import Writer, Written
from batchgen.store import Store
from batchgen.store.batches import BatchRow, Member

log = logging.getLogger(__name__)

#: Result lines handled at once: their images are checked and written on the
#: writer's threads while the next lines are read (each line's own bookkeeping
#: stays one commit). Memory holds at most this many lines.
COLLECT_WINDOW = 16


def line_outcome(doc: dict[str, object]) -> Outcome:
    """A result line's ``response`` or ``error`` as the live answer's `Outcome`."""
    response = doc.get("response")
    if isinstance(response, dict):
        return client.parse_success(response)
    error = doc.get("error")
    if isinstance(error, dict):
        try:
            code = int(str(error.get("code", 500)))
        except ValueError:
            code = 500
        return client.classify(code, {}, json.dumps({"error": error}).encode())
    return Outcome(OutcomeKind.SERVER_ERROR, message="result line has no response or error")


class Collector:
    """Handles result lines of one run's batches."""

    def __init__(
        self,
        config: RunConfig,
        store: Store,
        *,
        prices: PriceTable,
        ledger: Ledger,
        writer: Writer,
        budget: Budget,
        answers: AnswerCache,
        counters: Counters,
        on_stop: Callable[[StopReason], None],
    ) -> None:
        self.config = config
        self.store = store
        self.prices = prices
        self.ledger = ledger
        self.writer = writer
        self.budget = budget
        self.answers = answers
        self.counters = counters
        self.on_stop = on_stop
        self.limits = Limits.of(config)
        self.rng = random.Random(config.seed)
        #: Lines that asked for another try this run (the follow-up waves).
        self.retried = 0

    async def line(self, batch: BatchRow, members: dict[str, Member], raw: bytes) -> None:
        """Handle one line of `batch`'s results (a line already handled is skipped)."""
        try:
            doc = json.loads(raw)
        except ValueError:
            log.warning("batch %s: a result line is not JSON; skipped", batch.name)
            return
        key = doc.get("key") if isinstance(doc, dict) else None
        member = members.get(key) if isinstance(key, str) else None
        if member is None or member.settled:
            return
        members[member.job_id] = replace(member, settled=True)
        known = self.store.lookup(member.job_id)
        job = self.store.job(member.job_id)
        if (
            known is None
            or job is None
            or known.status is not Status.PENDING
            or known.fingerprint != member.fingerprint
        ):
            # Ended meanwhile, or its request changed since: this answer is not its.
            self._settle(batch, member.job_id)
            return
        outcome = self._clean(line_outcome(doc))
        written: Written | None = None
        if outcome.kind is OutcomeKind.OK:
            written = await self.writer.save(job, outcome.images)
            if written is None:
                outcome = replace(
                    outcome,
                    kind=OutcomeKind.NO_IMAGE,
                    images=(),
                    message="an image in the answer is cut off or corrupt",
                )
        # From here to the settling, no await: the attempt, the job's end or retry
        # and the settled line share one commit, so a kill never counts a line twice.
        self.counters.requests += 1
        cost = self.ledger.attempt(job.id, batch.model, outcome, job.image_size)
        self.budget.settle(0.0, cost)
        self._decide(batch, job, member, outcome, written, cost)
        self._settle(batch, job.id)
        if written is not None:
            answer = CachedAnswer(outcome.images, outcome.text, cost)
            await self.answers.share(member.cache_key, answer)

    def _clean(self, outcome: Outcome) -> Outcome:
        key = self.config.api_key
        if key is not None and (outcome.message or outcome.text):
            return replace(
                outcome, message=key.redact(outcome.message), text=key.redact(outcome.text)
            )
        return outcome

    def _decide(
        self,
        batch: BatchRow,
        job: Job,
        member: Member,
        outcome: Outcome,
        written: Written | None,
        cost: float,
    ) -> None:
        job_id = job.id
        attempts, rate_limited = self.store.tries(job_id)
        if outcome.kind is OutcomeKind.RATE_LIMITED:
            rate_limited += 1
        tries = Tries(max(0, attempts - rate_limited), rate_limited)
        decision = decide(
            outcome,
            tries,
            self.limits,
            backoff=lambda n: backoff(n, rng=self.rng, base=0.0, cap=0.0),
            jitter=self.rng.random,
        )
        if isinstance(decision, Stop):
            self.on_stop(StopReason(decision.kind, decision.message, EXIT_ABORTED))
            return
        if isinstance(decision, Retry):
            self.retried += 1
            self.ledger.retried(job_id, outcome.kind)
            return
        assert isinstance(decision, End)
        if written is not None:
            self.ledger.remember(
                member.cache_key,
                job_id,
                written.images,
                outcome.text,
                cost,
            )
        self.ledger.end(
            job_id,
            decision.status,
            error=decision.error,
            text=outcome.text,
            written=written,
            expected=self._expected(job, batch.model),
        )

    def _expected(self, job: Job, model: str) -> str | None:
        size = self.prices.catalogue.expected_pixels(
            model, job.aspect_ratio, job.image_size, edit=bool(job.images)
        )
        return None if size is None else f"{size[0]}x{size[1]}"

    def _settle(self, batch: BatchRow, job_id: str) -> None:
        with self.store.transaction():
            self.store.settle_member(batch.name, job_id)


class Window:
    """At most `size` coroutines running at once; the first error is raised by `drain`."""

    def __init__(self, size: int) -> None:
        self._room = asyncio.Semaphore(size)
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, work: Coroutine[Any, Any, None]) -> None:
        await self._room.acquire()
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._room.release())

    async def drain(self) -> None:
        tasks, self._tasks = self._tasks, set()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
