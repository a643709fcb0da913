"""workers: what the Ray engine's actors ask a PostgreSQL state besides the queue.

In: a worker between rounds of claims, the pacer actor starting and learning.
Out: how many of the run's jobs are still pending (and how many of those are
leased right now, by the database clock), and the limiter's learned rate per
scope (the `limiter` table), so that a restarted pacer does not start blind.
"""

from __future__ import annotations

import time

from batchgen.store.pg.database import PgDatabase

_LEFT = """SELECT count(*), count(*) FILTER (WHERE lease_until >= clock_timestamp())
    FROM jobs WHERE status = 'pending' AND plan_run = ?"""


class WorkerTables(PgDatabase):
    run_id: int

    def left_in_run(self) -> tuple[int, int]:
        """The run's pending jobs, and how many of them are leased now."""
        row = self.db.execute(_LEFT, (self.run_id,)).fetchone()
        return int(row[0]), int(row[1])

    def learned_rate(self, scope: str) -> float | None:
        """The rate (requests per window, as `rpm`) a pacer last learned for `scope`."""
        row = self.db.execute("SELECT rpm FROM limiter WHERE scope = ?", (scope,)).fetchone()
        return None if row is None else float(row[0])

    def save_learned_rate(self, scope: str, rpm: float) -> None:
        self._writing()
        self.db.execute(
            "INSERT INTO limiter VALUES (?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
            "rpm = excluded.rpm, updated_at = excluded.updated_at",
            (scope, rpm, time.time()),
        )
