"""batches: the folder's Batch Mode batches (tables `batches`, `batch_jobs`, `batch_uploads`).

In: each batch the run means to create (written *before* the create call,
with its deterministic display name and its jobs), what the API says of it
as it is polled, each of its jobs as its result line is handled, the
reference images uploaded once for many jobs. Out: the open batches a
resumed run must find or poll, the pending jobs that no open batch holds
(the next wave), a batch's jobs still to handle, and the listing that
``batchgen batches`` prints.

A job stays `pending` in the jobs table while a batch holds it; its
membership row is *settled* once its result line has been handled (or the
batch ended without one), so a download cut off by a kill resumes without
handling a line twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from batchgen.jobs.codec import job_from_json
from batchgen.models import Job
from batchgen.store.db import Database

#: A batch recorded but not (known to be) created yet.
INTENT = "INTENT"

_COLUMNS = (
    "name, wave, number, model, batch_id, state, input_file, results_file, stats, jobs, "
    "reserved_usd, created_at, updated_at, closed, note"
)


@dataclass(frozen=True, slots=True)
class BatchRow:
    name: str
    wave: int
    number: int
    model: str
    batch_id: str | None
    state: str
    input_file: str | None
    results_file: str | None
    stats: dict[str, int]
    jobs: int
    reserved_usd: float
    created_at: float
    updated_at: float | None
    closed: bool
    note: str


def _row(r: Any) -> BatchRow:
    return BatchRow(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9], r[10],
        r[11], r[12], bool(r[13]), r[14],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Member:
    job_id: str
    fingerprint: str
    cache_key: str
    settled: bool


class BatchesTable(Database):
    def add_batch(
        self,
        name: str,
        *,
        wave: int,
        number: int,
        model: str,
        members: list[tuple[str, str, str]],
        reserved_usd: float,
    ) -> None:
        """The intent to create batch `name` of `members` ``(job id, fingerprint, cache key)``."""
        self._writing()
        self.db.execute(
            "INSERT INTO batches (name, wave, number, model, jobs, reserved_usd, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, wave, number, model, len(members), reserved_usd, time.time()),
        )
        self.db.executemany(
            "INSERT INTO batch_jobs (batch, job_id, fingerprint, cache_key) VALUES (?, ?, ?, ?)",
            [(name, *m) for m in members],
        )

    def last_wave(self) -> int:
        return int(self.db.execute("SELECT coalesce(max(wave), 0) FROM batches").fetchone()[0])

    def batches(self, *, open_only: bool = False) -> list[BatchRow]:
        where = " WHERE closed = 0" if open_only else ""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM batches{where} ORDER BY wave, number"
        ).fetchall()
        return [_row(r) for r in rows]

    def batch(self, name: str) -> BatchRow | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM batches WHERE name=?", (name,)).fetchone()
        return None if row is None else _row(row)

    def update_batch(self, name: str, **fields: Any) -> None:
        """Set some of batch_id, state, input_file, results_file, stats, note, closed."""
        self._writing()
        allowed = {"batch_id", "state", "input_file", "results_file", "stats", "note", "closed"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"unknown batch fields: {sorted(set(fields) - allowed)}")
        values = [json.dumps(v) if k == "stats" else v for k, v in fields.items()]
        assignments = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(
            f"UPDATE batches SET {assignments}, updated_at=? WHERE name=?",
            (*values, time.time(), name),
        )

    def members(self, name: str) -> list[Member]:
        """The batch's jobs, in the order they were added."""
        rows = self.db.execute(
            "SELECT job_id, fingerprint, cache_key, settled FROM batch_jobs WHERE batch=? "
            "ORDER BY rowid",
            (name,),
        ).fetchall()
        return [Member(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def member_jobs(self, name: str) -> Iterator[Job]:
        """The batch's unsettled jobs as stored, streamed (one row at a time)."""
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT bj.rowid, j.job FROM batch_jobs bj JOIN jobs j ON j.id = bj.job_id "
                "WHERE bj.batch=? AND bj.settled=0 AND bj.rowid > ? ORDER BY bj.rowid LIMIT 500",
                (name, last),
            ).fetchall()
            if not rows:
                return
            for rowid, text in rows:
                last = rowid
                yield job_from_json(text)

    def settle_member(self, name: str, job_id: str) -> None:
        """The job's result line is handled (its end or its retry is written with it)."""
        self._writing()
        self.db.execute(
            "UPDATE batch_jobs SET settled=1 WHERE batch=? AND job_id=?", (name, job_id)
        )

    def release_members(self, name: str) -> int:
        """Every job of the batch not handled yet is free for another batch."""
        self._writing()
        cur = self.db.execute(
            "UPDATE batch_jobs SET settled=1 WHERE batch=? AND settled=0", (name,)
        )
        return int(cur.rowcount)

    def unbatched(self, run_id: int, page: int = 500) -> Iterator[Job]:
        """This run's pending jobs that no open batch holds, highest priority first,
        in file order within a priority (paged: no cursor stays open across writes)."""
        last: tuple[int, int] = (1 << 62, -1)
        while True:
            rows = self.db.execute(
                """SELECT priority, seq, job FROM jobs WHERE status='pending' AND plan_run=?
                   AND (priority < ? OR (priority = ? AND seq > ?))
                   AND NOT EXISTS (SELECT 1 FROM batch_jobs bj JOIN batches b ON b.name=bj.batch
                     WHERE bj.job_id = jobs.id AND bj.settled = 0 AND b.closed = 0)
                   ORDER BY priority DESC, seq LIMIT ?""",
                (run_id, last[0], last[0], last[1], page),
            ).fetchall()
            if not rows:
                return
            for priority, seq, text in rows:
                last = (priority, seq)
                yield job_from_json(text)

    def tries(self, job_id: str) -> tuple[int, int]:
        """A job's requests so far and how many of them were answered 429."""
        row = self.db.execute(
            f"SELECT attempts, coalesce({self.sql.retried_of('rate_limited')}, 0) "
            "FROM jobs WHERE id=?",
            (job_id,),
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def uploaded(self, sha256: str, newer_than: float) -> tuple[str, str] | None:
        """``(uri, mime)`` of a reference image uploaded since `newer_than`, or None."""
        row = self.db.execute(
            "SELECT uri, mime FROM batch_uploads WHERE sha256=? AND created_at > ?",
            (sha256, newer_than),
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def remember_upload(self, sha256: str, name: str, uri: str, mime: str) -> None:
        self._writing()
        self.db.execute(
            "INSERT INTO batch_uploads VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO UPDATE "
            "SET name = excluded.name, uri = excluded.uri, mime = excluded.mime, "
            "created_at = excluded.created_at",
            (sha256, name, uri, mime, time.time()),
        )
