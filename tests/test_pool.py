"""The pool, end to end through the simulator where a stop's kind matters."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from batchgen.engine.runner import arun_files
from batchgen.store.db import DB_NAME, STATE_DIR
from tests.conftest import make_config, write_jobs


async def test_a_done_parent_without_an_image_stops_the_run_as_an_error_not_a_full_disk(
    tmp_path: Path,
) -> None:
    """A chained job whose parent is done but has no file cannot be sent: the run
    stops (the child stays pending), and the stop says what happened rather than
    blaming the disk."""
    out = tmp_path / "out"
    parent = {"id": "p", "prompt": "a red cube"}
    child = {"id": "c", "prompt": "make it blue", "images": ["@p"]}
    first = await arun_files(
        [write_jobs(tmp_path / "one.jsonl", [parent])], make_config(out, ""), sim=True
    )
    assert first.exit_code == 0
    with contextlib.closing(sqlite3.connect(out / STATE_DIR / DB_NAME)) as db, db:
        db.execute("UPDATE jobs SET files='[]' WHERE id='p'")
    both = write_jobs(tmp_path / "two.jsonl", [parent, child])
    result = await arun_files([both], make_config(out, ""), sim=True)
    assert result.exit_code == 3
    assert result.stop is not None
    assert result.stop.kind == "error"
    assert "chained input @p has no image" in result.stop.message
    assert result.report["pending"] == 1
