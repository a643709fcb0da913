"""store: the single source of truth for progress, in `OUT/.batchgen/state.sqlite`.

In: planned jobs, attempt results, finished jobs. Out: what is left to do,
and every record for the report. SQLite in WAL mode, one connection owned by
the event loop thread, committed as each job ends (a `kill -9` loses only
what was in flight). Migrations are an append-only list; the database carries
an application id and a schema version so that a foreign, corrupt or newer
file is refused with a clear message instead of being silently replaced,
which would pay for every image again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchgen.errors import AbortError, StateError
from batchgen.jobs.codec import job_from_json, job_to_json
from batchgen.models import ErrorInfo, Job, JobRecord, Status

STATE_DIR = ".batchgen"
DB_NAME = "state.sqlite"
APPLICATION_ID = 0x62676E31  # "bgn1"


def _script(db: sqlite3.Connection, script: str) -> None:
    """Statements one by one: `executescript` would commit the migration's transaction."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at REAL NOT NULL, finished_at REAL, exit_code INTEGER,
            requests INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            status TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            plan_run INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            requests INTEGER NOT NULL DEFAULT 0,
            files TEXT NOT NULL DEFAULT '[]',
            error_kind TEXT, http_status INTEGER, error_message TEXT,
            text TEXT NOT NULL DEFAULT '',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            cost_source TEXT NOT NULL DEFAULT '',
            job TEXT NOT NULL,
            started_at REAL, finished_at REAL);
        CREATE INDEX jobs_pending ON jobs (status, plan_run, priority DESC, seq);
        CREATE TABLE image_hashes (
            path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL);
        """,
    )


def _m002_request_cache(db: sqlite3.Connection) -> None:
    _script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN saved_usd REAL NOT NULL DEFAULT 0;
        CREATE TABLE request_cache (
            key TEXT PRIMARY KEY, job_id TEXT NOT NULL, files TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '', cost_usd REAL NOT NULL DEFAULT 0);
        """,
    )


def _m003_seq_index(db: sqlite3.Connection) -> None:
    # The report streams jobs in file order; without this it sorts a million rows.
    db.execute("CREATE INDEX jobs_seq ON jobs (seq)")


