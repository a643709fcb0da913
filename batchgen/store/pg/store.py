"""store: `PgStore`, the `Store` of a PostgreSQL state.

The same class as SQLite's `Store` with the PostgreSQL parts in front of it
in the method order: `LateRequests` (a request answered after its worker's
lease had passed: refused on the job's row, on record as spend), `PgQueue`
(claims, leases, fenced writes), `PgPlanning` (planning in bulk by COPY),
`PgReportRows` (the report's rows, built by SQLite's SQL on a copy),
`WorkerTables` (what the Ray engine's actors ask between claims) and
`PgDatabase` (connection, driver lock, identity, migrations). Every other
method, and every caller (planner, pool, runner, report, review), is the one
SQLite runs: the engine and the report do not know which backend they hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from batchgen.store.pg.late import LateRequests
from batchgen.store.pg.planning import PgPlanning
from batchgen.store.pg.queue import PgQueue
from batchgen.store.pg.snapshot import PgReportRows
from batchgen.store.pg.workers import WorkerTables
from batchgen.store.state import Store


class PgStore(LateRequests, PgQueue, PgPlanning, PgReportRows, WorkerTables, Store):
    def __init__(self, out: Path, url: str, *, readonly: bool = False, lock: bool = True) -> None:
        super().__init__(out, url, readonly=readonly, lock=lock)

    def plan_redo(self, job_id: str, files: Iterable[str]) -> None:
        self._flush()  # it reads the job's row as this pass planned it
        super().plan_redo(job_id, files)
