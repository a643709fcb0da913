"""db: the connection to one output folder's state, `OUT/.batchgen/state.sqlite`.

In: an output folder. Out: an open SQLite connection that is safe to write,
and the unit of work every write happens in. This module knows no table but
the schema's history: it takes the folder's lock (two runs on one folder would
pay twice), refuses a foreign, corrupt or newer file with a clear message
(silently replacing it would pay for every image again), applies the
append-only migrations in one transaction, and maps a full disk or a damaged
page met mid-run to the errors that stop a run cleanly. The tables' queries
are in `runs.py`, `jobs.py`, `requests.py` and `queries.py`, and `state.py`
puts them together as the `Store` callers hold.

SQLite in WAL mode, one connection owned by the event loop thread, committed
as each loop turn ends (a `kill -9` loses only what was in flight).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from batchgen.errors import AbortError, StateError
from batchgen.models import StopKind
from batchgen.store.dialect import SQLITE, Connection, Cursor, Dialect

if TYPE_CHECKING:
    from batchgen.store.recorder import Recorder

STATE_DIR = ".batchgen"
DB_NAME = "state.sqlite"
APPLICATION_ID = 0x62676E31  # "bgn1"


class NoState(StateError):
    """There is no state there yet (nothing has run): a reader has nothing to read."""


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


def _m006_retried(db: sqlite3.Connection) -> None:
    # Answers that were retried, by outcome kind ({"rate_limited": 3, ...}): the
    # final error alone hides the 429s and 503s a job got through.
    db.execute("ALTER TABLE jobs ADD COLUMN retried TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE runs ADD COLUMN retried TEXT NOT NULL DEFAULT '{}'")


def _m007_models_pixels(db: sqlite3.Connection) -> None:
    # The model and output size of a job's last request (spend per model and
    # size), its thinking tokens, and the pixel size of its image against the
    # one the catalogue says the request should give ("WIDTHxHEIGHT").
    _script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN model TEXT;
        ALTER TABLE jobs ADD COLUMN image_size TEXT;
        ALTER TABLE jobs ADD COLUMN thoughts_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN pixels TEXT;
        ALTER TABLE jobs ADD COLUMN expected_pixels TEXT
        """,
    )


