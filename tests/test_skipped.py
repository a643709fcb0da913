"""Skipped jobs (a chained job whose parent did not finish) are kept and run again.

A skipped job was never sent: it goes in `failed.jsonl` with the parent that
stopped it, and it runs again whenever a parent runs again (fixed, retried or
still pending), whichever comes first in the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchgen.engine.runner import arun_files
from batchgen.sim import Simulator
from tests.conftest import batchgen, make_config, write_jobs


def failed_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]


def statuses(out: Path) -> dict[str, str]:
    report = json.loads((out / "report.json").read_text())
    return {row["id"]: row["status"] for row in report["jobs"]}


#: The child comes before its parent in the file: planning must not depend on order.
ROWS = [
    {"id": "child", "prompt": "the cat in a hat", "images": ["@parent"]},
    {"id": "parent", "prompt": "a cat [[sim:block]]"},
    {"id": "grandchild", "prompt": "the hat in red", "images": ["@child"]},
    {"id": "other", "prompt": "a dog"},
]


def test_skipped_jobs_are_in_failed_jsonl_and_run_once_the_parent_is_fixed(
    tmp_path: Path,
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", ROWS)
    out = tmp_path / "out"
    first = batchgen("run", jobs, "--out", out, "--sim", "--no-progress", key=None)
    assert first.returncode == 1, first.stderr
    assert statuses(out) == {
        "child": "skipped",
        "parent": "blocked",
        "grandchild": "skipped",
        "other": "done",
    }
    failed = failed_rows(out)
    assert [(f["id"], f["status"]) for f in failed] == [
        ("child", "skipped"),
        ("parent", "blocked"),
        ("grandchild", "skipped"),
    ]
    assert failed[0]["error"] == {
        "kind": "skipped",
        "http_status": None,
        "message": "parent parent ended blocked",
    }
    assert failed[2]["error"]["message"] == "parent child ended skipped"
    assert failed[0]["images"] == ["@parent"]  # the input format: it can be fed back

    # Nothing fixed: the skipped jobs are kept like the blocked parent, not "changed".
    kept = batchgen("run", jobs, "--out", out, "--sim", "--dry-run", key=None)
    assert kept.returncode == 0, kept.stderr
    assert "0 changed, 0 to retry" in kept.stdout
    assert "1 blocked (kept), 2 skipped (kept)" in kept.stdout

    # Retrying the blocked parent retries the jobs it skipped, down the chain.
    retry = batchgen(
        "run", jobs, "--out", out, "--sim", "--dry-run", "--retry-failed", "--retry-blocked",
        key=None,
    )  # fmt: skip
    assert "0 changed, 3 to retry" in retry.stdout, retry.stdout

    # Fix the parent's prompt: the parent changes, and its skipped chain runs again.
    fixed = [dict(r) for r in ROWS]
    fixed[1]["prompt"] = "a cat"
    write_jobs(jobs, fixed)
    second = batchgen("run", jobs, "--out", out, "--sim", "--no-progress", key=None)
    assert second.returncode == 0, second.stderr
    assert set(statuses(out).values()) == {"done"}
    assert failed_rows(out) == []
    report = json.loads((out / "report.json").read_text())
    assert report["skipped"] == 0
    assert report["requests"] == 1 + 1 + 3  # first run: parent, other; now the chain


async def test_a_skipped_job_waits_while_its_parent_is_kept(tmp_path: Path, sim: Simulator) -> None:
    """A parent kept blocked keeps its children skipped, with no request; retrying
    the parent (still blocked) skips them again with the same reason."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", ROWS)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    assert sim.stats.total == 2
    again = await arun_files([jobs], make_config(out, sim.base_url, dry_run=True))
    assert again.plan.final_kept == {"blocked": 1, "skipped": 2}
    assert again.plan.to_run == 0
    assert statuses(out)["child"] == "skipped"
    retried = await arun_files([jobs], make_config(out, sim.base_url, retry_blocked=True))
    assert (retried.plan.retry, retried.plan.changed) == (3, 0)
    assert sim.stats.total == 3  # the parent only: its children were skipped again
    assert retried.counters.skipped == 2
    assert [f["error"]["message"] for f in failed_rows(out) if f["status"] == "skipped"] == [
        "parent parent ended blocked",
        "parent child ended skipped",
    ]


async def test_a_skipped_job_runs_when_its_parent_was_left_pending(
    tmp_path: Path, sim: Simulator
) -> None:
    """A parent still pending from a stopped run runs again, so its skipped child does."""
    from batchgen.models import Status
    from batchgen.store import Store

    rows = [dict(r) for r in ROWS]
    rows[1]["prompt"] = "a cat [[sim:blockx1]]"  # blocked once, then answered
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    assert statuses(out)["child"] == "skipped"
    with Store(out) as store, store.transaction():
        store.finish("parent", Status.PENDING)  # as a stop leaves a job it did not end
    result = await arun_files([jobs], make_config(out, sim.base_url))
    assert (result.plan.pending, result.plan.retry, result.plan.changed) == (1, 2, 0)
    assert result.exit_code == 0
    assert set(statuses(out).values()) == {"done"}
