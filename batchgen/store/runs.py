"""runs: the folder's runs and its notes (the `runs` and `meta` tables).

In: a run starting and ending, and small facts the pipeline keeps about the
folder (the image layout chosen once, whether the reports are current, the
digest of settled inputs). Out: this run's id, which every job it plans
carries as its plan mark, and those facts on the next run. The number of
requests a run made, and its retried answers by kind, are counted in memory
by the jobs table and written when the run ends, so no per-request statement
touches this table.
"""

from __future__ import annotations

import json
import time

from batchgen.store.db import Database


class RunsTable(Database):
    #: This run's id (0 until `start_run`): the plan mark of the jobs it wants.
    run_id: int = 0
    #: Requests made by this run so far (counted by `JobsTable.record_attempt`).
    _run_requests: int = 0
    #: This run's retried answers by outcome kind (counted by `JobsTable.record_retry`).
    _run_retried: dict[str, int]

    def _opened(self) -> None:
        super()._opened()
        self._run_retried = {}

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._writing()
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def start_run(self) -> int:
        self._writing()
        self._run_retried = {}
        cur = self.db.execute("INSERT INTO runs (started_at) VALUES (?)", (time.time(),))
        self.run_id = int(cur.lastrowid or 0)
        return self.run_id

    def add_run_counts(self, requests: int, retried: dict[str, int]) -> None:
        """Requests and retried answers this run made through other connections
        (the Ray engine's workers), recorded with the run as it ends."""
        self._run_requests += requests
        for kind, n in retried.items():
            self._run_retried[kind] = self._run_retried.get(kind, 0) + n

    def run_counts(self) -> tuple[int, dict[str, int]]:
        """Requests and retried answers recorded through this connection so far."""
        return self._run_requests, dict(self._run_retried)

    def end_run(self, exit_code: int) -> None:
        self._writing()
        self.db.execute(
            "UPDATE runs SET finished_at=?, exit_code=?, requests=?, retried=? WHERE run_id=?",
            (
                time.time(),
                exit_code,
                self._run_requests,
                json.dumps(self._run_retried, sort_keys=True),
                self.run_id,
            ),
        )

    def run_retried(self, run_id: int) -> dict[str, int]:
        """A finished run's retried answers by outcome kind."""
        row = self.db.execute("SELECT retried FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return {} if row is None else {str(k): int(n) for k, n in json.loads(row[0]).items()}