def _m004_upscaled(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE jobs ADD COLUMN upscaled TEXT NOT NULL DEFAULT '[]'")


def _m005_preview(db: sqlite3.Connection) -> None:
    # Where the gallery's preview of the first image is, when known as it landed.
    db.execute("ALTER TABLE jobs ADD COLUMN preview TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_initial,
    _m002_request_cache,
    _m003_seq_index,
    _m004_upscaled,
    _m005_preview,
]
SCHEMA_VERSION = len(MIGRATIONS)


class _Connection(sqlite3.Connection):
    """A connection whose "database or disk is full" stops the run with a clear
    message (like a full disk while writing an image), and whose damaged pages
    found mid-run are refused like a corrupt file at open, instead of a traceback."""

    path: Path = Path()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            code = exc.sqlite_errorcode & 0xFF
            if code == sqlite3.SQLITE_FULL:
                raise AbortError(
                    f"disk full while writing the state {self.path}; free some space and run "
                    "the same command again (finished images are kept)"
                ) from exc
            if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise StateError(corrupt_message(self.path, exc)) from exc
            raise


def corrupt_message(path: Path, exc: BaseException) -> str:
    return (
        f"{path}: the state database is unreadable ({exc}). Nothing was sent. "
        "Move it aside to keep its history, or delete the output folder's .batchgen/ "
        "to start over (every image will be generated and paid for again)."
    )


@dataclass(frozen=True, slots=True)
class Known:
    status: Status
    fingerprint: str
    files: tuple[str, ...]


class Store:
    """One output folder's state. Use as a context manager; holds an exclusive lock."""

    def __init__(self, out: Path, *, readonly: bool = False) -> None:
        self.out = out
        self.dir = out / STATE_DIR
        self.path = self.dir / DB_NAME
        self.readonly = readonly
        self._lock_fd: int | None = None
        self.db: sqlite3.Connection
        self.run_id = 0
        self._next_seq = 0
        self._run_requests = 0

    # -- opening -------------------------------------------------------------
    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.readonly:
            if not self.path.exists():
                raise StateError(f"{self.out}: no batchgen state here (nothing has run yet)")
            self.db = self._connect(f"file:{self.path}?mode=ro", uri=True)
            self._check_identity(fresh=False)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self.db = self._connect(str(self.path))
        # Identity first: switching to WAL rewrites the header of a foreign or
        # newer file that is about to be refused, and adds journals next to it.
        self._check_identity(fresh=fresh)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            self._corrupt(exc)
        self._migrate()
        # Sequence numbers keep file order; counted here, not by max(seq) per insert.
        self._next_seq = int(
            self.db.execute("SELECT coalesce(max(seq), 0) FROM jobs").fetchone()[0]
        )

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(
                target,
                uri=uri,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
            )
            db.path = self.path
            db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            self._corrupt(exc)
        return db

    def _corrupt(self, exc: BaseException) -> None:
        raise StateError(corrupt_message(self.path, exc)) from exc

    def _take_lock(self) -> None:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                f"{self.out} is in use by another batchgen run; wait for it to finish "
                "or stop it first (two runs on one folder would pay twice)"
            ) from None
        self._lock_fd = fd

    def _check_identity(self, *, fresh: bool) -> None:
        try:
            app_id = self.db.execute("PRAGMA application_id").fetchone()[0]
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._corrupt(exc)
        if fresh or (app_id == 0 and tables == 0):
            return
        if app_id != APPLICATION_ID:
            raise StateError(
                f"{self.path} is not a batchgen state database (application id {app_id:#x}); "
                "choose another --out folder"
            )
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer batchgen (schema {version}, this one "
                f"knows {SCHEMA_VERSION}); upgrade batchgen to continue this run"
            )

    def _migrate(self) -> None:
        """Every pending migration in one transaction: a run stopped while opening
        leaves the old schema or the new one, never a mix that readers trip on."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        with self.transaction():
            for migration in MIGRATIONS[version:]:
                migration(self.db)
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            # An unit of work its owner did not end is not committed behind its back.
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.rollback()
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the unit of work ----------------------------------------------------
    # Write methods never commit: each writes inside a unit of work that its
    # caller opened and ends. One-shot writes use `with store.transaction():`;
    # the pool's ledger keeps one open across an event-loop turn (`begin`, then
    # `commit` when the turn ends) so that every job ending in a turn shares a
    # commit. A write outside any unit of work is a programming error.
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything written in the block commits together, or rolls back when the
        block raises. Inside an open unit of work, the block joins it (the owner
        of the outer one commits or rolls back)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.db.execute("COMMIT")

    def begin(self) -> None:
        """Open a unit of work unless one is open; `commit` ends it."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _writing(self) -> None:
        if not self.db.in_transaction:
            raise RuntimeError("store write outside a unit of work (use store.transaction())")

    # -- meta and runs -------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._writing()
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def start_run(self) -> int:
        self._writing()
        cur = self.db.execute("INSERT INTO runs (started_at) VALUES (?)", (time.time(),))
        self.run_id = int(cur.lastrowid or 0)
        return self.run_id

    def end_run(self, exit_code: int) -> None:
        self._writing()
        self.db.execute(
            "UPDATE runs SET finished_at=?, exit_code=?, requests=? WHERE run_id=?",
            (time.time(), exit_code, self._run_requests, self.run_id),
        )

    # -- planning ------------------------------------------------------------
    def lookup(self, job_id: str) -> Known | None:
        row = self.db.execute(
            "SELECT status, fingerprint, files FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        if row is None:
            return None
        return Known(Status(row[0]), row[1], tuple(json.loads(row[2])))

    def plan(self, job: Job, fingerprint: str, *, reset: bool) -> None:
        """Mark `job` as wanted by this run. `reset` starts it afresh (new or changed
        request, or a retry of a failed one); otherwise only its plan mark moves."""
        self._writing()
        if reset:
            self._next_seq += 1
            self.db.execute(
                """INSERT INTO jobs (id, seq, fingerprint, status, priority, plan_run, job)
                   VALUES (?, ?, ?, 'pending', ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET fingerprint=excluded.fingerprint,
                     status='pending', priority=excluded.priority, plan_run=excluded.plan_run,
                     job=excluded.job, attempts=0, files='[]', error_kind=NULL,
                     cache_hit=0, saved_usd=0, http_status=NULL, error_message=NULL, text='',
                     started_at=NULL, finished_at=NULL, upscaled='[]', preview=NULL""",
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
        self.db.execute("UPDATE jobs SET fingerprint=? WHERE id=?", (fingerprint, job_id))

    # -- results -------------------------------------------------------------
    def record_attempt(
        self,
        job_id: str,
        *,
        cost: float,
        prompt_tokens: int,
        output_tokens: int,
        cost_source: str,
    ) -> None:
        """One request made. Its caller commits within moments: a retry may wait
        long before any job ends, and a crash must lose only the counts (and cost)
        of requests still in flight, never those of answered ones."""
        self._run_requests += 1
        self._writing()
        self.db.execute(
            """UPDATE jobs SET attempts=attempts+1, requests=requests+1,
               cost_usd=cost_usd+?, prompt_tokens=prompt_tokens+?, output_tokens=output_tokens+?,
               cost_source=CASE WHEN ?='' THEN cost_source WHEN cost_source IN ('', ?)
                 THEN ? ELSE 'mixed' END,
               started_at=coalesce(started_at, ?) WHERE id=?""",
            (
                cost,
                prompt_tokens,
                output_tokens,
                cost_source,
                cost_source,
                cost_source,
                time.time(),
                job_id,
            ),
        )

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
    ) -> None:
        """A job's end, written after its image is on disk."""
        self._writing()
        self.db.execute(
            """UPDATE jobs SET status=?, files=?, error_kind=?, http_status=?, error_message=?,
               text=?, finished_at=?, upscaled=?, preview=? WHERE id=?""",
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
                job_id,
            ),
        )

    # -- request cache (this folder) ------------------------------------------
    def cached_request(self, key: str) -> tuple[list[str], str, float] | None:
        """Files (relative to OUT), text and original cost of a finished identical request."""
        row = self.db.execute(
            "SELECT files, text, cost_usd FROM request_cache WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else (json.loads(row[0]), row[1], float(row[2]))

    def remember_request(
        self, key: str, job_id: str, files: list[str], text: str, cost: float
    ) -> None:
        self._writing()
        self.db.execute(
            "INSERT OR REPLACE INTO request_cache VALUES (?, ?, ?, ?, ?)",
            (key, job_id, json.dumps(files), text, cost),
        )

    def mark_cache_hit(self, job_id: str, saved: float) -> None:
        self._writing()
        self.db.execute(
            "UPDATE jobs SET cache_hit=1, saved_usd=?, cost_source='cache' WHERE id=?",
            (saved, job_id),
        )

    # -- image hashes --------------------------------------------------------
    def cached_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute(
            "SELECT sha256 FROM image_hashes WHERE path=? AND size=? AND mtime_ns=?",
            (path, size, mtime_ns),
        ).fetchone()
        return None if row is None else str(row[0])

    def hashed_files(self) -> Iterator[tuple[str, int, int]]:
        """Every reference file hashed so far, with the size and mtime it had."""
        yield from self.db.execute("SELECT path, size, mtime_ns FROM image_hashes")

    def remember_hash(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        if self.readonly:
            return
        self._writing()
        self.db.execute(
            "INSERT OR REPLACE INTO image_hashes VALUES (?, ?, ?, ?)",
            (path, size, mtime_ns, digest),
        )

    # -- reading for reports -------------------------------------------------
    def spent(self) -> float:
        return float(self.db.execute("SELECT coalesce(sum(cost_usd), 0) FROM jobs").fetchone()[0])

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        counts = {s.value: 0 for s in Status}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    def records(self, statuses: Collection[Status] = ()) -> Iterator[JobRecord]:
        """Every job's record in file order, or only those in `statuses`."""
        where = ""
        if statuses:
            where = "WHERE status IN (" + ",".join("?" * len(statuses)) + ")"
        cur = self.db.execute(
            f"""SELECT id, fingerprint, status, attempts, files, error_kind, http_status,
               error_message, text, prompt_tokens, output_tokens, cost_usd, cost_source, job,
               started_at, finished_at, requests, upscaled, preview
               FROM jobs {where} ORDER BY seq""",
            [s.value for s in statuses],
        )
        for row in cur:
            job = json.loads(row[13])
            error = ErrorInfo(row[5], row[6], row[7] or "") if row[5] else None
            rec = JobRecord(
                id=row[0],
                fingerprint=row[1],
                status=Status(row[2]),
                attempts=row[3],
                files=json.loads(row[4]),
                error=error,
                text=row[8],
                prompt_tokens=row[9],
                output_tokens=row[10],
                cost_usd=row[11],
                cost_source=row[12],
                tags=list(job.get("tags", [])),
                prompt=job["prompt"],
                source=job.get("source", ""),
                line=int(job.get("line", 0)),
                started_at=row[14],
                finished_at=row[15],
                requests=row[16],
                upscaled=json.loads(row[17]),
                preview=row[18],
            )
            yield rec

    def job_json(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT job FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def aggregate(self) -> dict[str, Any]:
        row = self.db.execute(
            """SELECT count(*), coalesce(sum(requests),0),
               coalesce(sum(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END),0),
               coalesce(sum(prompt_tokens),0), coalesce(sum(output_tokens),0),
               coalesce(sum(cost_usd),0), min(started_at), max(finished_at),
               coalesce(sum(cache_hit),0), coalesce(sum(saved_usd),0)
               FROM jobs"""
        ).fetchone()
        kinds = dict(
            self.db.execute(
                "SELECT error_kind, count(*) FROM jobs WHERE error_kind IS NOT NULL "
                "AND status != 'pending' GROUP BY error_kind"
            ).fetchall()
        )
        sources = dict(
            self.db.execute(
                "SELECT cost_source, count(*) FROM jobs WHERE cost_source != '' "
                "GROUP BY cost_source"
            ).fetchall()
        )
        elapsed = self.db.execute(
            "SELECT coalesce(sum(coalesce(finished_at, started_at) - started_at), 0) FROM runs"
        ).fetchone()[0]
        return {
            "jobs": row[0],
            "requests": row[1],
            "retries": row[2],
            "prompt_tokens": row[3],
            "output_tokens": row[4],
            "cost_usd": row[5],
            "first_started": row[6],
            "last_finished": row[7],
            "errors": kinds,
            "cost_sources": sources,
            "elapsed_s": float(elapsed),
            "cache_hits": int(row[8]),
            "saved_usd": float(row[9]),
        }
