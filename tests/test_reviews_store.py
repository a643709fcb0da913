"""The reviews table against real SQLite files: decisions, their images, and a
reviewer writing beside a real `batchgen run` subprocess that holds the folder."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from batchgen.errors import StateError
from batchgen.models import Job, Status
from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store import Store
from batchgen.store.db import MIGRATIONS, SCHEMA_VERSION
from batchgen.store.reviews import Decision, StaleImage, image_version
from tests.conftest import KEY, write_jobs
from tests.test_chaos import cli, cli_env, wait_for


def done_folder(out: Path, ids: list[str], store_class: type[Store] = Store) -> None:
    """A folder whose jobs are done, written through the store as a run writes it."""
    with store_class(out) as store, store.transaction():
        store.start_run()
        for job_id in ids:
            store.plan(Job(id=job_id, prompt=f"a {job_id}"), f"fp-{job_id}", reset=True)
            store.finish(job_id, Status.DONE, files=[f"images/{job_id}.png"])


def test_decisions_round_trip_and_survive_a_reopen(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done_folder(out, ["a", "b", "c"])
    with Store(out) as store, store.transaction():
        store.set_review("c", Decision.REJECTED, "six fingers")
        store.set_review("a", "approved")
        store.set_review("b", Decision.APPROVED, "first")
        store.set_review("b", Decision.REJECTED, "label text garbled")  # changed mind
    with Store(out) as store:
        got = [(r.job_id, r.decision, r.note) for r in store.reviews()]
        assert got == [
            ("a", Decision.APPROVED, ""),
            ("b", Decision.REJECTED, "label text garbled"),
            ("c", Decision.REJECTED, "six fingers"),
        ]
        assert [r.job_id for r in store.reviews("rejected")] == ["b", "c"]
        assert [r.job_id for r in store.reviews(Decision.APPROVED)] == ["a"]
        review = store.review("b")
        assert review is not None
        assert review.at <= time.time()
        with store.transaction():
            assert store.clear_review(["b", "zzz"]) == 1
        assert store.review("b") is None
        assert [r.job_id for r in store.reviews()] == ["a", "c"]


def test_writes_need_a_unit_of_work_and_a_known_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done_folder(out, ["a"])
    with Store(out) as store:
        with pytest.raises(RuntimeError, match="unit of work"):
            store.set_review("a", Decision.APPROVED)
        with store.transaction(), pytest.raises(KeyError):
            store.set_review("nope", Decision.APPROVED)
        with store.transaction(), pytest.raises(ValueError, match="maybe"):
            store.set_review("a", "maybe")
        assert list(store.reviews()) == []


def test_a_new_image_is_unreviewed(tmp_path: Path) -> None:
    """Made again (a redo ends the job anew; a changed prompt re-plans it): the
    decision on the old image no longer stands, and one sent for it is refused."""
    out = tmp_path / "out"
    done_folder(out, ["redo", "changed", "kept"])
    with Store(out) as store:
        with store.transaction():
            for job_id in ("redo", "changed", "kept"):
                store.set_review(job_id, Decision.REJECTED)
        seen = store.review("redo")
        assert seen is not None
        with store.transaction():
            store.start_run()
            store.plan(Job(id="redo", prompt="a redo"), "fp-redo", reset=True)
            store.finish("redo", Status.DONE, files=["images/redo.png"])
            store.plan(Job(id="changed", prompt="new prompt"), "fp-new", reset=True)
        assert [r.job_id for r in store.reviews()] == ["kept"]
        with store.transaction(), pytest.raises(StaleImage):
            store.set_review("redo", Decision.APPROVED, version=seen.version)
        assert store.review("redo") is None
        row = store.db.execute(
            "SELECT fingerprint, finished_at FROM jobs WHERE id='redo'"
        ).fetchone()
        with store.transaction():
            store.set_review("redo", Decision.APPROVED, version=image_version(*row))
        assert [(r.job_id, r.decision) for r in store.reviews()] == [
            ("redo", Decision.APPROVED),
            ("kept", Decision.REJECTED),
        ]


def test_a_reviewer_writes_while_a_store_holds_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done_folder(out, ["a", "b"])
    with Store(out) as run:
        with pytest.raises(StateError, match="in use"):
            Store(out).open()
        with Store(out, lock=False) as reviewer, reviewer.transaction():
            reviewer.set_review("a", Decision.REJECTED, "wrong colour")
        # The lock holder sees it at once, and its own writes go on.
        assert [r.job_id for r in run.reviews(Decision.REJECTED)] == ["a"]
        with run.transaction():
            run.clear_review(["a"])
    with pytest.raises(StateError, match="no batchgen state"):
        Store(tmp_path / "empty", lock=False).open()
    assert not (tmp_path / "empty").exists()


def test_an_older_folder_is_upgraded_by_a_reviewer_or_a_run(tmp_path: Path) -> None:
    class OldStore(Store):
        migrations = MIGRATIONS[:-1]

    for opener in ({"lock": False}, {}):
        out = tmp_path / f"out-{len(opener)}"
        done_folder(out, ["old"], OldStore)
        with Store(out, **opener) as store:
            assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            with store.transaction():
                store.set_review("old", Decision.APPROVED)
            assert [r.job_id for r in store.reviews()] == ["old"]


def test_the_version_is_read_again_inside_the_migration(tmp_path: Path) -> None:
    """A reviewer (no lock) migrates an old folder between a run's first look
    at the version and its migration's transaction: the run applies nothing twice."""

    class OldStore(Store):
        migrations = MIGRATIONS[:-1]

    out = tmp_path / "out"
    done_folder(out, ["old"], OldStore)
    reviewer = Store(out, lock=False)
    raced: list[bool] = []

    class RacedStore(Store):
        def transaction(self) -> contextlib.AbstractContextManager[None]:
            if not raced:
                raced.append(True)
                reviewer.open()  # migrates and commits, the run having seen the old version
            return super().transaction()

    try:
        with RacedStore(out) as run:
            assert run.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            with run.transaction():
                run.set_review("old", Decision.APPROVED)
        assert raced == [True]
    finally:
        reviewer.close()


