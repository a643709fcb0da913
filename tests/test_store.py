"""The store on real SQLite files: its unit of work, its migrations, its codec,
and the typed queries the report reads.

What is visible is checked from a second, read-only connection to the same
file (WAL readers see only what was committed), or from a fresh open after a
close: never from the connection that wrote, which sees its own work.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import StateError
from batchgen.jobs.codec import input_form, job_from_json, job_to_dict, job_to_json
from batchgen.models import ASPECT_RATIOS, ErrorInfo, Job, Status
from batchgen.store import DB_NAME, STATE_DIR, Store
from batchgen.store.db import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from batchgen.store.queries import Tally

# --- helpers -----------------------------------------------------------------------


def job_ids(out: Path) -> list[str]:
    """The ids a reader sees now (committed rows only), in file order."""
    with Store(out, readonly=True) as reader:
        return [rec.id for rec in reader.records()]


def meta_seen(out: Path, key: str) -> str | None:
    with Store(out, readonly=True) as reader:
        return reader.meta(key)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A folder whose state exists (and is empty), so readers can open it."""
    path = tmp_path / "out"
    with Store(path):
        pass
    return path


def plan(store: Store, *ids: str) -> None:
    for job_id in ids:
        store.plan(Job(id=job_id, prompt=f"prompt {job_id}"), f"fp-{job_id}", reset=True)


# --- the unit of work --------------------------------------------------------------


def test_a_unit_of_work_commits_together(out: Path) -> None:
    with Store(out) as store:
        with store.transaction():
            store.start_run()
            plan(store, "a", "b")
            store.set_meta("note", "kept")
            assert job_ids(out) == []  # nothing is seen before the unit ends
            assert meta_seen(out, "note") is None
        assert job_ids(out) == ["a", "b"]
        assert meta_seen(out, "note") == "kept"


def test_an_exception_inside_rolls_back_everything_in_it(out: Path) -> None:
    with Store(out) as store:
        with store.transaction():
            plan(store, "before")

        def fails() -> None:
            with store.transaction():
                plan(store, "a", "b")
                store.finish("before", Status.DONE, files=["images/before.png"])
                store.set_meta("note", "lost")
                raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            fails()
        # The store goes on: the next unit of work commits.
        with store.transaction():
            plan(store, "after")
    with Store(out, readonly=True) as reader:
        assert [(r.id, r.status) for r in reader.records()] == [
            ("before", Status.PENDING),
            ("after", Status.PENDING),
        ]
        assert reader.meta("note") is None


