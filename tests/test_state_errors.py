"""A corrupt, foreign, newer or damaged state database is refused, never replaced.

Each case runs the CLI against a simulator and expects exit 2, a message that
names the state file and says what to do, the file byte for byte unchanged
(and no journal files added next to it), and zero requests: a silent fresh
start would pay for every image again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store.db import APPLICATION_ID, DB_NAME, SCHEMA_VERSION, STATE_DIR
from tests.conftest import KEY
from tests.test_chaos import cli, cli_env


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as server:
        yield server


def _jobs(path: Path, n: int = 50) -> Path:
    rows = [{"id": f"j{i:03d}", "prompt": f"state test {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _corrupt_random(db: Path, _: Path) -> None:
    db.write_bytes(os.urandom(8192))


def _corrupt_header(db: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    data[0:16] = b"not SQLite here!"
    db.write_bytes(bytes(data))


def _foreign_app(db: Path, _: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("PRAGMA application_id=1234")
    con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    con.execute("INSERT INTO photos (path) VALUES ('holiday.jpg')")
    con.commit()
    con.close()


def _foreign_no_app_id(db: Path, _: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, something TEXT)")
    con.commit()
    con.close()


def _newer(db: Path, good: Path) -> None:
    db.write_bytes(good.read_bytes())
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
    con.commit()
    con.close()


def _truncated(db: Path, good: Path) -> None:
    data = good.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def _empty_pages(db: Path, good: Path) -> None:
    data = bytearray(good.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset : offset + 4096] = b"\xff" * 4096
    db.write_bytes(bytes(data))


CASES: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "random-bytes": (_corrupt_random, "unreadable"),
    "bad-header": (_corrupt_header, "unreadable"),
    "foreign-app": (_foreign_app, "not a batchgen state"),
    "foreign-no-app-id": (_foreign_no_app_id, "not a batchgen state"),
    "newer-version": (_newer, "newer batchgen"),
    "truncated": (_truncated, ""),
    "garbled-pages": (_empty_pages, ""),
}

#: Copies of a real state (in WAL mode), damaged or newer: SQLite may add its
#: -wal/-shm files next to them, but the file itself must stay as it was.
OURS = {"truncated", "garbled-pages", "newer-version"}


@pytest.fixture(scope="module")
def good_state(tmp_path_factory: pytest.TempPathFactory, sim: SimulatorThread) -> Path:
    """A real state database of a finished 50-job run (WAL mode), checkpointed
    into its one main file."""
    tmp = tmp_path_factory.mktemp("good")
    out = tmp / "out"
    done = subprocess.run(
        cli(_jobs(tmp / "jobs.jsonl"), out, sim.base_url),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    db = out / STATE_DIR / DB_NAME
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != "lock"
    }


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("command", ["run", "status", "report"])
def test_a_bad_state_is_refused_and_left_alone(
    tmp_path: Path, sim: SimulatorThread, good_state: Path, case: str, command: str
) -> None:
    make, expected = CASES[case]
    out = tmp_path / "out"
    state_dir = out / STATE_DIR
    state_dir.mkdir(parents=True)
    db = state_dir / DB_NAME
    make(db, good_state)
    before = _digest(state_dir)
    requests_before = sim.stats.total
    jobs = _jobs(tmp_path / "jobs.jsonl")
    if command == "run":
        args = cli(jobs, out, sim.base_url)
    else:
        args = [sys.executable, "-m", "batchgen", command, str(out)]
    done = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert str(db) in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    # What to do is said: move it aside, upgrade, or choose another folder.
    assert any(w in done.stderr for w in ("Move it aside", "upgrade", "another --out"))
    after = _digest(state_dir)
    assert after[DB_NAME] == before[DB_NAME], "the state file was changed"
    if case not in OURS:
        assert after == before, "journal files were added next to a file that is not ours"
    assert sim.stats.total == requests_before
    assert not (out / "images").exists()
