"""snapshot: the report's rows of a PostgreSQL state, built by the SQLite SQL.

In: the report's calls for its rows (`report_rows`, `job_columns`). Out: the
same `ReportRow`s as a SQLite state gives, byte for byte. SQLite builds each
row's JSON text in SQL (`store/rows.py`: its JSON functions, its number
formatting); rather than a second spelling of that SQL in PostgreSQL's
dialect, which would drift from it a character at a time, the jobs table is
copied into a temporary SQLite file (pages of 5,000 rows in `seq` order, so
memory stays bounded) and the one SQL runs there. One copy serves a whole
report (summary, gallery and its sorted views); it is dropped when the store
commits or closes, so the next report reads the rows as they are then.

The copy costs about a second per 100,000 jobs; a later step may give the
row builder a PostgreSQL form if reports of shared states at a million jobs
need it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from batchgen.store.pg.database import PgDatabase
from batchgen.store.rows import ReportRow
from batchgen.store.state import Store

PAGE = 5000


class PgReportRows(PgDatabase):
    _snap: Store | None = None
    _snap_dir: tempfile.TemporaryDirectory[str] | None = None

    def report_rows(self, order: str = "file", limit: int | None = None) -> Iterator[ReportRow]:
        yield from self._snapshot().report_rows(order, limit)

    def job_columns(self) -> Iterator[list[tuple[Any, ...]]]:
        yield from self._snapshot().job_columns()

    def first_file(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT files::jsonb ->> 0 FROM jobs WHERE id = ?", (job_id,))
        first = row.fetchone()
        return None if first is None or first[0] is None else str(first[0]).split("#", 1)[0]

    def upscaled_total(self) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(jsonb_array_length(upscaled::jsonb)), 0) FROM jobs"
        ).fetchone()
        return int(row[0])

    def _snapshot(self) -> Store:
        if self._snap is not None:
            return self._snap
        self._snap_dir = tempfile.TemporaryDirectory(prefix="batchgen-report-")
        path = Path(self._snap_dir.name) / "jobs.sqlite"
        with Store(self.out, path=path) as snap:
            names = [r[1] for r in snap.db.execute("PRAGMA table_info(jobs)").fetchall()]
            columns = ", ".join(names)
            insert = f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(names))})"
            last = -(2**62)
            with snap.transaction():
                while rows := self.db.execute(
                    f"SELECT {columns} FROM jobs WHERE seq > ? ORDER BY seq LIMIT {PAGE}",
                    (last,),
                ).fetchall():
                    snap.db.executemany(insert, rows)
                    last = rows[-1][names.index("seq")]
        self._snap = Store(self.out, readonly=True, path=path)
        self._snap.open()
        return self._snap

    def _drop_snapshot(self) -> None:
        if self._snap is not None:
            self._snap.close()
            self._snap = None
        if self._snap_dir is not None:
            with contextlib.suppress(OSError):
                self._snap_dir.cleanup()
            self._snap_dir = None

    def _before_commit(self) -> None:
        self._drop_snapshot()
        super()._before_commit()

    def close(self) -> None:
        self._drop_snapshot()
        super().close()
