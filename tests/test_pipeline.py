"""End-to-end runs through the real simulator, one per outcome kind, with exact counts."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.engine.runner import arun_files
from batchgen.errors import InputError, StateError, UsageError
from batchgen.models import Status
from batchgen.sim import SimConfig, Simulator
from batchgen.store import Store
from tests.conftest import KEY, make_config, write_jobs


async def run_one(tmp_path: Path, sim: Simulator, prompt: str, **options: Any) -> dict[str, Any]:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "j1", "prompt": prompt}])
    out = tmp_path / "out"
    result = await arun_files([jobs], make_config(out, sim.base_url, **options))
    report = json.loads((out / "report.json").read_text())
    report["exit_code"] = result.exit_code
    report["row"] = report["jobs"][0]
    return report


async def test_ok_writes_a_decodable_image(tmp_path: Path, sim: Simulator) -> None:
    r = await run_one(tmp_path, sim, "a red cube")
    assert (r["exit_code"], r["done"], r["requests"], sim.stats.total) == (0, 1, 1, 1)
    assert r["row"]["files"] == ["images/j1.png"]
    with Image.open(tmp_path / "out" / "images" / "j1.png") as im:
        im.verify()
    assert r["row"]["cost_source"] == "usage"
    tokens = r["row"]["tokens"]
    text_tokens = tokens["output"] - 1290
    expected = (tokens["prompt"] * 0.30 + 1290 * 30.0 + text_tokens * 2.50) / 1e6
    assert r["cost_usd"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["503", "500", "502", "504", "reset", "truncate", "nonjson"])
async def test_server_errors_are_retried(tmp_path: Path, sim: Simulator, kind: str) -> None:
    r = await run_one(tmp_path, sim, f"cube [[sim:{kind}x2]]")
    assert r["row"]["status"] == "done"
    assert r["row"]["attempts"] == 3
    assert sim.stats.total == 3


async def test_hang_is_cut_by_the_timeout_and_retried(tmp_path: Path, sim: Simulator) -> None:
    r = await run_one(tmp_path, sim, "cube [[sim:hangx1]]", timeout=0.3)
    assert (r["row"]["status"], r["row"]["attempts"], sim.stats.total) == ("done", 2, 2)


async def test_server_error_gives_up_after_max_attempts(tmp_path: Path, sim: Simulator) -> None:
    r = await run_one(tmp_path, sim, "cube [[sim:500]]", max_attempts=3)
    assert (r["exit_code"], r["failed"], sim.stats.total) == (1, 1, 3)
    assert r["row"]["error"]["kind"] == "server_error"
    assert r["row"]["error"]["http_status"] == 500


async def test_rate_limited_waits_and_does_not_use_attempts(tmp_path: Path, sim: Simulator) -> None:
    r = await run_one(tmp_path, sim, "cube [[sim:429-delay=0.05x3]]", max_attempts=2)
    assert (r["row"]["status"], sim.stats.total) == ("done", 4)
    assert r["row"]["attempts"] == 4


@pytest.mark.parametrize("kind", ["block", "block-prohibited", "imagesafety"])
async def test_policy_blocks_are_never_retried(tmp_path: Path, sim: Simulator, kind: str) -> None:
    r = await run_one(tmp_path, sim, f"cube [[sim:{kind}]]")
    assert (r["exit_code"], r["blocked"], sim.stats.total) == (1, 1, 1)
    assert r["row"]["error"]["kind"] == "blocked"


@pytest.mark.parametrize("kind", ["text", "empty", "noimage"])
async def test_no_image_retried_a_few_times(tmp_path: Path, sim: Simulator, kind: str) -> None:
    r = await run_one(tmp_path, sim, f"cube [[sim:{kind}]]")
    assert (r["row"]["status"], r["row"]["error"]["kind"], sim.stats.total) == (
        "failed",
        "no_image",
        3,
    )
    if kind == "text":
        assert "describe" in r["row"]["text"] or r["row"]["text"]


@pytest.mark.parametrize("kind", ["400", "413"])
async def test_bad_requests_are_not_retried(tmp_path: Path, sim: Simulator, kind: str) -> None:
    r = await run_one(tmp_path, sim, f"cube [[sim:{kind}]]")
    assert (r["row"]["status"], r["row"]["error"]["kind"], sim.stats.total) == (
        "failed",
        "bad_request",
        1,
    )


async def test_multi_and_jpeg_answers(tmp_path: Path, sim: Simulator) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [{"id": "two", "prompt": "x [[sim:multi]]"}, {"id": "jp", "prompt": "y [[sim:jpeg]]"}],
    )
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    rows = {r["id"]: r for r in json.loads((out / "report.json").read_text())["jobs"]}
    assert rows["two"]["files"] == ["images/two.png", "images/two-2.png"]
    assert rows["jp"]["files"] == ["images/jp.jpg"]


@pytest.mark.parametrize("kind", ["badkey", "401", "403", "404"])
async def test_fatal_aborts_the_run_without_failing_jobs(
    tmp_path: Path, sim: Simulator, kind: str
) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p{i} [[sim:{kind}]]"} for i in range(50)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=4))
    report = json.loads((out / "report.json").read_text())
    assert result.exit_code == 3
    assert (report["pending"], report["failed"]) == (50, 0)
    assert sim.stats.total <= 4  # no more than were in flight


async def test_daily_quota_stops_cleanly(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": "a", "prompt": "fine"}, {"id": "b", "prompt": "x [[sim:daily]]"}]
    rows += [{"id": f"c{i}", "prompt": f"later {i} [[sim:daily]]"} for i in range(20)]
    out = tmp_path / "out"
    result = await arun_files(
        [write_jobs(tmp_path / "j.jsonl", rows)], make_config(out, sim.base_url, concurrency=1)
    )
    assert result.exit_code == 3
    assert result.stop is not None
    assert "daily quota" in result.stop.message
    report = json.loads((out / "report.json").read_text())
    assert (report["done"], report["failed"], report["pending"]) == (1, 0, 21)


async def test_absurd_retry_delay_is_a_quota_stop(tmp_path: Path, sim: Simulator) -> None:
    r = await run_one(tmp_path, sim, "x [[sim:429-delay=7200]]")
    assert (r["exit_code"], r["pending"], sim.stats.total) == (3, 1, 1)


async def test_resume_sends_nothing_then_only_the_changed_job(
    tmp_path: Path, sim: Simulator
) -> None:
    rows = [{"id": f"j{i}", "prompt": f"product {i}"} for i in range(20)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    assert sim.stats.total == 20
    again = await arun_files([jobs], make_config(out, sim.base_url))
    assert (again.exit_code, sim.stats.total, again.plan.done) == (0, 20, 20)
    rows[7]["prompt"] = "product 7, now in red"
    write_jobs(jobs, rows)
    changed = await arun_files([jobs], make_config(out, sim.base_url))
    assert (changed.plan.changed, sim.stats.total) == (1, 21)
    assert sim.stats.by_prompt["product 7, now in red"] == 1


async def test_retry_failed_and_blocked(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": "f", "prompt": "x [[sim:400x1]]"}, {"id": "b", "prompt": "y [[sim:blockx1]]"}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    plain = await arun_files([jobs], make_config(out, sim.base_url))
    assert (plain.plan.to_run, sim.stats.total) == (0, 2)
    retried = await arun_files([jobs], make_config(out, sim.base_url, retry_failed=True))
    assert (retried.plan.retry, retried.counters.done, sim.stats.total) == (1, 1, 3)
    unblocked = await arun_files([jobs], make_config(out, sim.base_url, retry_blocked=True))
    assert (unblocked.exit_code, sim.stats.total) == (0, 4)


async def test_limit_and_priority(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p{i}", "priority": i % 3} for i in range(9)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    r = await arun_files([jobs], make_config(out, sim.base_url, limit=3, concurrency=1))
    assert r.counters.done == 3
    assert sorted(sim.stats.by_prompt) == ["p2", "p5", "p8"]


async def test_dry_run_sends_and_writes_nothing(tmp_path: Path, sim: Simulator) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": "p"} for i in range(4)])
    out = tmp_path / "out"
    r = await arun_files([jobs], make_config(out, sim.base_url, dry_run=True))
    assert (r.plan.new, sim.stats.total, out.exists()) == (4, 0, False)
    assert r.plan.expected_cost == pytest.approx(4 * 0.039, rel=0.05)


async def test_bad_input_sends_nothing(tmp_path: Path, sim: Simulator) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "a", "prompt": "ok"}\n{"id": "b"}\nnot json\n{"id": "a", "prompt": "x"}\n'
    )
    with pytest.raises(InputError) as exc:
        await arun_files([jobs], make_config(tmp_path / "out", sim.base_url))
    lines = sorted(p.line for p in exc.value.problems)
    assert lines == [2, 3, 4]
    assert sim.stats.total == 0


async def test_missing_key_is_a_usage_error(tmp_path: Path, sim: Simulator) -> None:
    from dataclasses import replace

    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "p"}])
    config = replace(make_config(tmp_path / "out", sim.base_url), api_key=None)
    with pytest.raises(UsageError, match="GEMINI_API_KEY"):
        await arun_files([jobs], config)
    assert sim.stats.total == 0


async def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Store(out), pytest.raises(StateError, match="in use"), Store(out):
        pass


async def test_chain_runs_after_parent_and_skips_after_failure(
    tmp_path: Path, sim: Simulator
) -> None:
    rows = [
        {"id": "sheet", "prompt": "a mascot character sheet"},
        {"id": "scene1", "prompt": "the mascot at the beach", "images": ["@sheet"]},
        {"id": "bad", "prompt": "broken [[sim:400]]"},
        {"id": "child", "prompt": "edit of bad", "images": ["@bad"]},
        {"id": "grandchild", "prompt": "edit of child", "images": ["@child"]},
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    r = await arun_files([jobs], make_config(out, sim.base_url))
    report = {row["id"]: row for row in json.loads((out / "report.json").read_text())["jobs"]}
    assert report["scene1"]["status"] == "done"
    assert report["child"]["status"] == "skipped"
    assert "bad" in report["child"]["error"]["message"]
    assert report["grandchild"]["status"] == "skipped"
    assert r.exit_code == 1
    # The edit request carried the parent's output bytes.
    assert any(rec.images_in == 1 for rec in sim.stats.recent)
    # Resume: nothing new; a regenerated parent reruns its child.
    again = await arun_files([jobs], make_config(out, sim.base_url))
    assert again.counters.requests == 0
    rows[0]["prompt"] = "a mascot character sheet, blue"
    write_jobs(jobs, rows)
    third = await arun_files([jobs], make_config(out, sim.base_url))
    assert third.counters.done == 2


def test_status_values_are_stable() -> None:
    assert [s.value for s in Status] == ["pending", "done", "blocked", "failed", "skipped"]


async def test_sizes_are_local_and_upscaling_is_reported(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": "p", "prompt": "a lamp", "sizes": ["amazon", "12x12:fill"]}]
    r = await run_one_rows(tmp_path, sim, rows)
    row = r["jobs"][0]
    assert sim.stats.total == 1  # resizing never sends a request
    # A platform preset is a JPEG (what the platform asks for); a custom size keeps PNG.
    assert row["files"] == ["images/p.png", "sizes/amazon/p.jpg", "sizes/12x12-fill/p.png"]
    assert row["upscaled"] == ["sizes/amazon/p.jpg"]  # the simulator's image is 16 px
    with Image.open(tmp_path / "out" / "sizes" / "amazon" / "p.jpg") as im:
        assert im.size == (1500, 1500)
        assert im.format == "JPEG"
    # 16 px is smaller than a preview: the image is its own, and no JPEG is made.
    assert preview_of(tmp_path / "out", "p") == "images/p.png"
    assert not (tmp_path / "out" / "thumbs").exists()


def preview_of(out: Path, job_id: str) -> str | None:
    with Store(out, readonly=True) as store:
        (rec,) = [rec for rec in store.records() if rec.id == job_id]
        return rec.preview


@pytest.mark.parametrize("noise", [False, True], ids=["small-file", "1MB-file"])
async def test_a_full_size_image_gets_its_preview_as_it_lands(tmp_path: Path, noise: bool) -> None:
    """1024 px either way: a few KB (checked on the loop, the preview made on a
    writer thread) or ~1 MB like a real answer (all of it on a writer thread)."""
    out = tmp_path / "out"
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "big", "prompt": "a lamp"}])
    async with Simulator(SimConfig(api_key=KEY, noise=noise)) as full:
        await arun_files([jobs], make_config(out, full.base_url))
    assert preview_of(out, "big") == "thumbs/images/big.jpg"
    with Image.open(out / "thumbs" / "images" / "big.jpg") as im:
        assert im.format == "JPEG"
        assert max(im.size) == 256
    data = (out / "report-data.js").read_text(encoding="utf-8")
    assert '"images/big.png","thumbs/images/big.jpg"' in data


async def test_resume_mid_chain(tmp_path: Path, sim: Simulator) -> None:
    rows = [
        {"id": "draft", "prompt": "first pass: composition"},
        {"id": "sharp", "prompt": "keep the composition, sharpen", "images": ["@draft"]},
        {"id": "fix", "prompt": "fix the left corner", "images": ["@sharp"]},
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    first = await arun_files([jobs], make_config(out, sim.base_url, limit=1))
    assert (first.counters.done, sim.stats.total) == (1, 1)
    rest = await arun_files([jobs], make_config(out, sim.base_url))
    assert (rest.exit_code, rest.counters.done, sim.stats.total) == (0, 2, 3)
    report = json.loads((out / "report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["done", "done", "done"]
    assert all((out / j["files"][0]).is_file() for j in report["jobs"])  # intermediates kept


async def run_one_rows(
    tmp_path: Path, sim: Simulator, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    out = tmp_path / "out"
    await arun_files([write_jobs(tmp_path / "jobs.jsonl", rows)], make_config(out, sim.base_url))
    return json.loads((out / "report.json").read_text())  # type: ignore[no-any-return]


async def test_a_run_with_nothing_to_do_keeps_the_reports(tmp_path: Path, sim: Simulator) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(5)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    before = (out / "report.json").stat().st_mtime_ns
    again = await arun_files([jobs], make_config(out, sim.base_url))
    assert (out / "report.json").stat().st_mtime_ns == before
    assert again.report["done"] == 5  # the summary is still returned
    rows[0]["prompt"] = "p0, changed"
    write_jobs(jobs, rows)
    await arun_files([jobs], make_config(out, sim.base_url))
    assert (out / "report.json").stat().st_mtime_ns != before


async def test_a_settled_folder_is_not_planned_again(tmp_path: Path, sim: Simulator) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    rows = [{"id": "a", "prompt": "p", "images": [str(photo)]}, {"id": "b", "prompt": "q"}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    first = await arun_files([jobs], make_config(out, sim.base_url))
    assert (first.plan.new, sim.stats.total) == (2, 2)
    fast = await arun_files([jobs], make_config(out, sim.base_url))
    assert (fast.exit_code, fast.plan.total, fast.plan.done, fast.plan.new) == (0, 2, 2, 0)
    assert sim.stats.total == 2
    # A touched reference photo takes the full path (and its new bytes rerun the job).
    Image.new("RGB", (8, 8), "blue").save(photo)
    full = await arun_files([jobs], make_config(out, sim.base_url))
    assert (full.plan.changed, sim.stats.total) == (1, 3)
    # A --limit run leaves jobs pending: the next run must plan them.
    more = write_jobs(
        tmp_path / "more.jsonl", [*rows, {"id": "c", "prompt": "r"}, {"id": "d", "prompt": "s"}]
    )
    await arun_files([more], make_config(out, sim.base_url, limit=1))
    rest = await arun_files([more], make_config(out, sim.base_url))
    assert (rest.plan.pending, sim.stats.total) == (1, 5)


def test_a_folder_of_the_previous_schema_upgrades_in_place(tmp_path: Path) -> None:
    from batchgen.store.db import APPLICATION_ID, DB_NAME, MIGRATIONS, SCHEMA_VERSION, STATE_DIR

    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    con = sqlite3.connect(out / STATE_DIR / DB_NAME, isolation_level=None)
    for migration in MIGRATIONS[:-1]:
        migration(con)
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    con.execute(
        "INSERT INTO jobs (id, seq, fingerprint, status, files, job) "
        "VALUES (?, 1, 'fp', 'done', ?, ?)",
        ("old", '["images/old.png"]', '{"id": "old", "prompt": "kept"}'),
    )
    con.close()
    with Store(out) as store:
        (rec,) = list(store.records())
        version = store.db.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
    assert (rec.id, rec.status, rec.files) == ("old", Status.DONE, ["images/old.png"])
    assert rec.preview is None  # unknown: the report makes the preview as before


@pytest.mark.parametrize("busy", [2.0, -1.0], ids=["writer-thread", "on-the-loop"])
async def test_small_answers_land_the_same_on_the_loop_or_a_thread(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, busy: float
) -> None:
    """`scheduler._save` writes small answers on the loop while the loop is busy
    (`BUSY_LOOP`), else on a writer thread: same files, previews and state."""
    from batchgen.output import writer

    monkeypatch.setattr(writer, "BUSY_LOOP", busy)
    rows = [{"id": f"j{i}", "prompt": f"item {i}"} for i in range(20)]
    rows.append({"id": "two", "prompt": "pair [[sim:multi]]"})
    rows.append({"id": "bad", "prompt": "broken [[sim:notimage]]"})
    report = await run_one_rows(tmp_path, sim, rows)
    by_id = {r["id"]: r for r in report["jobs"]}
    assert report["done"] == 21
    assert by_id["bad"]["status"] == "failed"
    assert by_id["two"]["files"] == ["images/two.png", "images/two-2.png"]
    for i in range(20):
        assert by_id[f"j{i}"]["files"] == [f"images/j{i}.png"]
        assert preview_of(tmp_path / "out", f"j{i}") == f"images/j{i}.png"
        with Image.open(tmp_path / "out" / "images" / f"j{i}.png") as im:
            im.verify()
