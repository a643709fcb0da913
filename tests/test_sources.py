"""Jobs flow one way: every input is a `JobSource`, read once by the reader's
single pass, which feeds the planner inside one unit of work and rolls it all
back when any row is bad. Real files, a real simulator, real SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import batchgen
from batchgen.engine.runner import arun_files
from batchgen.errors import InputError, InputProblem
from batchgen.jobs import reader
from batchgen.jobs.inputs import FileSource, JobSource, RecordsSource
from batchgen.models import Job
from batchgen.recipes.expand import RecipeSource
from batchgen.sim import Simulator
from batchgen.store import Store
from batchgen.store.db import DB_NAME, STATE_DIR
from tests.conftest import KEY, make_config, write_jobs
from tests.test_expand import PACK, make_photo, product, write_csv


def read_all(sources: list[JobSource], **options: Any) -> list[Job]:
    return list(reader.read_sources(sources, **options))


def problems_of(sources: list[JobSource]) -> list[InputProblem]:
    with pytest.raises(InputError) as caught:
        read_all(sources)
    return caught.value.problems


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A recipe over a two-product sheet (three jobs a product, one chained)."""
    make_photo(tmp_path / "photos" / "mug.png")
    write_csv(tmp_path / "products.csv", [product("A1"), product("B2")])
    (tmp_path / "recipe.toml").write_text(PACK, encoding="utf-8")
    return tmp_path


# --- the interface -------------------------------------------------------------------


def test_every_kind_of_input_is_one_source_read_in_order(tmp_path: Path, shop: Path) -> None:
    jsonl = write_jobs(tmp_path / "j.jsonl", [{"id": "j1", "prompt": "from jsonl"}])
    table = tmp_path / "t.csv"
    table.write_text("id,prompt,tags\nc1,from csv,a;b\n", encoding="utf-8")
    sources: list[JobSource] = [
        FileSource(jsonl),
        FileSource(table),
        RecordsSource([{"id": "r1", "prompt": "a dict"}, Job(id="r2", prompt="a Job")]),
        RecipeSource(shop / "recipe.toml"),
    ]
    jobs = read_all(sources)
    sheet = str(shop / "products.csv")
    assert [(j.id, j.source, j.line) for j in jobs] == [
        ("j1", str(jsonl), 1),
        ("c1", str(table), 2),
        ("r1", "<jobs>", 1),
        ("r2", "<jobs>", 2),
        ("A1-white_bg", sheet, 2), ("A1-scene", sheet, 2), ("A1-detail", sheet, 2),
        ("B2-white_bg", sheet, 3), ("B2-scene", sheet, 3), ("B2-detail", sheet, 3),
    ]  # fmt: skip
    assert jobs[1].tags == ("a", "b")
    assert jobs[4].images == (str(shop / "photos" / "mug.png"),)


def test_the_pass_feeds_nothing_after_a_problem_but_reads_on(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "p"}\n{"id": "b"}\n{"id": "c", "prompt": "p"}\n'
        '{"id": "a", "prompt": "again"}\n{"id": "d", "prompt": "p", "aspect_ratio": "7:3"}\n'
    )
    fed: list[str] = []
    with pytest.raises(InputError) as caught:
        fed.extend(job.id for job in reader.read_sources([FileSource(path)]))
    assert fed == ["a"]
    found = [(p.line, p.field) for p in caught.value.problems]
    assert found == [(2, "prompt"), (4, "id"), (5, "aspect_ratio")]


def test_cross_row_problems_are_complete_only_when_the_pass_ends(tmp_path: Path) -> None:
    """A chain to an id no row has, and a cycle, are known once the last row is
    read: everything was fed, then the pass raises (the planner's unit of work
    rolls back)."""
    rows = [
        {"id": "a", "prompt": "p", "images": ["@b"]},
        {"id": "b", "prompt": "p", "images": ["@a"]},
        {"id": "c", "prompt": "p", "images": ["@nobody"]},
    ]
    fed: list[str] = []
    with pytest.raises(InputError) as caught:
        fed.extend(
            j.id for j in reader.read_sources([FileSource(write_jobs(tmp_path / "j.jsonl", rows))])
        )
    assert fed == ["a", "b", "c"]
    messages = [p.message for p in caught.value.problems]
    assert any("cycle" in m for m in messages)
    assert any("'@nobody'" in m for m in messages)


