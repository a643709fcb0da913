"""folder: an output folder in, the store a report reads out.

`batchgen report OUT` and `batchgen status OUT` must work while a run holds
the folder (a night run is watched from another shell, and the run refreshes
its own report this way). A free folder is opened as the run opens it (an
older schema is upgraded); a folder whose lock a run holds is opened
read-only: SQLite in WAL mode reads beside its one writer, and every report
file is written atomically, so a report written now and the run's own never
mix within a file.

With `--state` elsewhere the same holds for a SQLite file there (its lock is
beside it); a PostgreSQL state is always read read-only (runs migrate it, and
it reads beside its writers by nature), from any folder or machine that
reaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from batchgen.errors import StateError
from batchgen.store import STATE_DIR, Store
from batchgen.store.open import is_pg, open_state, state_file

#: The lock file a run holds (`store/db.py` takes it on a writable open).
LOCK_NAME = "lock"


def held(out: Path, state: str | None = None) -> bool:
    """Whether a run holds the lock of `out`'s SQLite state right now."""
    path = state_file(out, state)
    lock = out / STATE_DIR / LOCK_NAME if state is None or path is None else Path(f"{path}.lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


@contextlib.contextmanager
def report_store(out: Path, state: str | None = None) -> Iterator[Store]:
    """The folder's store for a report: writable when free, read-only while a run holds it."""
    if is_pg(state):
        store = open_state(out, state, readonly=True)
        store.open()
    else:
        try:
            store = open_state(out, state)
            store.open()
        except StateError:
            if not held(out, state):
                raise
            store = open_state(out, state, readonly=True)
            store.open()
    try:
        yield store
    finally:
        store.close()
