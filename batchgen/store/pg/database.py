"""database: opening a PostgreSQL state (`--state postgresql://…`).

In: an output folder and a libpq URL (any: ``postgresql://user@host/db``, a
unix socket as ``postgresql://user@/db?host=/run/postgresql``; passwords from
``PGPASSWORD`` or ``.pgpass`` rather than the URL). Out: the `Database` the
tables run on, as `store/db.py` gives for SQLite: the driver lock, the
identity check, the migrations, the unit of work.

- **Driver lock**: a session-level ``pg_try_advisory_lock`` on the writable
  connection. A second `batchgen run` on the same state is refused, as on a
  locked SQLite folder; the lock goes when its connection does, so a driver
  killed with SIGKILL frees it at once (a ``flock`` on a network disk may not).
  It is keyed by the application, not by the folder: a state belongs to one
  folder (below), and a run pointed at it from another folder must meet the
  same lock before it is told so.
- **Identity**: the state's `meta` names the application, its schema version
  and the output folder it belongs to. A database holding other tables, a
  newer schema, or another folder's state is refused with a clear message
  (silently sharing one would pay for every image twice). Read-only opens
  (`status`, `report` from another machine) accept any folder.
- **Migrations**: append-only (`schema.py`), in one transaction under a
  transaction-level advisory lock, so two openers never both migrate.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg

from batchgen.config import redact_url
from batchgen.errors import StateError
from batchgen.store.db import Database, NoState
from batchgen.store.dialect import POSTGRES
from batchgen.store.pg.connection import PgConnection, connect
from batchgen.store.pg.schema import (
    APP_KEY,
    APP_NAME,
    FOLDER_KEY,
    PG_SCHEMA_VERSION,
    VERSION_KEY,
    apply,
)

#: The advisory lock keys ("bgn1" as in the SQLite application id): the
#: driver's session lock, and the migrators' transaction lock.
LOCK_CLASS = 0x62676E31
DRIVER_LOCK = 1
MIGRATION_LOCK = 2


def folder_identity(out: Path) -> str:
    """The name a state records for its output folder."""
    return str(out.resolve())


class PgDatabase(Database):
    sql = POSTGRES

    def __init__(self, out: Path, url: str, *, readonly: bool = False, lock: bool = True) -> None:
        super().__init__(out, readonly=readonly, lock=lock)
        self.url = url
        self.db: PgConnection
        self._holds_lock = False

    @property
    def where(self) -> str:
        return redact_url(self.url)

    def open(self) -> None:
        try:
            self.db = connect(self.url, readonly=self.readonly)
            if self.locked and not self.readonly:
                self._take_lock()
            self._check_state()
            if not self.readonly:
                self._migrate()
            self._opened()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        row = self.db.execute(
            "SELECT pg_try_advisory_lock(?, ?)", (LOCK_CLASS, DRIVER_LOCK)
        ).fetchone()
        if not row[0]:
            raise StateError(
                f"the state {self.where} is in use by another batchgen run; wait for it to "
                "finish or stop it first (two runs on one state would pay twice)"
            )
        self._holds_lock = True

    def _identity(self) -> dict[str, str] | None:
        """The state's identity rows; None when the database has no batchgen tables."""
        if self.db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
            tables = self.db.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()[0]
            if tables:
                raise StateError(
                    f"{self.where} holds other tables and no batchgen state; give a database "
                    "(or a schema, through the URL's options) of its own to --state"
                )
            return None
        rows = self.db.execute(
            "SELECT key, value FROM meta WHERE key IN (?, ?, ?)", (APP_KEY, VERSION_KEY, FOLDER_KEY)
        ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def _check_state(self) -> None:
        ident = self._identity()
        if ident is None:
            if self.readonly or not self.locked:
                raise NoState(f"{self.where}: no batchgen state here (nothing has run yet)")
            return
        if ident.get(APP_KEY) != APP_NAME:
            raise StateError(f"{self.where} is not a batchgen state database; choose another")
        version = int(ident.get(VERSION_KEY, "0"))
        if version > PG_SCHEMA_VERSION:
            raise StateError(
                f"{self.where} was written by a newer batchgen (schema {version}, this one "
                f"knows {PG_SCHEMA_VERSION}); upgrade batchgen to continue this run"
            )
        folder = ident.get(FOLDER_KEY)
        if not self.readonly and folder is not None and folder != folder_identity(self.out):
            raise StateError(
                f"the state {self.where} belongs to the output folder {folder}, not "
                f"{folder_identity(self.out)}; give each folder a state of its own (or run "
                "with --out set to that folder)"
            )

    def _migrate(self) -> None:
        with self.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_CLASS, MIGRATION_LOCK))
            ident = self._identity() or {}
            version = int(ident.get(VERSION_KEY, "0"))
            if version < PG_SCHEMA_VERSION:
                apply(self.db.execute, version)
                self._set_identity(VERSION_KEY, str(PG_SCHEMA_VERSION))
                self._set_identity(APP_KEY, APP_NAME)
            if FOLDER_KEY not in ident:
                self._set_identity(FOLDER_KEY, folder_identity(self.out))

    def _set_identity(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        db = getattr(self, "db", None)
        if db is not None:
            with contextlib.suppress(psycopg.Error):
                db.rollback()
                if self._holds_lock:
                    # Said, not left to the session's end: the server drops a closed
                    # session's locks a moment after the client has moved on, and the
                    # same command run at once would be told the state is in use.
                    db.execute("SELECT pg_advisory_unlock(?, ?)", (LOCK_CLASS, DRIVER_LOCK))
            self._holds_lock = False
            db.close()  # a killed driver's lock goes with its session
