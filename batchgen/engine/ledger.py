"""ledger: what happened to each job in, store rows and live `Counters` out.

The store's write methods never commit: each writes inside a unit of work
that its caller opened. The ledger opens one on the first write of a turn of
the event loop and commits it once, when that turn ends, so every job that
ends in one turn shares a commit: there were two a job, each ~30 µs of the
loop and a dozen locking and WAL-writing syscalls.

When the loop itself bounds the run (zero latency: the `busy` signal), a turn
holds a single answer, so that was still a commit per job (9,453 for 10,000
jobs, ~75 µs of the loop each with its BEGIN). Then the unit stays open for up
to `GROUP_S` or `GROUP_JOBS` ends, whichever comes first (10 ms: at ~2,000
jobs a second a unit then holds ~20 ends, and commits fell from ~1,300 to
~600 per 20,000 jobs, 2-3 % of the run). When the API bounds the run the loop
has time to spare, and a commit per turn frees each request slot soonest.
On SQLite the unit's per-job rows are written together at its commit
(`store.db._Connection.hold`). On long runs a recorder process commits them
instead, with the images saved on the loop (`store/recorder.py`): the ledger
then opens no transaction of its own, hands each unit over at its commit and
frees its slots when the recorder answers; any other write commits by itself,
once everything handed over before it is committed.

The durability is unchanged in kind: a request slot is freed only once its
answer is committed (`after_commit`), so a kill loses at most the answers of
`--concurrency` slots, as it always lost answers still in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from batchgen.engine.pricing import PriceTable
from batchgen.models import Counters, ErrorInfo, Outcome, OutcomeKind, Status
from batchgen.output.writer import Written
from batchgen.store import Store
from batchgen.store.recorder import Files, Recorder

#: Answers that refuse the run rather than the job: not billed, no attempt used.
UNBILLED = frozenset({OutcomeKind.FATAL, OutcomeKind.QUOTA_EXHAUSTED})

#: While the loop is busy, a unit of work stays open this long at most...
GROUP_S = 0.010
#: ...or until this many jobs ended in it.
GROUP_JOBS = 32


class Ledger:
    """Writes attempts, ends and cache hits to the store and counts them."""

    def __init__(
        self,
        store: Store,
        counters: Counters,
        prices: PriceTable,
        *,
        on_change: Callable[[Counters], None],
        on_error: Callable[[Exception], None],
        mode: str = "live",
        busy: Callable[[], bool] = lambda: False,
        recorder: Recorder | None = None,
        files: Callable[[], Files] | None = None,
    ) -> None:
        """`on_change` hears of every job that ends; `on_error` of a commit that
        failed at the end of a turn, when no caller is left to raise to. `mode`
        (`config.RunMode`) is recorded with each request, priced at its tier by
        `prices`, beside what the live tier would have cost. `busy` says whether
        the event loop, not the API, bounds the run (commits are grouped then).
        `recorder`: the process that commits each unit's held rows, with the
        images `files` gives (taken, the writer's inline ones), before them."""
        self._store = store
        self._counters = counters
        self._prices = prices
        self._mode = mode
        self._on_change = on_change
        self._on_error = on_error
        self._busy = busy
        #: The open unit's commit, scheduled (None: no unit is open).
        self._commit_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        #: The open unit's commit waits for `GROUP_S` (not for the turn's end).
        self._grouped = False
        #: Jobs ended in the open unit of work.
        self._ends = 0
        #: Called once this turn's unit of work is committed (`after_commit`).
        self._after: list[Callable[[], None]] = []
        self._recorder = recorder
        self._files = files or list
        if recorder is not None:
            store.attach(recorder, self._settle)

    def _open(self) -> None:
        """Join this turn's unit of work, opening it (and its commit) if needed."""
        if self._recorder is None:
            self._store.begin()
        if self._commit_handle is None:
            loop = asyncio.get_running_loop()
            self._grouped = self._busy()
            if self._grouped:
                self._commit_handle = loop.call_later(GROUP_S, self._commit)
            else:
                self._commit_handle = loop.call_soon(self._commit)

    def _ended(self) -> None:
        """One more job ended in the open unit: commit it this turn once full."""
        self._ends += 1
        if self._ends == GROUP_JOBS and self._grouped and self._commit_handle is not None:
            self._grouped = False
            self._commit_handle.cancel()
            self._commit_handle = asyncio.get_running_loop().call_soon(self._commit)

    def _forget_unit(self) -> None:
        """The open unit is being committed: the next write opens a new one."""
        self._commit_handle = None
        self._ends = 0

    def _commit(self) -> None:
        self._forget_unit()
        if self._recorder is not None:
            self._send()
            return
        try:
            self._store.commit()
        except Exception as exc:
            self._on_error(exc)
        finally:
            self._run_after()

    def _send(self) -> None:
        """Hand the unit's rows and inline images to the recorder; what waits for
        the commit runs when it answers."""
        assert self._recorder is not None
        rows = self._store.take_held()
        files = self._files()
        after, self._after = self._after, []
        if rows or files:
            self._recorder.send(rows, files, after)
        else:
            for fn in after:
                fn()

    def _settle(self) -> None:
        """Before any other statement on the run's connection (with a recorder):
        the open unit goes now, and everything sent is waited for."""
        assert self._recorder is not None
        if self._commit_handle is not None:
            self._commit_handle.cancel()
            self._forget_unit()
        self._send()
        self._recorder.wait()

    def _run_after(self) -> None:
        after, self._after = self._after, []
        for fn in after:
            fn()

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` once what was written so far is committed (now, if nothing
        waits): the pool frees a request slot only when its answer is on record,
        so that a kill loses no more answers than `--concurrency`."""
        if self._commit_handle is not None:
            self._after.append(fn)
        else:
            fn()

    def close(self) -> None:
        """Commit what the last turn wrote (the run is over)."""
        if self._commit_handle is not None:
            self._commit_handle.cancel()
        self._forget_unit()
        if self._recorder is not None:
            self._settle()
            self._store.detach()
            return
        try:
            self._store.commit()
        finally:
            self._run_after()

    def attempt(self, job_id: str, model: str, outcome: Outcome, size: str | None = None) -> float:
        """One answered request: its cost (0 for an unbilled one), recorded with
        its tokens, model and output size. Recorded in this turn's unit of work,
        not with the job's end: a retry may wait long before any job ends, and a
        crash must lose only requests still in flight."""
        kind = outcome.kind
        if kind in UNBILLED:
            return 0.0
        if kind is OutcomeKind.RATE_LIMITED:
            self._counters.rate_limited += 1
        usage = outcome.usage
        n_images = len(outcome.images)
        cost, source, live = 0.0, "", 0.0
        if usage is not None or n_images:
            cost, source = self._prices.cost(model, usage, n_images, size)
            live = self._prices.live(model, cost)
        self._counters.spent += cost
        self._open()
        self._store.record_attempt(
            job_id,
            cost=cost,
            cost_source=source,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            thoughts_tokens=usage.thoughts_tokens if usage else 0,
            model=model,
            image_size=self._prices.tier(model, size),
            live_cost=live,
            mode=self._mode,
        )
        return cost

    def retried(self, job_id: str, kind: OutcomeKind) -> None:
        """An answer of `kind` that the job will be sent again after."""
        self._open()
        self._store.record_retry(job_id, kind.value)

    def fingerprint(self, job_id: str, fingerprint: str) -> None:
        """A chained job's final fingerprint, known once its parents' images are read."""
        self._open()
        self._store.set_fingerprint(job_id, fingerprint)

    def end(
        self,
        job_id: str,
        status: Status,
        *,
        error: ErrorInfo | None = None,
        text: str = "",
        written: Written | None = None,
        expected: str | None = None,
    ) -> None:
        """A job's end, after its files (`written`, for a done job) are on disk;
        `expected` is the pixel size the catalogue says its request gives."""
        self._open()
        if written is None:
            self._store.finish(job_id, status, error=error, text=text)
        else:
            self._store.finish(
                job_id,
                status,
                files=written.files,
                error=error,
                text=text,
                upscaled=written.upscaled,
                preview=written.preview,
                pixels=_pixels(written.pixels),
                expected_pixels=expected,
            )
        self._counters.count(status)
        self._on_change(self._counters)
        self._ended()

    def cache_hit(
        self, job_id: str, saved: float, written: Written, text: str, expected: str | None = None
    ) -> None:
        """A job done from an earlier identical answer: `saved` is what that cost."""
        self._open()
        self._store.mark_cache_hit(job_id, saved)
        self._counters.cache_hits += 1
        self.end(job_id, Status.DONE, text=text, written=written, expected=expected)

    def remember(self, key: str, job_id: str, files: list[str], text: str, cost: float) -> None:
        """This folder's answer to request `key`, for identical requests to come."""
        self._open()
        self._store.remember_request(key, job_id, files, text, cost)


def _pixels(size: tuple[int, int] | None) -> str | None:
    return None if size is None else f"{size[0]}x{size[1]}"