def test_records_are_checked_like_rows_and_named_by_their_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_photo(tmp_path / "ref.png")
    good = [{"id": "d", "prompt": "p", "images": ["ref.png"]}, Job(id="j", prompt="p")]
    first, second = read_all([RecordsSource(good)])
    assert first.images == (str(tmp_path / "ref.png"),)  # relative to the working folder
    assert (second.id, second.source, second.line) == ("j", "<jobs>", 2)
    bad: list[object] = [
        {"id": "ok", "prompt": "p"},
        {"id": "bad id!", "prompt": "p"},
        Job(id="x", prompt=" "),
        42,
        {"id": "ok", "prompt": "twice"},
        Job(id="y", prompt="p", images=("missing.png",)),
    ]
    found = problems_of([RecordsSource(bad, first_line=3)])
    assert [(p.file, p.line, p.field) for p in found] == [
        ("<jobs>", 4, "id"),
        ("<jobs>", 5, "prompt"),
        ("<jobs>", 6, ""),
        ("<jobs>", 7, "id"),
        ("<jobs>", 8, "images"),
    ]
    assert "got int" in found[2].message
    assert "duplicate id 'ok' (first on line 3)" in found[3].message


def test_a_recipes_jobs_are_checked_with_the_rest_and_named_by_sheet_row(
    tmp_path: Path, shop: Path
) -> None:
    (shop / "photos" / "fake.png").write_text("not a picture")
    write_csv(shop / "products.csv", [product("A1"), product("B2", photo="photos/fake.png")])
    other = write_jobs(tmp_path / "other.jsonl", [{"id": "A1-white_bg", "prompt": "mine"}])
    found = problems_of([RecipeSource(shop / "recipe.toml"), FileSource(other)])
    sheet = str(shop / "products.csv")
    # The expansion judges the photo present; the reader judges it no image.
    where = [(p.file, p.line, p.field) for p in found]
    assert (sheet, 3, "images") in where
    dup = next(p for p in found if p.file == str(other))
    assert (dup.line, dup.field) == (1, "id")
    assert f"duplicate id 'A1-white_bg' (first on {sheet}:2)" == dup.message


def test_a_bad_recipe_is_listed_with_the_other_inputs_problems(tmp_path: Path, shop: Path) -> None:
    (shop / "recipe.toml").write_text(PACK.replace('"detail"', '"no-such-template"'))
    bad_file = write_jobs(tmp_path / "j.jsonl", [{"id": "x"}])
    found = problems_of([RecipeSource(shop / "recipe.toml"), FileSource(bad_file)])
    assert {p.file for p in found} == {str(shop / "recipe.toml"), str(bad_file)}


def test_memory_does_not_grow_with_the_number_of_jobs(tmp_path: Path) -> None:
    """Rows are streamed, never collected: what grows is the id table (24 bytes a
    slot); holding every `Job` would cost over 250 bytes a job."""

    def peak(n: int) -> int:
        rows = ({"id": f"job-{i:07d}", "prompt": f"prompt number {i}"} for i in range(n))
        path = write_jobs(tmp_path / f"{n}.jsonl", rows)
        tracemalloc.start()
        try:
            assert reader.check([FileSource(path)], check_images=False) == n
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, big = peak(10_000), peak(40_000)
    assert (big - small) / 30_000 < 150


# --- one pass, no job files written ------------------------------------------------------

