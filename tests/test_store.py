"""The store on real SQLite files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from batchgen.errors import StateError
from batchgen.store import DB_NAME, STATE_DIR, Store


def test_a_refused_open_leaves_the_folder_unlocked(tmp_path: Path) -> None:
    """A caller that reports the refusal and tries again hears the same reason,
    not "in use by another run" from its own leftover lock."""
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    con = sqlite3.connect(out / STATE_DIR / DB_NAME)
    con.execute("PRAGMA application_id=7")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    for _ in range(2):
        with pytest.raises(StateError, match="not a batchgen state database"), Store(out):
            pass
