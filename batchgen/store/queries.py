"""queries: what the report reads from the store, as typed records.

In: the folder's tables. Out: `Totals` (counts, requests, tokens, cost, time,
cache savings, error kinds, retried kinds and cost sources), `TagTotals` per
tag, every job's `JobRecord` in file order, and the failed, blocked and skipped
jobs in the input format. The report is a pure function of these: it never sees SQL, so the
schema can change under it and only this module follows.

Built for a million rows: totals are aggregate statements (the tag roll-up
is grouped by SQLite through `json_each`, one Python row per tag), and rows
stream from one cursor in `seq` order (indexed by `jobs_seq`), never held.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from batchgen.jobs.codec import input_form
from batchgen.models import ErrorInfo, JobRecord, Status
from batchgen.store.jobs import status_counts
from batchgen.store.rows import ReportRows


@dataclass(frozen=True, slots=True)
class Tally:
    """How many jobs share one value of a column: an error kind, a cost source."""

    name: str
    jobs: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Every job of the folder, across all its runs, summed."""

    jobs: int
    done: int
    blocked: int
    failed: int
    skipped: int
    pending: int
    requests: int
    #: Attempts beyond each job's first.
    retries: int
    prompt_tokens: int
    output_tokens: int
    cost_usd: float
    #: Jobs per cost source ("usage", "table", "mixed", "cache").
    cost_sources: tuple[Tally, ...]
    #: Final error kinds of jobs that ended (pending jobs' last errors are not final).
    errors: tuple[Tally, ...]
    #: Answers that were retried, by outcome kind, over every job (`Tally.jobs`
    #: counts answers here, not jobs).
    retried: tuple[Tally, ...]
    #: Wall time of all runs (an unfinished run counts as zero).
    elapsed_s: float
    cache_hits: int
    saved_usd: float
    first_started: float | None
    last_finished: float | None
    #: Done jobs whose image is not the size the catalogue says the request gives.
    size_mismatches: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.blocked + self.skipped


@dataclass(frozen=True, slots=True)
class Spend:
    """What the jobs sent to one model at one output size cost."""

    model: str
    #: The output tier ("1K", "2K", ...); "" where the model's is unknown.
    size: str
    jobs: int
    done: int
    cost_usd: float
    #: Jobs whose cost is unknown (a model without a price).
    unpriced: int


@dataclass(frozen=True, slots=True)
class ModeSpend:
    """What the jobs last sent in one run mode cost, and would have cost live."""

    mode: str
    jobs: int
    cost_usd: float
    live_cost_usd: float


