"""planning: a run's plan written to a PostgreSQL state in bulk.

In: the planner's `prefetch(ids)`, `lookup(id)` and `plan(job, fp, reset)`
calls, one per job, as on SQLite. Out: the same rows, written in a few
statements per thousands of jobs instead of two round trips per job: a
planning pass over 100,000 jobs is seconds, not minutes, and its memory is
bounded by one chunk.

- `prefetch`: the planner reads jobs in chunks (`engine/planner.PREFETCH`)
  and asks for their rows in one ``SELECT … WHERE id = ANY(…)``; each
  `lookup` of the chunk is then answered from memory.
- `plan`: rows are staged in memory and, every `FLUSH_AT` jobs and before
  the unit of work commits, copied into a temporary table with ``COPY``,
  then written by one ``INSERT … SELECT … ON CONFLICT`` for jobs planned
  afresh (new, changed, retried: the same reset as SQLite's, `jobs.RESET`)
  and one ``UPDATE … FROM`` for jobs that only move their plan mark.
- A lookup of a job staged but not yet written answers from the stage, so a
  chained job sees its parent as this pass left it, as on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from batchgen.jobs.codec import job_to_json
from batchgen.models import Job, Status
from batchgen.store.jobs import RESET, JobsTable, Known
from batchgen.store.pg.database import PgDatabase

#: Staged rows written at most this many at a time.
FLUSH_AT = 5000

_STAGE = """CREATE TEMP TABLE IF NOT EXISTS plan_stage (
    id text COLLATE "C" PRIMARY KEY, seq bigint, fingerprint text COLLATE "C",
    priority bigint, reset boolean, job text COLLATE "C")"""
_COPY = "COPY plan_stage (id, seq, fingerprint, priority, reset, job) FROM STDIN"
_INSERT = f"""INSERT INTO jobs (id, seq, fingerprint, status, priority, plan_run, job)
    SELECT id, seq, fingerprint, 'pending', priority, ?, job FROM plan_stage WHERE reset
    ON CONFLICT (id) DO UPDATE SET {RESET},
    lease_owner = NULL, lease_token = NULL, lease_until = NULL"""
_MOVE = """UPDATE jobs SET plan_run = ?, priority = s.priority, job = s.job
    FROM plan_stage AS s WHERE jobs.id = s.id AND NOT s.reset"""

#: A staged row: seq, fingerprint, priority, reset, the job's stored form.
_Row = list[object]


class PgPlanning(JobsTable, PgDatabase):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: dict[str, _Row] = {}
        #: The current chunk's rows (None: no row for that id).
        self._known: dict[str, Known | None] = {}

    def _opened(self) -> None:
        super()._opened()
        if not self.readonly:
            self.db.execute(_STAGE)

    def prefetch(self, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        self._known = dict.fromkeys(ids)
        rows = self.db.execute(
            "SELECT id, status, fingerprint, files FROM jobs WHERE id = ANY(?)", (ids,)
        ).fetchall()
        for job_id, status, fp, files in rows:
            self._known[job_id] = Known(Status(status), fp, _files(files))

    def lookup(self, job_id: str) -> Known | None:
        staged = self._staged.get(job_id)
        if staged is not None and staged[3]:
            return Known(Status.PENDING, str(staged[1]), ())
        if job_id in self._known:
            return self._known[job_id]
        return super().lookup(job_id)

    def plan(self, job: Job, fingerprint: str, *, reset: bool) -> None:
        self._writing()
        self._known.pop(job.id, None)
        text = job_to_json(job)
        staged = self._staged.get(job.id)
        if reset:
            self._next_seq += 1
            self._staged[job.id] = [self._next_seq, fingerprint, job.priority, True, text]
        elif staged is not None:  # planned afresh earlier in this pass: it stays so
            staged[2], staged[4] = job.priority, text
        else:
            self._staged[job.id] = [0, "", job.priority, False, text]
        if len(self._staged) >= FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        if not self._staged:
            return
        with self.db.raw.cursor() as cur, cur.copy(_COPY) as copy:
            for job_id, row in self._staged.items():
                copy.write_row((job_id, *row))
        self._staged = {}
        self.db.execute(_INSERT, (self.run_id,))
        self.db.execute(_MOVE, (self.run_id,))
        self.db.execute("TRUNCATE plan_stage")

    def _before_commit(self) -> None:
        self._flush()
        super()._before_commit()

    def rollback(self) -> None:
        self._staged = {}
        super().rollback()


def _files(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))