#: Runs the CLI with Python's audit hook recording every file opened and every
#: folder made, and counts how many rows the reader parses.
PROBE = r"""
import json, os, sys
import batchgen.jobs.reader as reader
from batchgen.cli.main import main

parsed = 0
real_parse = reader.parse_row

def counting(*args, **kwargs):
    global parsed
    parsed += 1
    return real_parse(*args, **kwargs)

reader.parse_row = counting
events, recording = [], True

def hook(event, args):
    if recording and event in ("open", "os.mkdir") and isinstance(args[0], (str, bytes)):
        flags = args[2] if event == "open" and isinstance(args[2], int) else -1
        events.append([event, os.path.abspath(os.fsdecode(args[0])), flags])

sys.addaudithook(hook)
code = main(sys.argv[1:])
recording = False
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump({"code": code, "parsed": parsed, "events": events}, fh)
"""

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def probe(tmp_path: Path, *args: str | Path) -> dict[str, Any]:
    report = tmp_path / "probe.json"
    env = dict(os.environ, PROBE_OUT=str(report), GEMINI_API_KEY=KEY, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def opened(found: dict[str, Any], path: Path) -> int:
    real = os.path.realpath(path)
    return sum(1 for e, p, _ in found["events"] if e == "open" and os.path.realpath(p) == real)


def written(found: dict[str, Any]) -> list[str]:
    return [
        os.path.realpath(p)
        for e, p, flags in found["events"]
        if e == "os.mkdir" or (flags != -1 and flags & WRITE_FLAGS)
    ]


def test_a_job_file_is_read_once_and_each_row_parsed_once(tmp_path: Path) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(7)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    checked = probe(tmp_path, "validate", jobs)
    assert (opened(checked, jobs), checked["parsed"]) == (1, 7)
    dry = probe(tmp_path, "run", jobs, "--out", out, "--sim", "--dry-run")
    assert (opened(dry, jobs), dry["parsed"]) == (1, 7)
    assert not out.exists()
    ran = probe(tmp_path, "run", jobs, "--out", out, "--sim", "--no-progress")
    # Twice opened: once hashed, unparsed, for the settled-folder fast path.
    assert (opened(ran, jobs), ran["parsed"]) == (2, 7)
    again = probe(tmp_path, "run", jobs, "--out", out, "--sim", "--no-progress")
    assert (opened(again, jobs), again["parsed"]) == (1, 0)  # settled: hashed only


def test_a_recipe_runs_without_a_temporary_job_file(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ran = probe(tmp_path, "run", shop / "recipe.toml", "--out", out, "--sim", "--no-progress")
    assert ran["parsed"] == 6
    assert opened(ran, shop / "recipe.toml") == 1
    # Expanded once: a CSV sheet's header is looked at before its rows are read.
    assert opened(ran, shop / "products.csv") <= 2
    real_out = os.path.realpath(out)
    state = os.path.join(real_out, STATE_DIR)
    for path in written(ran):
        assert path == real_out or path.startswith(real_out + os.sep), path
        assert not path.startswith(state + os.sep) or path.endswith(os.sep + "lock"), path
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 6
    assert {row["source"] for row in report["jobs"]} == {str(shop / "products.csv")}


# --- the store: nothing recorded unless every row is good --------------------------------


def snapshot(out: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(f"file:{out / STATE_DIR / DB_NAME}?mode=ro", uri=True)
    try:
        tables = ("runs", "jobs", "meta", "image_hashes", "request_cache")
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
    finally:
        con.close()


async def test_a_bad_row_anywhere_leaves_the_store_untouched(
    tmp_path: Path, sim: Simulator
) -> None:
    photo = make_photo(tmp_path / "photo.png")
    first = [{"id": "a", "prompt": "p", "images": [str(photo)]}, {"id": "b", "prompt": "q"}]
    out = tmp_path / "out"
    await arun_files([write_jobs(tmp_path / "first.jsonl", first)], make_config(out, sim.base_url))
    before = snapshot(out)
    assert sim.stats.total == 2
    # A changed job and new ones would be planned; the bad row is known only at the end.
    late = [
        {"id": "a", "prompt": "p, changed", "images": [str(photo)]},
        {"id": "c", "prompt": "new"},
        {"id": "d", "prompt": "new", "images": ["@nobody"]},
    ]
    # A bad row in the middle: nothing after it is planned, and all is rolled back.
    middle = [{"id": "c", "prompt": "new"}, {"id": "d"}, {"id": "e", "prompt": "new"}]
    for name, rows in (("late", late), ("middle", middle)):
        jobs = write_jobs(tmp_path / f"{name}.jsonl", rows)
        with pytest.raises(InputError):
            await arun_files([jobs], make_config(out, sim.base_url))
        assert snapshot(out) == before, name
    dry = make_config(out, sim.base_url, dry_run=True)
    with pytest.raises(InputError):
        await arun_files([tmp_path / "late.jsonl"], dry)
    assert snapshot(out) == before
    assert sim.stats.total == 2


async def test_bad_input_leaves_no_trace_of_a_new_folder(tmp_path: Path, sim: Simulator) -> None:
    bad = write_jobs(
        tmp_path / "bad.jsonl", [{"id": "a", "prompt": "p"}, {"id": "a", "prompt": "p"}]
    )
    nested = tmp_path / "x" / "y" / "out"
    with pytest.raises(InputError):
        await arun_files([bad], make_config(nested, sim.base_url))
    assert not (tmp_path / "x").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("the user's")
    with pytest.raises(InputError):
        await arun_files([bad], make_config(mine, sim.base_url))
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert sim.stats.total == 0


async def test_dry_runs_take_the_same_pass(tmp_path: Path, shop: Path, sim: Simulator) -> None:
    out = tmp_path / "out"
    result = await arun_files([shop / "recipe.toml"], make_config(out, sim.base_url, dry_run=True))
    assert (result.plan.total, result.plan.new, out.exists()) == (6, 6, False)
    await arun_files([shop / "recipe.toml"], make_config(out, sim.base_url))
    again = await arun_files([shop / "recipe.toml"], make_config(out, sim.base_url, dry_run=True))
    assert (again.plan.total, again.plan.done, again.plan.new) == (6, 6, 0)
    assert sim.stats.total == 6


# --- the Python API ------------------------------------------------------------------------


def state_files(out: Path) -> set[str]:
    return {p.name for p in (out / STATE_DIR).iterdir()}


def test_records_from_python_run_without_a_job_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    make_photo(tmp_path / "ref.png")
    more = write_jobs(tmp_path / "more.jsonl", [{"id": "f1", "prompt": "from a file"}])
    items: list[object] = [
        {"id": "d1", "prompt": "a dict", "images": ["ref.png"]},
        Job(id="j1", prompt="a Job"),
        more,
        {"id": "d2", "prompt": "after the file"},
    ]
    out = tmp_path / "out"
    result = batchgen.run(items, out=out, sim=True)  # type: ignore[arg-type]
    assert (result.exit_code, result.report["done"]) == (0, 4)
    report = json.loads((out / "report.json").read_text())
    rows = {row["id"]: (row["source"], row["line"]) for row in report["jobs"]}
    assert rows == {
        "d1": ("<jobs>", 1),
        "j1": ("<jobs>", 2),
        "f1": (str(more), 1),
        "d2": ("<jobs>", 4),
    }
    assert state_files(out) <= {"lock", DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"}
    with Store(out, readonly=True) as store:
        d1 = store.job("d1")
    assert d1 is not None
    assert d1.images == (str(tmp_path / "ref.png"),)


def test_a_generator_of_records_is_streamed_and_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def jobs() -> Any:
        return ({"id": f"g{i}", "prompt": f"generated {i}"} for i in range(3))

    first = batchgen.run(jobs(), out=out, sim=True)
    assert (first.report["done"], first.counters.requests) == (3, 3)
    again = batchgen.run(jobs(), out=out, sim=True)
    assert (again.plan.done, again.counters.requests) == (3, 0)


def test_bad_records_are_all_reported_and_nothing_is_made(tmp_path: Path) -> None:
    out = tmp_path / "out"
    items: list[object] = [{"id": "ok", "prompt": "p"}, {"id": "no/slash", "prompt": "p"}, 7]
    with pytest.raises(InputError) as caught:
        batchgen.run(items, out=out, sim=True)  # type: ignore[arg-type]
    assert [(p.file, p.line) for p in caught.value.problems] == [("<jobs>", 2), ("<jobs>", 3)]
    assert not out.exists()


def test_a_lone_surrogate_escape_is_refused_with_its_field_and_a_pair_is_text(
    tmp_path: Path,
) -> None:
    # JSON can spell a lone UTF-16 surrogate, which is not text: it used to pass
    # validation and crash the run when the job was stored.
    path = tmp_path / "j.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "smile \\ud83d\\ude00"}\n'
        '{"id": "b", "prompt": "half \\ud800 a pair"}\n'
        '{"id": "c", "prompt": "p", "tags": ["\\uDFFF"]}\n'
    )
    with pytest.raises(InputError) as caught:
        list(reader.read_sources([FileSource(path)]))
    found = [(p.line, p.field, "surrogate" in p.message) for p in caught.value.problems]
    assert found == [(2, "prompt", True), (3, "tags", True)]