def test_a_review_beside_a_real_run_never_locks_it_out(tmp_path: Path) -> None:
    """A `batchgen run` subprocess writes to the folder while decisions on the
    images of an earlier run land one transaction at a time: the run ends
    cleanly, never seeing "database is locked", and every decision is kept."""
    first = [f"old{i:03d}" for i in range(60)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": i, "prompt": f"p {i}"} for i in first])
    out = tmp_path / "out"
    config = SimConfig(small_images=True, api_key=KEY, latency="uniform:0.005:0.02")
    with SimulatorThread(config) as sim:
        env = cli_env()
        done = subprocess.run(cli(jobs, out, sim.base_url), env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        more = [{"id": f"new{i:03d}", "prompt": f"more {i}"} for i in range(300)]
        write_jobs(jobs, [{"id": i, "prompt": f"p {i}"} for i in first] + more)
        before = sim.stats.total
        proc = subprocess.Popen(
            cli(jobs, out, sim.base_url, concurrency=16),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        decided: dict[str, Decision] = {}
        waits = 0
        try:
            assert wait_for(lambda: sim.stats.total > before, proc, time.monotonic() + 60)
            with Store(out, lock=False) as reviewer:
                i = 0
                while proc.poll() is None or i < len(first):
                    job_id = first[i % len(first)]
                    decision = Decision.REJECTED if i % 3 == 0 else Decision.APPROVED
                    try:
                        with reviewer.transaction():
                            reviewer.set_review(job_id, decision, f"note {i}")
                    except sqlite3.OperationalError:
                        waits += 1  # the run's planning pass: try again, nothing lost
                        continue
                    decided[job_id] = decision
                    i += 1
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr
        assert "database is locked" not in stderr + stdout
        assert "Traceback" not in stderr
        assert sim.stats.total - before == len(more)
    assert waits == 0
    with Store(out, readonly=True) as store:
        assert {r.job_id: r.decision for r in store.reviews()} == decided
        assert store.counts()["done"] == len(first) + len(more)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["done"] == len(first) + len(more)
