"""jobs: the jobs table, one row per job id ever planned in the folder.

In: jobs planned with their request fingerprint, each request made (tokens,
cost), each job's end (files or error). Out: what is already known about an
id (the planner's and the chain gate's question), this run's pending jobs in
order, and the counts and spend the run checks as it goes. The report's reads
of this table are in `queries.py`.

Every statement here runs once per job or once per request, in the pool's
hot path or the planner's loop, so each is a single indexed statement and
nothing is computed per insert that can be counted once (`_next_seq`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from batchgen.jobs.codec import job_from_json, job_to_json
from batchgen.models import ErrorInfo, Job, Status
from batchgen.store.dialect import Connection, Cursor
from batchgen.store.runs import RunsTable


@dataclass(frozen=True, slots=True)
class Known:
    status: Status
    fingerprint: str
    files: tuple[str, ...]


def status_counts(db: Connection) -> dict[str, int]:
    """Jobs per status, every status present (served by the `jobs_pending` index)."""
    rows = db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    counts = {s.value: 0 for s in Status}
    counts.update({str(s): int(n) for s, n in rows})
    return counts


_ATTEMPT = """UPDATE jobs SET attempts=attempts+1, requests=requests+1,
    cost_usd=cost_usd+?, prompt_tokens=prompt_tokens+?, output_tokens=output_tokens+?,
    thoughts_tokens=thoughts_tokens+?,
    cost_source=CASE WHEN ?='' THEN cost_source WHEN cost_source IN ('', ?)
      THEN ? ELSE 'mixed' END,
    model=coalesce(?, model), image_size=coalesce(?, image_size),
    live_cost_usd=live_cost_usd+?, mode=coalesce(?, mode),
    started_at=coalesce(started_at, ?) WHERE id=?"""
_FINISH = """UPDATE jobs SET status=?, files=?, error_kind=?, http_status=?, error_message=?,
    text=?, finished_at=?, upscaled=?, preview=?, pixels=?, expected_pixels=? WHERE id=?"""
#: A job planned afresh over its earlier row (new request, or a retry).
RESET = """fingerprint=excluded.fingerprint,
    status='pending', priority=excluded.priority, plan_run=excluded.plan_run,
    job=excluded.job, attempts=0, files='[]', error_kind=NULL,
    cache_hit=0, saved_usd=0, http_status=NULL, error_message=NULL, text='',
    started_at=NULL, finished_at=NULL, upscaled='[]', preview=NULL,
    retried='{}', pixels=NULL, expected_pixels=NULL"""
_PLAN = f"""INSERT INTO jobs (id, seq, fingerprint, status, priority, plan_run, job)
    VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET {RESET}"""
_CACHE_HIT = "UPDATE jobs SET cache_hit=1, saved_usd=?, cost_source='cache' WHERE id=?"
_FINGERPRINT = "UPDATE jobs SET fingerprint=? WHERE id=?"


class JobsTable(RunsTable):
    #: The last sequence number given; sequence numbers keep file order.
    _next_seq: int = 0
    #: Appended to each write of a running job's row: a backend whose jobs are
    #: claimed under a lease (PostgreSQL) refuses the writes of a stale holder.
    #: SQLite's folder lock already keeps every other writer out.
    _FENCE = ""
    _fence_args: tuple[str, ...] = ()

    def _opened(self) -> None:
        super()._opened()
        fence = self._FENCE
        self._sql_attempt = _ATTEMPT + fence
        self._sql_finish = _FINISH + fence
        self._sql_cache_hit = _CACHE_HIT + fence
        self._sql_fingerprint = _FINGERPRINT + fence
        self._sql_retried = self.sql.bump_retried + fence
        # Counted once here, not by max(seq) per insert (that made planning quadratic).
        self._next_seq = int(
            self.db.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchone()[0]
        )

    # -- planning ------------------------------------------------------------
    def lookup(self, job_id: str) -> Known | None:
        row = self.db.execute(
            "SELECT status, fingerprint, files FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        return Known(Status(row[0]), row[1], tuple(json.loads(row[2])))

    def prefetch(self, job_ids: Iterable[str]) -> None:
        """The planner is about to look these ids up, one by one. SQLite answers
        each lookup in microseconds, so nothing is done ahead; a server backend
        fetches them in one round trip (`pg/planning.py`)."""

    def job(self, job_id: str) -> Job | None:
        """The job as it was last planned (its stored form), or None."""
        row = self.db.execute("SELECT job FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else job_from_json(row[0])

    def skipped_parents(self) -> set[str]:
        """The ids that skipped jobs name as `@parent` (the planner runs a skipped job
        again when one of them runs). Read once a plan, from the skipped rows only."""
        rows = self.db.execute(self.sql.skipped_parents).fetchall()
        return {str(r[0]) for r in rows}

    def plan(self, job: Job, fingerprint: str, *, reset: bool) -> None:
        """Mark `job` as wanted by this run. `reset` starts it afresh (new or changed
        request, or a retry of a failed one); otherwise only its plan mark moves."""
        self._writing()
        if reset:
            self._next_seq += 1
            self.db.execute(
                _PLAN,
                (job.id, self._next_seq, fingerprint, job.priority, self.run_id, job_to_json(job)),
            )
        else:
            self.db.execute(
                "UPDATE jobs SET plan_run=?, priority=?, job=? WHERE id=?",
                (self.run_id, job.priority, job_to_json(job), job.id),
            )

    def pending(self, limit: int | None = None, page: int = 500) -> Iterator[Job]:
        """This run's pending jobs, highest priority first, in file order within a
        priority; paged so no cursor stays open across writes."""
        last: tuple[int, int] | None = None
        served = 0
        while limit is None or served < limit:
            size = page if limit is None else min(page, limit - served)
            if last is None:
                rows = self.db.execute(
                    "SELECT priority, seq, job FROM jobs WHERE status='pending' AND plan_run=? "
                    "ORDER BY priority DESC, seq LIMIT ?",
                    (self.run_id, size),
                ).fetchall()
            else:
                rows = self.db.execute(
                    "SELECT priority, seq, job FROM jobs WHERE status='pending' AND plan_run=? "
                    "AND (priority < ? OR (priority = ? AND seq > ?)) "
                    "ORDER BY priority DESC, seq LIMIT ?",
                    (self.run_id, last[0], last[0], last[1], size),
                ).fetchall()
            if not rows:
                return
            for priority, seq, text in rows:
                last = (priority, seq)
                served += 1
                yield job_from_json(text)

    def set_fingerprint(self, job_id: str, fingerprint: str) -> None:
        self._writing()
        self._fenced(
            self.db.execute(self._sql_fingerprint, (fingerprint, job_id, *self._fence_args)), job_id
        )

    # -- results -------------------------------------------------------------
    def record_attempt(
        self,
        job_id: str,
        *,
        cost: float,
        prompt_tokens: int,
        output_tokens: int,
        cost_source: str,
        thoughts_tokens: int = 0,
        model: str | None = None,
        image_size: str | None = None,
        live_cost: float | None = None,
        mode: str | None = None,
    ) -> None:
        """One request made. Its caller commits within moments: a retry may wait
        long before any job ends, and a crash must lose only the counts (and cost)
        of requests still in flight, never those of answered ones. `model` and
        `image_size` (the output tier) are the request's, for spend per model;
        `mode` (live, flex) and `live_cost` (what live would have cost; None: `cost`)
        for spend per mode."""
        self._run_requests += 1
        self._writing()
        cur = self._write_row(
            self._sql_attempt,
            (
                cost,
                prompt_tokens,
                output_tokens,
                thoughts_tokens,
                cost_source,
                cost_source,
                cost_source,
                model,
                image_size,
                cost if live_cost is None else live_cost,
                mode,
                time.time(),
                job_id,
                *self._fence_args,
            ),
        )
        if cur is not None:
            self._fenced(cur, job_id)

    def record_retry(self, job_id: str, kind: str) -> None:
        """One answer of `kind` that the job is sent again after (a 429, a 503, …):
        counted per job and for this run, beside the final error the report gives.
        Once per retry, never per successful request."""
        self._writing()
        self._run_retried[kind] = self._run_retried.get(kind, 0) + 1
        cur = self.db.execute(self._sql_retried, (kind, kind, job_id, *self._fence_args))
        self._fenced(cur, job_id)

    def finish(
        self,
        job_id: str,
        status: Status,
        *,
        files: list[str] | None = None,
        error: ErrorInfo | None = None,
        text: str = "",
        upscaled: list[str] | None = None,
        preview: str | None = None,
        pixels: str | None = None,
        expected_pixels: str | None = None,
    ) -> None:
        """A job's end, written after its image is on disk; `pixels` is the
        first image's real size and `expected_pixels` the catalogue's ("WxH")."""
        self._writing()
        cur = self._write_row(
            self._sql_finish,
            (
                status.value,
                json.dumps(files) if files else "[]",
                error.kind if error else None,
                error.http_status if error else None,
                error.message if error else None,
                text,
                time.time(),
                json.dumps(upscaled) if upscaled else "[]",
                preview,
                pixels,
                expected_pixels,
                job_id,
                *self._fence_args,
            ),
        )
        if cur is not None:
            self._fenced(cur, job_id)

    def mark_cache_hit(self, job_id: str, saved: float) -> None:
        """The job's answer came from the request cache: no request, `saved` not spent.
        (A write to this table, so here rather than with the cache's own tables.)"""
        self._writing()
        cur = self.db.execute(self._sql_cache_hit, (saved, job_id, *self._fence_args))
        self._fenced(cur, job_id)

    def _fenced(self, cur: Cursor, job_id: str) -> None:
        """After a write to a running job's row: a backend with leases counts and
        reports a write its lease no longer allowed (it changed nothing)."""

    # -- totals the run checks as it goes ------------------------------------
    def spent(self) -> float:
        return float(self.db.execute("SELECT coalesce(sum(cost_usd), 0) FROM jobs").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return status_counts(self.db)