def _m008_modes(db: sqlite3.Connection) -> None:
    # The run mode of a job's last request (live, flex) and what its requests
    # would have cost live: spend per mode, and what flex saved. Folders from
    # before were all live.
    _script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN mode TEXT;
        ALTER TABLE jobs ADD COLUMN live_cost_usd REAL NOT NULL DEFAULT 0;
        UPDATE jobs SET live_cost_usd = cost_usd,
          mode = CASE WHEN requests > 0 THEN 'live' END
        """,
    )


def _m009_batches(db: sqlite3.Connection) -> None:
    # Batch Mode: each batch the folder meant to create (its row is written
    # before the create call: the display name is how a resumed run finds a
    # batch whose create answer it never saw), its jobs, and the reference
    # images uploaded once for many jobs.
    _script(
        db,
        """
        CREATE TABLE batches (
            name TEXT PRIMARY KEY, wave INTEGER NOT NULL, number INTEGER NOT NULL,
            model TEXT NOT NULL, batch_id TEXT, state TEXT NOT NULL DEFAULT 'INTENT',
            input_file TEXT, results_file TEXT, stats TEXT NOT NULL DEFAULT '{}',
            jobs INTEGER NOT NULL, reserved_usd REAL NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL, closed INTEGER NOT NULL DEFAULT 0,
            note TEXT NOT NULL DEFAULT '');
        CREATE TABLE batch_jobs (
            batch TEXT NOT NULL, job_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
            cache_key TEXT NOT NULL DEFAULT '', settled INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (batch, job_id));
        CREATE INDEX batch_jobs_job ON batch_jobs (job_id, settled);
        CREATE TABLE batch_uploads (
            sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, uri TEXT NOT NULL,
            mime TEXT NOT NULL, created_at REAL NOT NULL)
        """,
    )


def _m010_reviews(db: sqlite3.Connection) -> None:
    # A person's decision on a job's image (`batchgen review`), one row per job,
    # with the fingerprint and end time of the image it judged: an image made
    # since (a changed job, a redo) is unreviewed again. And the files of jobs
    # planned for a redo that are still to be moved to their history names
    # (`<name>.vN.<ext>`) before anything is sent: a run killed half-way moves
    # the rest next time, and never one twice.
    _script(
        db,
        """
        CREATE TABLE reviews (
            job_id TEXT PRIMARY KEY, decision TEXT NOT NULL, note TEXT NOT NULL DEFAULT '',
            at REAL NOT NULL, fingerprint TEXT NOT NULL, finished_at REAL);
        CREATE TABLE redo_moves (job_id TEXT PRIMARY KEY, files TEXT NOT NULL)
        """,
    )


Migration = Callable[[sqlite3.Connection], None]

#: Append-only: a folder written by this list is upgraded by running its tail.
MIGRATIONS: tuple[Migration, ...] = (
    _m001_initial,
    _m002_request_cache,
    _m003_seq_index,
    _m004_upscaled,
    _m005_preview,
    _m006_retried,
    _m007_models_pixels,
    _m008_modes,
    _m009_batches,
    _m010_reviews,
)
SCHEMA_VERSION = len(MIGRATIONS)


class _Connection(sqlite3.Connection):
    """A connection whose "database or disk is full" stops the run with a clear
    message (like a full disk while writing an image), and whose damaged pages
    found mid-run are refused like a corrupt file at open, instead of a traceback.

    It also holds the pool's per-job row writes (`hold`) until the next
    statement of any kind, a COMMIT included, and then writes them with one
    `executemany` per statement. Measured in a zero-latency run of 20,000 jobs
    (`scripts/profile_overhead.py`): the three row writes of a job cost
    11-18 us each in place, between the loop's other work, against 5-10 timed
    alone, and the state's writes made 2.9 s of the pool's 8.8; written
    together at the commit, SQLite's code and pages stay in the CPU's caches.
    Nothing else changes: every statement, a read included, first writes what
    is held, so no read on this connection ever misses a held row (the
    request-cache lookup, the one read that may pass them, looks through the
    held rows itself: `read_past_held`), and the commit writes them first."""

    path: Path = Path()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Held row writes by statement, in order (see `hold`).
        self.held: dict[str, list[Sequence[Any]]] = {}
        #: With a recorder (`recorder.py`), called before any statement instead
        #: of writing what is held: it sends the open unit of work to the other
        #: process and waits until everything sent is committed, so that no
        #: statement here misses a row or precedes an image not yet written.
        self.before_statement: Callable[[], None] | None = None

    def hold(self, sql: str, parameters: Sequence[Any]) -> None:
        """Write a row with the next statement on this connection. Only for writes
        that commute with every other held one, whatever their order (a job's
        attempt and its end set disjoint columns; the request cache is another
        table): the held rows go out grouped by statement, each group in order."""
        rows = self.held.get(sql)
        if rows is None:
            self.held[sql] = [parameters]
        else:
            rows.append(parameters)

    def write_held(self) -> None:
        held, self.held = self.held, {}
        for sql, rows in held.items():
            self._guarded(super().executemany, sql, rows)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if self.before_statement is not None:
            self.before_statement()
        if self.held:
            self.write_held()
        return self._guarded(super().execute, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        if self.before_statement is not None:
            self.before_statement()
        if self.held:
            self.write_held()
        return self._guarded(super().executemany, sql, parameters)

    def take_held(self) -> dict[str, list[Sequence[Any]]]:
        """The held rows, no longer held here (a recorder writes them)."""
        held, self.held = self.held, {}
        return held

    def read_past_held(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        """A read that cannot see what is held: the caller has looked through
        the held rows of every table it reads (`held`)."""
        return self._guarded(super().execute, sql, parameters)

    def _guarded(
        self, run: Callable[[str, Any], sqlite3.Cursor], sql: str, parameters: Any
    ) -> sqlite3.Cursor:
        try:
            return run(sql, parameters)
        except sqlite3.DatabaseError as exc:
            code = exc.sqlite_errorcode & 0xFF
            if code == sqlite3.SQLITE_FULL:
                raise AbortError(
                    f"disk full while writing the state {self.path}; free some space and run "
                    "the same command again (finished images are kept)",
                    kind=StopKind.DISK,
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


class Database:
    """One output folder's connection: opening, the lock, the unit of work.

    The tables' classes derive from this one and `Store` combines them, so a
    table's methods see the connection and the unit of work, and nothing of
    the other tables (mypy holds each part to this class's members).
    """

    #: The schema this class knows; a test may open with a longer list.
    migrations: Sequence[Migration] = MIGRATIONS
    #: What this backend says differently (`dialect.py`).
    sql: Dialect = SQLITE

    def __init__(
        self, out: Path, *, readonly: bool = False, lock: bool = True, path: Path | None = None
    ) -> None:
        self.out = out
        #: `path`: a state file elsewhere (`--state FILE`), its lock beside it.
        self.path = path if path is not None else out / STATE_DIR / DB_NAME
        self.dir = self.path.parent
        self.lock_path = self.dir / "lock" if path is None else path.with_name(path.name + ".lock")
        self.readonly = readonly
        #: False: writable without the folder's lock, for a reviewer beside a run
        #: (it writes only its own short transactions; see `reviews.py`).
        self.locked = lock
        self._lock_fd: int | None = None
        self.db: Connection
        #: The process that commits the pool's held rows (`recorder.py`), if any.
        self.recorder: Recorder | None = None

    @property
    def where(self) -> str:
        """The state's name in messages (a URL's password never shows)."""
        return str(self.path)

    # -- opening -------------------------------------------------------------
    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect, check and migrate. A refused or failed open leaves nothing held:
        a caller that reports the error and opens again must not find its own
        lock in the way ("in use by another run")."""
        try:
            if self.readonly:
                self._open_readonly()
            else:
                self._open_writable()
        except BaseException:
            self.close()
            raise

    def _open_readonly(self) -> None:
        if not self.path.exists():
            raise NoState(f"{self.out}: no batchgen state here (nothing has run yet)")
        self.db = self._connect(f"file:{self.path}?mode=ro", uri=True)
        self._check_identity(fresh=False)

    def _open_writable(self) -> None:
        if not self.locked and not self.path.exists():
            raise NoState(f"{self.out}: no batchgen state here (nothing has run yet)")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.locked:
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
        self._opened()

    def _opened(self) -> None:
        """Called once the schema is current on a writable open: a table that
        keeps a counter in memory reads it here (extend with `super()`)."""

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
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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
        known = len(self.migrations)
        if version > known:
            raise StateError(
                f"{self.path} was written by a newer batchgen (schema {version}, this one "
                f"knows {known}); upgrade batchgen to continue this run"
            )

    def _migrate(self) -> None:
        """Every pending migration in one transaction: a run stopped while opening
        leaves the old schema or the new one, never a mix that readers trip on.
        The version is read again inside it: a reviewer opens without the lock,
        so a run may have migrated while this one waited to write."""
        target = len(self.migrations)
        if self.db.execute("PRAGMA user_version").fetchone()[0] >= target:
            return
        with self.transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version >= target:
                return
            assert isinstance(self.db, sqlite3.Connection)  # this class's own connection
            for migration in self.migrations[version:]:
                migration(self.db)
            self.db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            self.db.execute(f"PRAGMA user_version={target}")

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
            self._before_commit()
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
            self._before_commit()
            self.db.execute("COMMIT")

    def _before_commit(self) -> None:
        """Writes a backend holds back (PostgreSQL's planning buffer) go out here."""

    def rollback(self) -> None:
        if isinstance(self.db, _Connection):
            self.db.held.clear()  # written by nothing yet: nothing to undo
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _write_row(self, sql: str, parameters: tuple[Any, ...]) -> Cursor | None:
        """A job's row write from the pool's hot path (an attempt, an end, a
        request-cache row): held until the next statement on SQLite
        (`_Connection.hold`), written now elsewhere, whose cursor is returned
        (a backend with leases checks its row count)."""
        db = self.db
        if isinstance(db, _Connection):
            db.hold(sql, parameters)
            return None
        cur: Cursor = db.execute(sql, parameters)
        return cur

    @property
    def holds_rows(self) -> bool:
        """Whether the pool's row writes are held for the commit (SQLite), so
        that a recorder can take them (`recorder.py`)."""
        return isinstance(self.db, _Connection)

    def attach(self, recorder: Recorder, settle: Callable[[], None]) -> None:
        """From now on `recorder` commits the held rows (`take_held`); `settle`
        runs before any other statement on this connection (see
        `_Connection.before_statement`)."""
        assert isinstance(self.db, _Connection)
        self.recorder = recorder
        self.db.before_statement = settle

    def detach(self) -> None:
        """The recorder is done: statements here go on as without one."""
        if isinstance(self.db, _Connection):
            self.db.before_statement = None
        self.recorder = None

    def take_held(self) -> dict[str, list[Sequence[Any]]]:
        """The held rows by statement, no longer held here (the recorder writes them)."""
        return self.db.take_held() if isinstance(self.db, _Connection) else {}

    def _held_rows(self, sql: str) -> Sequence[Sequence[Any]]:
        """The rows of `sql` held and not yet written, oldest first (with a
        recorder, those it has not yet committed come first)."""
        db = self.db
        here = db.held.get(sql, ()) if isinstance(db, _Connection) else ()
        if self.recorder is None:
            return here
        return [*self.recorder.held(sql), *here]

    def _read_past_held(self, sql: str, parameters: tuple[Any, ...]) -> Cursor:
        """A read of a table whose held rows the caller looks through itself
        (`_held_rows`), without first writing what is held for any table."""
        db = self.db
        if isinstance(db, _Connection):
            return db.read_past_held(sql, parameters)
        cur: Cursor = db.execute(sql, parameters)
        return cur

    def _writing(self) -> None:
        # With a recorder the pool's writes need no unit here: its rows are held
        # for the other process, and any other statement commits by itself
        # after `before_statement` has sent and committed what came before.
        if not self.db.in_transaction and self.recorder is None:
            raise RuntimeError("store write outside a unit of work (use store.transaction())")
