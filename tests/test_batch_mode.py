"""Batch Mode (``--mode batch``) end to end against the simulator's Files and Batches APIs.

Fast runs use an in-process simulator whose clock runs ~10 simulated hours a
real second, so a batch passes in milliseconds. The ``--no-wait`` cycle, an
expired batch and one cancelled from outside run the CLI as a subprocess
against a simulator thread whose clock stands still until the test moves it
(``POST /_sim/clock``), as a cron loop would meet them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.engine.runner import arun_files
from batchgen.errors import EXIT_ABORTED, EXIT_STILL_RUNNING
from batchgen.output.batch_api import parse_operation, state_name
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.sim.batches import BATCHES_KEY
from batchgen.store import Store
from tests.conftest import KEY, TEST_MODEL, make_config, write_jobs
from tests.test_chaos import cli_env, image_ok

FAST = {"time_scale": 36000.0, "batch_pending_s": 60.0, "batch_running_s": 600.0}


@pytest.fixture
async def fast_sim() -> Any:
    config = SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05, **FAST)
    async with Simulator(config) as s:
        yield s


@pytest.fixture
def still_sim() -> Iterator[SimulatorThread]:
    """A simulator whose batches wait until the test advances the clock."""
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        yield sim


def rows(n: int, **extra: str) -> list[dict[str, Any]]:
    return [{"id": f"job-{i:03d}", "prompt": f"product {i}", **extra} for i in range(n)]


def test_state_names_and_stats_parse_both_spellings() -> None:
    assert state_name("BATCH_STATE_RUNNING") == state_name("JOB_STATE_RUNNING") == "RUNNING"
    info = parse_operation(
        {
            "name": "batches/x",
            "metadata": {
                "displayName": "d",
                "state": "JOB_STATE_SUCCEEDED",
                "batchStats": {"requestCount": "3", "successfulRequestCount": "3"},
                "output": {"responsesFile": "files/batch-x"},
            },
            "done": True,
        }
    )
    assert info.ended
    assert info.responses_file == "files/batch-x"
    assert info.stats["failedRequestCount"] == 0
    assert info.stats["requestCount"] == 3


async def test_batch_mode_runs_every_job_at_half_price(tmp_path: Path, fast_sim: Simulator) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            *rows(25),
            {"id": "blocked", "prompt": "nope [[sim:block]]"},
            {"id": "broken", "prompt": "always down [[sim:500]]"},
        ],
    )
    out = tmp_path / "out"
    config = make_config(
        out, fast_sim.base_url, mode="batch", batch_size=10, poll_interval=0.02, max_attempts=2
    )
    result = await arun_files([jobs], config)
    assert result.exit_code == 1  # one blocked, one failed
    report = json.loads((out / "report.json").read_text())
    assert (report["done"], report["blocked"], report["failed"]) == (25, 1, 1)
    by_id = {row["id"]: row for row in report["jobs"]}
    assert by_id["broken"]["attempts"] == 2, "the 500 went into one follow-up batch"
    assert by_id["broken"]["error"]["kind"] == "server_error"
    for i in range(25):
        row = by_id[f"job-{i:03d}"]
        assert row["mode"] == "batch"
        assert row["requests"] == 1
        assert image_ok(out / row["files"][0])
    spend = report["by_mode"]["batch"]
    assert spend["cost_usd"] == pytest.approx(spend["live_cost_usd"] / 2, rel=1e-6)
    # 27 jobs in batches of 10: 3, then the 500's follow-up.
    assert fast_sim.stats.by_outcome["batch_created"] == 4
    with Store(out, readonly=True) as store:
        batches = store.batches()
    assert [b.wave for b in batches] == [1, 1, 1, 2]
    assert all(b.closed for b in batches)
    assert (out / "report.html").is_file()
    assert fast_sim.stats.key_in_url == 0


async def test_chained_jobs_go_in_a_later_wave(tmp_path: Path, fast_sim: Simulator) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        [
            {"id": "base", "prompt": "a chair"},
            {"id": "edit", "prompt": "make it red", "images": "@base"},
        ],
    )
    out = tmp_path / "out"
    config = make_config(out, fast_sim.base_url, mode="batch", poll_interval=0.02)
    result = await arun_files([jobs], config)
    assert result.exit_code == 0
    with Store(out, readonly=True) as store:
        waves = {b.wave: b.jobs for b in store.batches()}
    assert waves == {1: 1, 2: 1}


async def test_a_shared_reference_is_uploaded_once(tmp_path: Path, fast_sim: Simulator) -> None:
    from tests.test_sim_batches import noisy_png

    photo = tmp_path / "photo.png"
    photo.write_bytes(noisy_png(3, side=64))
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(6, images=str(photo)))
    out = tmp_path / "out"
    config = make_config(out, fast_sim.base_url, mode="batch", poll_interval=0.02)
    assert (await arun_files([jobs], config)).exit_code == 0
    # One upload of the photo and one of the input file.
    assert fast_sim.stats.by_outcome["upload_final"] == 2


def run_cli(jobs: Path, out: Path, base_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out)]
    args += ["--base-url", base_url, "--mode", "batch", "--model", TEST_MODEL, "--no-progress"]
    args += ["--poll-interval", "0.05", *extra]
    return subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=120)


def post(sim: SimulatorThread, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        sim.base_url + path,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"x-goog-api-key": KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def test_no_wait_submits_then_collects(tmp_path: Path, still_sim: SimulatorThread) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(12))
    out = tmp_path / "out"
    first = run_cli(jobs, out, still_sim.base_url, "--no-wait", "--batch-size", "5")
    # The run that submits exits 0; the later ones 4 until every job has ended.
    assert first.returncode == 0, first.stderr
    assert "submitted 3 batches (12 jobs)" in first.stderr
    again = run_cli(jobs, out, still_sim.base_url, "--no-wait", "--batch-size", "5")
    assert again.returncode == EXIT_STILL_RUNNING, again.stderr
    assert "still pending" in again.stderr
    assert still_sim.stats.by_outcome["batch_created"] == 3, "nothing submitted twice"
    listing = subprocess.run(
        [sys.executable, "-m", "batchgen", "batches", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listing.stdout.count("pending (open)") == 3
    post(still_sim, "/_sim/clock", {"advance": 700})
    done = run_cli(jobs, out, still_sim.base_url, "--no-wait", "--batch-size", "5")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 12
    assert report["requests"] == 12
    assert still_sim.stats.by_outcome["batch_created"] == 3


def test_an_expired_batch_is_resubmitted_once(tmp_path: Path, still_sim: SimulatorThread) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(4))
    out = tmp_path / "out"
    assert run_cli(jobs, out, still_sim.base_url, "--no-wait").returncode == 0
    (batch,) = still_sim.simulator.app[BATCHES_KEY].batches.values()
    batch.ending = "expired"
    post(still_sim, "/_sim/clock", {"advance": 49 * 3600})
    second = run_cli(jobs, out, still_sim.base_url, "--no-wait")
    assert second.returncode == EXIT_STILL_RUNNING, second.stderr
    assert "expired" in second.stderr
    assert "attempts not counted" in second.stderr
    post(still_sim, "/_sim/clock", {"advance": 700})
    third = run_cli(jobs, out, still_sim.base_url, "--no-wait")
    assert third.returncode == 0, third.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 4
    assert {row["attempts"] for row in report["jobs"]} == {1}
    assert still_sim.stats.by_outcome["batch_created"] == 2


def test_a_batch_cancelled_outside_ends_with_exit_3(
    tmp_path: Path, still_sim: SimulatorThread
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(3))
    out = tmp_path / "out"
    assert run_cli(jobs, out, still_sim.base_url, "--no-wait").returncode == 0
    (batch_id,) = still_sim.simulator.app[BATCHES_KEY].batches
    post(still_sim, f"/v1beta/batches/{batch_id}:cancel")
    ended = run_cli(jobs, out, still_sim.base_url)
    assert ended.returncode == EXIT_ABORTED, ended.stderr
    assert "cancelled" in ended.stderr
    assert "pending again" in ended.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["pending"] == 3


def test_batchgen_cancel_puts_jobs_back(tmp_path: Path, still_sim: SimulatorThread) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(3))
    out = tmp_path / "out"
    assert run_cli(jobs, out, still_sim.base_url, "--no-wait").returncode == 0
    cancel = subprocess.run(
        [sys.executable, "-m", "batchgen", "cancel", str(out), "--base-url", still_sim.base_url],
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert cancel.returncode == 0, cancel.stderr
    assert "3 jobs pending" in cancel.stdout
    (batch,) = still_sim.simulator.app[BATCHES_KEY].batches.values()
    assert batch.state == "BATCH_STATE_CANCELLED"
    with Store(out, readonly=True) as store:
        assert not store.batches(open_only=True)


async def test_budget_reserves_a_wave_before_submitting_it(
    tmp_path: Path, fast_sim: Simulator
) -> None:
    """Each job's worst case (two images at the Batch rate, ~$0.04 here) is reserved
    before its batch is submitted: $0.05 lets one job in, and once its answer is
    collected what is left no longer fits the next one: exit 3, the rest pending."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows(5))
    out = tmp_path / "out"
    config = make_config(out, fast_sim.base_url, mode="batch", poll_interval=0.02, budget=0.05)
    result = await arun_files([jobs], config)
    assert result.exit_code == EXIT_ABORTED
    assert result.stop is not None
    assert "budget $0.05 reached" in result.stop.message
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 1
    assert report["pending"] == 4
    assert report["cost_usd"] <= 0.05
    assert fast_sim.stats.by_outcome["batch_created"] == 1