@dataclass(frozen=True, slots=True)
class TagTotals:
    """The jobs carrying one tag (a job with two tags counts in both)."""

    tag: str
    jobs: int
    done: int
    failed: int
    blocked: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A failed, blocked or skipped job as the user can fix and feed it back."""

    #: The job in the input format (no origin), key order as stored.
    job: Mapping[str, Any]
    status: Status
    error: ErrorInfo | None


def _error(kind: str | None, http_status: int | None, message: str | None) -> ErrorInfo | None:
    return ErrorInfo(kind, http_status, message or "") if kind else None


def _retried(text: str) -> dict[str, int]:
    # Most jobs are never retried: skip the JSON parser for them.
    return {} if text == "{}" else {str(k): int(n) for k, n in json.loads(text).items()}


class ReportQueries(ReportRows):
    """The report's reads; the per-job rows as JSON text come from `ReportRows`."""

    def totals(self) -> Totals:
        counts = status_counts(self.db)
        row = self.db.execute(
            """SELECT count(*), coalesce(sum(requests),0),
               coalesce(sum(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END),0),
               coalesce(sum(prompt_tokens),0), coalesce(sum(output_tokens),0),
               coalesce(sum(cost_usd),0), min(started_at), max(finished_at),
               coalesce(sum(cache_hit),0), coalesce(sum(saved_usd),0)
               FROM jobs"""
        ).fetchone()
        kinds = self.db.execute(
            "SELECT error_kind, count(*) FROM jobs WHERE error_kind IS NOT NULL "
            "AND status != 'pending' GROUP BY error_kind ORDER BY error_kind"
        ).fetchall()
        sources = self.db.execute(
            "SELECT cost_source, count(*) FROM jobs WHERE cost_source != '' "
            "GROUP BY cost_source ORDER BY cost_source"
        ).fetchall()
        retried = self.db.execute(self.sql.retried_totals).fetchall()
        mismatches = self.db.execute(
            "SELECT count(*) FROM jobs WHERE pixels IS NOT NULL AND expected_pixels IS NOT NULL "
            "AND pixels != expected_pixels"
        ).fetchone()[0]
        elapsed = self.db.execute(
            "SELECT coalesce(sum(coalesce(finished_at, started_at) - started_at), 0) FROM runs"
        ).fetchone()[0]
        return Totals(
            jobs=int(row[0]),
            done=counts[Status.DONE],
            blocked=counts[Status.BLOCKED],
            failed=counts[Status.FAILED],
            skipped=counts[Status.SKIPPED],
            pending=counts[Status.PENDING],
            requests=int(row[1]),
            retries=int(row[2]),
            prompt_tokens=int(row[3]),
            output_tokens=int(row[4]),
            cost_usd=float(row[5]),
            cost_sources=tuple(Tally(str(s), int(n)) for s, n in sources),
            errors=tuple(Tally(str(k), int(n)) for k, n in kinds),
            retried=tuple(Tally(str(k), int(n)) for k, n in retried),
            elapsed_s=float(elapsed),
            cache_hits=int(row[8]),
            saved_usd=float(row[9]),
            first_started=row[6],
            last_finished=row[7],
            size_mismatches=int(mismatches),
        )

    def spend(self) -> list[Spend]:
        """Spend per model and output size, of jobs that made a request."""
        rows = self.db.execute(
            """SELECT model, coalesce(image_size, ''), count(*),
               sum(CASE WHEN status = 'done' THEN 1 ELSE 0 END), coalesce(sum(cost_usd), 0.0),
               sum(CASE WHEN cost_source = 'unknown' THEN 1 ELSE 0 END)
               FROM jobs WHERE model IS NOT NULL GROUP BY model, image_size
               ORDER BY coalesce(sum(cost_usd), 0.0) DESC, model, coalesce(image_size, '')"""
        ).fetchall()
        return [
            Spend(str(m), str(size), int(n), int(done), float(cost), int(unpriced))
            for m, size, n, done, cost, unpriced in rows
        ]

    def mode_spend(self) -> list[ModeSpend]:
        """Spend per run mode (live, flex), of jobs that made a request."""
        rows = self.db.execute(
            """SELECT mode, count(*), coalesce(sum(cost_usd), 0.0),
               coalesce(sum(live_cost_usd), 0.0)
               FROM jobs WHERE mode IS NOT NULL GROUP BY mode ORDER BY mode"""
        ).fetchall()
        return [ModeSpend(str(m), int(n), float(c), float(live)) for m, n, c, live in rows]

    def tag_totals(self) -> list[TagTotals]:
        """Per-tag totals, grouped by SQLite (one Python row per tag, not per job)."""
        rows = self.db.execute(self.sql.tag_totals).fetchall()
        return [
            TagTotals(str(tag), int(n), int(done), int(failed), int(blocked), float(cost))
            for tag, n, done, failed, blocked, cost in rows
        ]

    def records(self, statuses: Collection[Status] = ()) -> Iterator[JobRecord]:
        """Every job's record in file order, or only those in `statuses`."""
        where = ""
        if statuses:
            where = "WHERE status IN (" + ",".join("?" * len(statuses)) + ")"
        cur = self.db.execute(
            f"""SELECT id, fingerprint, status, attempts, files, error_kind, http_status,
               error_message, text, prompt_tokens, output_tokens, cost_usd, cost_source, job,
               started_at, finished_at, requests, upscaled, preview, retried, model,
               image_size, thoughts_tokens, pixels, expected_pixels, mode, live_cost_usd
               FROM jobs {where} ORDER BY seq""",
            [s.value for s in statuses],
        )
        for row in cur:
            job = json.loads(row[13])
            yield JobRecord(
                id=row[0],
                fingerprint=row[1],
                status=Status(row[2]),
                attempts=row[3],
                files=json.loads(row[4]),
                error=_error(row[5], row[6], row[7]),
                retried=_retried(row[19]),
                text=row[8],
                prompt_tokens=row[9],
                output_tokens=row[10],
                cost_usd=row[11],
                cost_source=row[12],
                tags=list(job.get("tags", [])),
                prompt=job["prompt"],
                source=job.get("source", ""),
                line=int(job.get("line", 0)),
                images=list(job.get("images", [])),
                started_at=row[14],
                finished_at=row[15],
                requests=row[16],
                upscaled=json.loads(row[17]),
                preview=row[18],
                model=row[20],
                image_size=row[21],
                thoughts_tokens=row[22],
                pixels=row[23],
                expected_pixels=row[24],
                mode=row[25],
                live_cost_usd=row[26],
            )

    def failed_jobs(self) -> Iterator[FailedJob]:
        """Failed, blocked and skipped jobs in file order, in one pass (not a lookup
        per job). Skipped ones too: fed back with their failed parents, they run again."""
        cur = self.db.execute(
            "SELECT job, status, error_kind, http_status, error_message FROM jobs "
            "WHERE status IN (?,?,?) ORDER BY seq",
            (Status.FAILED.value, Status.BLOCKED.value, Status.SKIPPED.value),
        )
        for job, status, kind, http_status, message in cur:
            yield FailedJob(input_form(job), Status(status), _error(kind, http_status, message))
