"""open: which state an output folder's commands use (`--state PATH|URL`).

In: the output folder and the `--state` value (None: the default). Out: a
`Store`, not yet opened (use it as a context manager), for:

- None: ``OUT/.batchgen/state.sqlite``, as always (nothing else is imported:
  the default stays as fast as it was);
- a path: a SQLite state at that file, its lock beside it (``FILE.lock``);
- a ``postgresql://`` (or ``postgres://``) URL: the PostgreSQL state
  (`store/pg/`, psycopg imported only now).

Every command that opens a folder's state calls `open_state`, so they agree
on where it is; `state_exists` and `state_name` answer the runner's and the
messages' questions without opening anything for SQLite.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from batchgen.config import redact_url
from batchgen.errors import UsageError
from batchgen.store.db import DB_NAME, STATE_DIR, NoState
from batchgen.store.state import Store

PG_SCHEMES = ("postgresql", "postgres")


def is_url(state: str | None) -> bool:
    return state is not None and "://" in state


def is_pg(state: str | None) -> bool:
    return is_url(state) and urlsplit(str(state)).scheme.lower() in PG_SCHEMES


def state_file(out: Path, state: str | None) -> Path | None:
    """The SQLite file of (out, state); None for a database URL."""
    if state is None:
        return out / STATE_DIR / DB_NAME
    if is_pg(state):
        return None
    if is_url(state):
        scheme = urlsplit(state).scheme
        raise UsageError(
            f"--state {redact_url(state)}: a {scheme}:// state is not supported; give a "
            "file path (SQLite) or a postgresql:// URL"
        )
    return Path(state).expanduser()


def open_state(
    out: Path, state: str | None = None, *, readonly: bool = False, lock: bool = True
) -> Store:
    """The `Store` of (out, state), to be opened (`with open_state(...) as store`)."""
    path = state_file(out, state)
    if path is not None:
        return Store(out, readonly=readonly, lock=lock, path=None if state is None else path)
    try:
        from batchgen.store.pg import PgStore
    except ImportError as exc:
        raise UsageError(
            "--state postgresql://… needs psycopg: pip install 'batchgen[pg]'"
        ) from exc
    return PgStore(out, str(state), readonly=readonly, lock=lock)


def state_exists(out: Path, state: str | None) -> bool:
    """Whether (out, state) holds a state already (a database is asked)."""
    path = state_file(out, state)
    if path is not None:
        return path.exists()
    try:
        with open_state(out, state, readonly=True):
            return True
    except NoState:
        return False


def state_name(out: Path, state: str | None) -> str:
    """The state's name in messages (a URL's password never shows)."""
    path = state_file(out, state)
    return str(path) if path is not None else redact_url(str(state))
