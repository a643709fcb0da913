"""queue: the jobs table of a PostgreSQL state doubling as a work queue.

In: a worker's name and how many jobs it wants. Out: jobs claimed under a
lease, renewed in one statement, and every write to a claimed job's row
fenced by its lease, so that a worker frozen past its lease (a zombie) cannot
overwrite what another finished: its write matches no row, is counted in
`refused` and changes nothing.

- `claim(worker, n, lease_seconds)`: one ``UPDATE … WHERE id IN (SELECT …
  FOR UPDATE SKIP LOCKED) RETURNING``: two claimers never get one job and
  never wait on each other. Lease times are the database clock's
  (``clock_timestamp()``), never a worker's.
- `renew()`: every lease this store holds, one statement; a driver's unit of
  work renews on commit once a quarter of the lease has passed.
- `holds(job_id)`: whether a claimed job's lease is still this store's, asked
  just before each request is sent (a Ray worker's pool), without a round
  trip: each claim and renew notes its jobs' deadline on this machine's
  monotonic clock, from before the statement ran, so never later than the
  database's. With less than `SEND_MARGIN` of the lease left (a heartbeat
  late, or the worker frozen), one renew decides: a job it no longer returns
  has passed to another worker and is not sent.
- The inline engine on PostgreSQL takes its jobs the same way (`pending`
  claims its pages), so one queue serves it and the later Ray workers alike.
- A new run (`start_run`, under the driver lock) voids the leases of the runs
  before it: their workers died with their driver. A store closing cleanly
  hands its unfinished leases back.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any

from batchgen.jobs.codec import job_from_json
from batchgen.models import Job
from batchgen.store.dialect import Cursor
from batchgen.store.jobs import JobsTable
from batchgen.store.pg.database import PgDatabase

log = logging.getLogger(__name__)

#: How long a claim holds a job unless renewed (seconds).
LEASE_SECONDS = 300.0
#: A job is sent on its lease while at least this share of it is left; a
#: heartbeat renews every third, so a live worker always has two thirds.
SEND_MARGIN = 1 / 3

_FREE = "(lease_until IS NULL OR lease_until < clock_timestamp())"
_SET_LEASE = """UPDATE jobs SET lease_owner = ?, lease_token = ?,
    lease_until = clock_timestamp() + make_interval(secs => ?)"""
#: Free pending jobs of the run, best first.
_CLAIM = f"""{_SET_LEASE} WHERE id IN (SELECT id FROM jobs
    WHERE status = 'pending' AND plan_run = ? AND {_FREE}
    ORDER BY priority DESC, seq LIMIT ? FOR UPDATE SKIP LOCKED)
    RETURNING priority, seq, job"""
#: The next page of the run's pending jobs after (priority, seq), free or this store's own.
_PAGE = f"""{_SET_LEASE} WHERE id IN (SELECT id FROM jobs
    WHERE status = 'pending' AND plan_run = ?
    AND ({_FREE} OR (lease_owner = ? AND lease_token = ?))
    AND (priority < ? OR (priority = ? AND seq > ?))
    ORDER BY priority DESC, seq LIMIT ? FOR UPDATE SKIP LOCKED)
    RETURNING priority, seq, job"""
_NO_LEASE = "lease_owner = NULL, lease_token = NULL, lease_until = NULL"


class PgQueue(JobsTable, PgDatabase):
    _FENCE = " AND lease_owner = ? AND lease_token = ?"
    lease_seconds = LEASE_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: This process's name on its leases, and the token of this store's claims.
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.token = secrets.token_hex(8)
        self._fence_args = (self.worker, self.token)
        #: Writes refused because this store's lease on the job was gone.
        self.refused = 0
        self._renewed = time.monotonic()
        #: Jobs claimed by this store -> their lease's end, by this machine's clock.
        self._held: dict[str, float] = {}

    def start_run(self) -> int:
        self._writing()
        self._run_retried = {}
        row = self.db.execute(
            "INSERT INTO runs (started_at) VALUES (?) RETURNING run_id", (time.time(),)
        ).fetchone()
        self.run_id = int(row[0])
        self.db.execute(f"UPDATE jobs SET {_NO_LEASE} WHERE lease_owner IS NOT NULL")
        return self.run_id

    def _current_run(self) -> int:
        if self.run_id:
            return self.run_id
        row = self.db.execute("SELECT coalesce(max(run_id), 0) FROM runs").fetchone()
        return int(row[0])

    # -- the queue -------------------------------------------------------------
    def claim(self, worker: str, n: int, lease_seconds: float = LEASE_SECONDS) -> list[Job]:
        """Up to `n` free pending jobs of the current run, leased to `worker`
        (this store's token) for `lease_seconds`, best first."""
        self.worker = worker
        self._fence_args = (worker, self.token)
        asked = time.monotonic()
        rows = self.db.execute(
            _CLAIM, (worker, self.token, lease_seconds, self._current_run(), n)
        ).fetchall()
        rows.sort(key=lambda r: (-r[0], r[1]))
        jobs = [job_from_json(r[2]) for r in rows]
        self._held.update((job.id, asked + lease_seconds) for job in jobs)
        return jobs

    def renew(self, lease_seconds: float | None = None) -> int:
        """Extend every lease this store holds; how many jobs it still holds."""
        self._renewed = asked = time.monotonic()
        seconds = self.lease_seconds if lease_seconds is None else lease_seconds
        rows = self.db.execute(
            "UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => ?) "
            "WHERE lease_owner = ? AND lease_token = ? AND status = 'pending' RETURNING id",
            (seconds, *self._fence_args),
        ).fetchall()
        self._held = {str(r[0]): asked + seconds for r in rows}
        return len(rows)

    def holds(self, job_id: str) -> bool:
        """Whether this store's lease on `job_id` (a job it claimed) is still its own,
        with `SEND_MARGIN` of it left: checked before a request is sent."""
        margin = self.lease_seconds * SEND_MARGIN
        end = self._held.get(job_id)
        if end is None:
            return False
        if end - time.monotonic() > margin:
            return True
        self.renew()  # running out: frozen past it, or only a heartbeat late?
        return self._held.get(job_id, 0.0) - time.monotonic() > margin

    def pending(self, limit: int | None = None, page: int = 500) -> Iterator[Job]:
        """This run's pending jobs in the order SQLite's `pending` gives, each
        claimed as its page is read (jobs another worker holds are passed over)."""
        last = (2**62, 0)
        served = 0
        while limit is None or served < limit:
            size = page if limit is None else min(page, limit - served)
            args = (self.run_id, *self._fence_args, last[0], last[0], last[1], size)
            rows = self.db.execute(_PAGE, (*self._fence_args, self.lease_seconds, *args)).fetchall()
            if not rows:
                return
            rows.sort(key=lambda r: (-r[0], r[1]))
            for priority, seq, text in rows:
                last = (priority, seq)
                served += 1
                yield job_from_json(text)

    def _fenced(self, cur: Cursor, job_id: str) -> None:
        if cur.rowcount == 0:
            self.refused += 1
            log.warning("refused a write to %s: this worker's lease on it has ended", job_id)

    def _before_commit(self) -> None:
        if time.monotonic() - self._renewed > self.lease_seconds / 4:
            self.renew()
        super()._before_commit()

    def release(self) -> None:
        """Hand back the leases of jobs this store did not end."""
        self.db.execute(
            f"UPDATE jobs SET {_NO_LEASE} WHERE lease_owner = ? AND lease_token = ?",
            self._fence_args,
        )

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None and not self.readonly and not db.raw.closed:
            try:
                if not db.in_transaction:
                    self.release()
            except Exception:  # closing after a lost connection: the next run voids them
                log.debug("leases not released", exc_info=True)
        super().close()