WRITES: dict[str, Callable[[Store], object]] = {
    "plan": lambda s: plan(s, "x"),
    "set_meta": lambda s: s.set_meta("k", "v"),
    "start_run": lambda s: s.start_run(),
    "end_run": lambda s: s.end_run(0),
    "set_fingerprint": lambda s: s.set_fingerprint("j", "fp2"),
    "record_attempt": lambda s: s.record_attempt(
        "j", cost=0.04, prompt_tokens=1, output_tokens=2, cost_source="usage"
    ),
    "finish": lambda s: s.finish("j", Status.DONE, files=["images/j.png"]),
    "mark_cache_hit": lambda s: s.mark_cache_hit("j", 0.04),
    "remember_request": lambda s: s.remember_request("key", "j", ["images/j.png"], "", 0.04),
    "remember_hash": lambda s: s.remember_hash("/ref.png", 1, 2, "ab" * 32),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_outside_a_unit_of_work_raises(out: Path, write: Callable[[Store], object]) -> None:
    with Store(out) as store:
        with store.transaction():
            plan(store, "j")
        with pytest.raises(RuntimeError, match="outside a unit of work"):
            write(store)
        assert not store.db.in_transaction  # and it opened none behind the caller's back
        assert store.lookup("x") is None
        known = store.lookup("j")
        assert known is not None
        assert (known.status, known.fingerprint) == (Status.PENDING, "fp-j")


def test_a_nested_transaction_joins_the_outer_one(out: Path) -> None:
    with Store(out) as store:
        with store.transaction():
            with store.transaction():
                plan(store, "inner")
            assert job_ids(out) == []  # the inner block's end committed nothing
            plan(store, "outer")
        assert job_ids(out) == ["inner", "outer"]

        def outer_fails_after_inner() -> None:
            with store.transaction():
                with store.transaction():
                    plan(store, "inner2")
                raise ValueError("late")

        # The outer unit's failure takes the inner block's writes with it.
        with pytest.raises(ValueError, match="late"):
            outer_fails_after_inner()
        assert job_ids(out) == ["inner", "outer"]


def test_begin_and_commit_span_many_writes_and_begin_joins_an_open_unit(out: Path) -> None:
    """The pool's unit of work: `begin` as a loop turn starts, `commit` as it ends."""
    with Store(out) as store:
        store.begin()
        plan(store, "a")
        store.begin()  # a second begin in the same turn is no new unit
        plan(store, "b")
        assert job_ids(out) == []
        store.commit()
        assert job_ids(out) == ["a", "b"]
        store.commit()  # nothing open: nothing to do
        store.begin()
        plan(store, "c")
        store.rollback()
        assert store.lookup("c") is None


def test_close_rolls_back_an_unfinished_unit_of_work(out: Path) -> None:
    with Store(out) as store:
        with store.transaction():
            plan(store, "kept")
        store.begin()
        plan(store, "lost")
        store.set_meta("note", "lost")
    # A fresh open (the lock was released) sees none of the unfinished unit.
    with Store(out) as store:
        assert store.lookup("kept") is not None
        assert store.lookup("lost") is None
        assert store.meta("note") is None


# --- row writes held for the commit -------------------------------------------------


def attempt(store: Store, job_id: str, cost: float = 0.04) -> None:
    store.record_attempt(job_id, cost=cost, prompt_tokens=1, output_tokens=2, cost_source="usage")


def test_held_row_writes_are_committed_with_the_unit_and_seen_by_its_own_reads(
    out: Path,
) -> None:
    """The pool's per-job rows (attempt, end, request cache) wait for the next
    statement; the commit writes them, and any read on the writing connection
    writes them first, so it sees them as if each had been written at once."""
    with Store(out) as store:
        with store.transaction():
            plan(store, "a", "b")
        store.begin()
        attempt(store, "a")
        store.finish("a", Status.DONE, files=["images/a.png"])
        store.remember_request("key-a", "a", ["images/a.png"], "", 0.04)
        assert store.db.held  # held, not yet written
        with Store(out, readonly=True) as reader:
            assert [r.status for r in reader.records()] == [Status.PENDING, Status.PENDING]
        known = store.lookup("a")  # a read on the writing connection
        assert known is not None
        assert known.status is Status.DONE
        assert not store.db.held
        attempt(store, "b")
        store.finish("b", Status.FAILED, error=ErrorInfo("server_error", 503, "down"))
        store.commit()
        assert not store.db.held
    with Store(out, readonly=True) as reader:
        rows = {r.id: r for r in reader.records()}
        assert (rows["a"].status, rows["a"].attempts, rows["a"].files) == (
            Status.DONE,
            1,
            ["images/a.png"],
        )
        assert (rows["b"].status, rows["b"].attempts) == (Status.FAILED, 1)
        assert reader.cached_request("key-a") == (["images/a.png"], "", 0.04)


def test_a_jobs_end_held_before_its_attempt_gives_the_same_row(out: Path) -> None:
    """Held rows go out grouped by statement, not in the order they came: a job's
    attempt and its end set disjoint columns, so either order gives one row."""
    results = []
    for order in ("attempt first", "end first"):
        folder = out.parent / order.replace(" ", "-")
        with Store(folder) as store:
            with store.transaction():
                plan(store, "x", "y")
            store.begin()
            if order == "end first":
                store.finish("y", Status.DONE, files=["images/y.png"])  # fixes the groups' order
                store.finish("x", Status.DONE, files=["images/x.png"], text="t")
                attempt(store, "x", 0.5)
                attempt(store, "x", 0.25)
            else:
                attempt(store, "x", 0.5)
                attempt(store, "x", 0.25)
                store.finish("x", Status.DONE, files=["images/x.png"], text="t")
            store.commit()
        with Store(folder, readonly=True) as reader:
            (rec,) = [r for r in reader.records() if r.id == "x"]
            results.append((rec.status, rec.attempts, rec.cost_usd, rec.files, rec.text))
    assert results[0] == results[1] == (Status.DONE, 2, 0.75, ["images/x.png"], "t")


def test_the_request_cache_lookup_finds_held_rows_without_writing_them(out: Path) -> None:
    """Asked once a job, the lookup looks through the held rows (the newest first)
    rather than writing them early, which would undo their grouping."""
    with Store(out) as store:
        with store.transaction():
            store.remember_request("k", "old", ["images/old.png"], "before", 0.01)
        store.begin()
        store.remember_request("k", "j1", ["images/j1.png"], "first", 0.02)
        store.remember_request("k", "j2", ["images/j2.png"], "second", 0.03)
        store.remember_request("other", "j3", ["images/j3.png"], "", 0.04)
        assert store.cached_request("k") == (["images/j2.png"], "second", 0.03)
        assert store.cached_request("absent") is None
        assert [len(rows) for rows in store.db.held.values()] == [3]
        store.commit()
        assert store.cached_request("k") == (["images/j2.png"], "second", 0.03)


def test_a_rollback_drops_held_rows(out: Path) -> None:
    with Store(out) as store:
        with store.transaction():
            plan(store, "a")
        store.begin()
        attempt(store, "a")
        store.finish("a", Status.DONE, files=["images/a.png"])
        store.rollback()
        assert not store.db.held
        store.begin()
        store.commit()
    with Store(out, readonly=True) as reader:
        (rec,) = reader.records()
        assert (rec.status, rec.attempts) == (Status.PENDING, 0)


# --- opening and migrations --------------------------------------------------------


def old_folder(tmp_path: Path, version: int) -> Path:
    """A folder written by the schema of `version` migrations, with one finished job."""
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    con = sqlite3.connect(out / STATE_DIR / DB_NAME, isolation_level=None)
    for migration in MIGRATIONS[:version]:
        migration(con)
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.execute(f"PRAGMA user_version={version}")
    con.execute(
        "INSERT INTO jobs (id, seq, fingerprint, status, files, job) "
        "VALUES ('old', 1, 'fp', 'done', ?, ?)",
        ('["images/old.png"]', '{"id": "old", "prompt": "kept"}'),
    )
    con.close()
    return out


def schema(out: Path) -> tuple[int, set[str], set[str], list[tuple[str, str]]]:
    """Version, tables, the jobs table's columns, and its rows, read without the store."""
    con = sqlite3.connect(out / STATE_DIR / DB_NAME)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
        rows = con.execute("SELECT id, status FROM jobs").fetchall()
    finally:
        con.close()
    return version, tables, columns, rows


def _m_breaks_half_way(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE half_done (x INTEGER)")
    db.execute("ALTER TABLE no_such_table ADD COLUMN y INTEGER")  # SQLite refuses this


class StoreWithABrokenMigration(Store):
    """The store of a release whose newest migration fails on this file."""

    migrations = (*MIGRATIONS, _m_breaks_half_way)


def test_migrations_from_an_old_schema_apply_in_one_transaction(tmp_path: Path) -> None:
    out = old_folder(tmp_path, 3)
    before = schema(out)
    assert "upscaled" not in before[2]
    # Two good migrations run, then the third fails: none of the three stays.
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        StoreWithABrokenMigration(out).open()
    assert schema(out) == before
    # The failed open released the folder; the current store upgrades it whole.
    with Store(out) as store:
        (rec,) = list(store.records())
        assert (rec.id, rec.status, rec.files, rec.prompt) == (
            "old",
            Status.DONE,
            ["images/old.png"],
            "kept",
        )
    version, tables, columns, _ = schema(out)
    assert version == SCHEMA_VERSION
    assert {"upscaled", "preview"} <= columns
    assert "half_done" not in tables


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


def test_the_sequence_continues_across_opens(out: Path) -> None:
    """File order survives a reopen: new jobs come after the old ones."""
    with Store(out) as store, store.transaction():
        plan(store, "z", "y")
    with Store(out) as store, store.transaction():
        plan(store, "a")
    assert job_ids(out) == ["z", "y", "a"]


# --- the typed queries -------------------------------------------------------------


def finished_folder(out: Path) -> None:
    """Five jobs in known states: two done (one from the cache), one failed, one
    blocked, one still pending after a rate-limited attempt."""
    with Store(out) as store, store.transaction():
        store.start_run()
        planned = [
            Job(id="d1", prompt="p1", tags=("shoes", "red"), source="a.jsonl", line=1),
            Job(
                id="f1",
                prompt="p2",
                tags=("shoes",),
                aspect_ratio="4:3",
                source="a.jsonl",
                line=2,
            ),
            Job(id="b1", prompt="p3", images=("/ref/x.png",), source="a.jsonl", line=3),
            Job(id="p1", prompt="p4", tags=("red",), source="a.jsonl", line=4),
            Job(id="c1", prompt="p1", tags=("shoes",), source="a.jsonl", line=5),
        ]
        for job in planned:
            store.plan(job, f"fp-{job.id}", reset=True)
        attempts_made = (("d1", 2, "usage"), ("f1", 3, "table"), ("b1", 1, "usage"))
        for job_id, attempts, source in attempts_made:
            for _ in range(attempts):
                store.record_attempt(
                    job_id, cost=0.04, prompt_tokens=10, output_tokens=1290, cost_source=source
                )
        store.record_attempt("p1", cost=0.0, prompt_tokens=0, output_tokens=0, cost_source="")
        store.finish("d1", Status.DONE, files=["images/d1.png"])
        store.finish("f1", Status.FAILED, error=ErrorInfo("no_image", None, "no image"))
        store.finish("b1", Status.BLOCKED, error=ErrorInfo("blocked", None, "SAFETY"))
        store.mark_cache_hit("c1", 0.04)
        store.finish("c1", Status.DONE, files=["images/d1.png"])
        store.end_run(0)


def test_totals_add_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_folder(out)
    with Store(out, readonly=True) as store:
        t = store.totals()
    assert (t.jobs, t.done, t.failed, t.blocked, t.skipped, t.pending) == (5, 2, 1, 1, 0, 1)
    assert t.finished == 4
    assert (t.requests, t.retries) == (7, 3)
    assert (t.prompt_tokens, t.output_tokens) == (60, 6 * 1290)
    assert t.cost_usd == pytest.approx(0.24)
    assert t.errors == (Tally("blocked", 1), Tally("no_image", 1))
    assert t.cost_sources == (Tally("cache", 1), Tally("table", 1), Tally("usage", 2))
    assert (t.cache_hits, t.saved_usd) == (1, pytest.approx(0.04))
    assert t.elapsed_s >= 0


def test_tag_totals_count_a_job_under_each_of_its_tags(tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_folder(out)
    with Store(out, readonly=True) as store:
        tags = {t.tag: t for t in store.tag_totals()}
    assert sorted(tags) == ["red", "shoes"]
    assert (tags["shoes"].jobs, tags["shoes"].done, tags["shoes"].failed) == (3, 2, 1)
    assert tags["shoes"].cost_usd == pytest.approx(0.2)
    assert (tags["red"].jobs, tags["red"].done, tags["red"].blocked) == (2, 1, 0)


def test_records_stream_in_file_order_and_filter_by_status(tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_folder(out)
    with Store(out, readonly=True) as store:
        assert [r.id for r in store.records()] == ["d1", "f1", "b1", "p1", "c1"]
        failed = list(store.records((Status.FAILED, Status.BLOCKED)))
    assert [(r.id, r.status, r.attempts) for r in failed] == [
        ("f1", Status.FAILED, 3),
        ("b1", Status.BLOCKED, 1),
    ]
    assert failed[0].error == ErrorInfo("no_image", None, "no image")
    assert (failed[0].source, failed[0].line, failed[0].tags) == ("a.jsonl", 2, ["shoes"])


def test_failed_jobs_come_back_in_the_input_format(tmp_path: Path) -> None:
    out = tmp_path / "out"
    finished_folder(out)
    with Store(out, readonly=True) as store:
        failed = list(store.failed_jobs())
    assert [(f.job["id"], f.status) for f in failed] == [
        ("f1", Status.FAILED),
        ("b1", Status.BLOCKED),
    ]
    assert dict(failed[0].job) == {
        "id": "f1",
        "prompt": "p2",
        "aspect_ratio": "4:3",
        "tags": ["shoes"],
    }
    assert dict(failed[1].job) == {"id": "b1", "prompt": "p3", "images": ["/ref/x.png"]}
    assert failed[1].error == ErrorInfo("blocked", None, "SAFETY")


def test_the_report_reads_the_store_only_through_its_queries() -> None:
    import batchgen.report

    for module in Path(batchgen.report.__file__).parent.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        assert "execute(" not in text, module.name
        assert "sqlite3" not in text, module.name


# --- the codec ---------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
#: Jobs as the reader makes them: an aspect ratio or a model is None or a real
#: value, never "" (the reader turns a blank into None; the input form leaves
#: falsy options out, as a user's row would).
any_job = st.builds(
    Job,
    id=TEXT.filter(bool),
    prompt=TEXT.filter(bool),
    images=st.lists(TEXT, max_size=3).map(tuple),
    aspect_ratio=st.none() | st.sampled_from(sorted(ASPECT_RATIOS)),
    tags=st.lists(TEXT, max_size=3).map(tuple),
    priority=st.integers(-(2**62), 2**62),
    model=st.none() | TEXT.filter(bool),
    variant=st.none() | st.integers(0, 2**31),
    sizes=st.lists(TEXT, max_size=2).map(tuple),
    source=TEXT,
    line=st.integers(0, 2**31),
)
PROPS = settings(max_examples=200, deadline=None)


@PROPS
@given(any_job)
def test_the_stored_form_round_trips(job: Job) -> None:
    assert job_from_json(job_to_json(job)) == job


@PROPS
@given(any_job)
def test_the_input_form_round_trips_with_its_origin_given(job: Job) -> None:
    row = json.dumps(job_to_dict(job), ensure_ascii=False)
    assert job_from_json(row, job.source, job.line) == job
    # The stored form less its origin is the input form, key for key and in order.
    assert list(input_form(job_to_json(job)).items()) == list(job_to_dict(job).items())


@contextmanager
def fresh_store() -> Iterator[Store]:
    # A folder per example: pytest's tmp_path is shared by all of them.
    with tempfile.TemporaryDirectory() as name, Store(Path(name)) as store:
        yield store


@settings(PROPS, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_job, min_size=1, max_size=5, unique_by=lambda j: j.id))
def test_jobs_round_trip_through_the_state_file(batch: list[Job]) -> None:
    """What the planner stores is what the pool gets back, in priority then file order."""
    with fresh_store() as store:
        with store.transaction():
            store.start_run()
            for job in batch:
                store.plan(job, "fp", reset=True)
        back = list(store.pending())
        with store.transaction():
            for job in batch:
                store.finish(job.id, Status.FAILED, error=ErrorInfo("bad_request", 400, "no"))
        fed_back = [dict(f.job) for f in store.failed_jobs()]
    assert back == sorted(batch, key=lambda j: -j.priority)
    assert fed_back == [job_to_dict(j) for j in batch]
