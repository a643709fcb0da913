"""Whole runs on a PostgreSQL state: the same results as SQLite, `status` and
`report` from the state alone, no key in the database, a no-op resume at scale."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchgen.engine.runner import arun_files
from batchgen.models import FINAL_STATUSES, Status
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.store.open import open_state
from tests.conftest import KEY, make_config, write_jobs
from tests.test_chaos import (
    CHAOS_FAULTS,
    cli_env,
    image_ok,
    sent_more,
    temporaries,
    wait_for,
    write_chaos_jobs,
)
from tests.test_chaos import cli as cli_command


def marked_jobs(n: int = 60) -> Iterator[dict[str, Any]]:
    """Every outcome the equivalence must hold for, spread over `n` jobs."""
    markers = ["", "[[sim:503x2]]", "[[sim:429x1]]", "[[sim:block]]", "[[sim:text]]",
               "[[sim:400]]", "", "[[sim:500x1]]"]  # fmt: skip
    for i in range(n):
        tags = ["even" if i % 2 == 0 else "odd", f"t{i % 3}"]
        yield {"id": f"m{i:03d}", "prompt": f"job {i} {markers[i % len(markers)]}", "tags": tags}
    for i in range(6):  # duplicate prompts: one request each pair
        yield {"id": f"dup{i}", "prompt": f"the same picture {i // 2}"}
    for c in range(3):  # chains of three; one whose root is blocked
        root = "[[sim:block]]" if c == 2 else ""
        yield {"id": f"c{c}a", "prompt": f"chain {c} root {root}"}
        yield {"id": f"c{c}b", "prompt": f"chain {c} mid", "images": [f"@c{c}a"]}
        yield {"id": f"c{c}c", "prompt": f"chain {c} end", "images": [f"@c{c}b"]}


def _sim() -> Simulator:
    return Simulator(SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05))


async def run_once(jobs: Path, out: Path, state: str | None, **options: Any) -> int:
    # A fixed rate far above what the test sends (the adaptive one would learn a
    # quota from the 429s and pace the test for minutes; see test_retried.py).
    options.setdefault("rpm", 60_000)
    async with _sim() as sim:
        config = make_config(out, sim.base_url, state=state, max_attempts=3, **options)
        result = await arun_files([jobs], config)
    return result.exit_code


#: What differs between two runs of the same jobs: times, rates, where the folder is.
_TIMES = {"started_at", "finished_at", "elapsed_s", "first_started", "last_finished",
          "generated_at", "images_per_minute", "out"}  # fmt: skip


def timeless(value: Any) -> Any:
    """A report without its times; sums of costs to 1e-4 (the two databases add
    the same float costs in another order, which moves the 6th decimal)."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if k not in _TIMES}
    if isinstance(value, list):
        return [timeless(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    return value


def per_id(out: Path, state: str | None) -> dict[str, tuple[Any, ...]]:
    with open_state(out, state, readonly=True) as store:
        return {
            r.id: (r.status, r.error.kind if r.error else None, r.attempts, r.requests, r.files)
            for r in store.records()
        }


async def test_a_run_on_postgresql_ends_as_on_sqlite(tmp_path: Path, pg_url: str) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs())
    lite, pg = tmp_path / "lite", tmp_path / "pg"
    assert await run_once(jobs, lite, None) == await run_once(jobs, pg, pg_url) == 1
    assert per_id(lite, None) == per_id(pg, pg_url)
    reports = [json.loads((out / "report.json").read_text()) for out in (lite, pg)]
    assert timeless(reports[0]) == timeless(reports[1])
    failed = [set((out / "failed.jsonl").read_text().splitlines()) for out in (lite, pg)]
    assert failed[0] == failed[1]
    assert len(failed[0]) > 5
    # The same command again: nothing to do, on both alike.
    assert await run_once(jobs, lite, None) == await run_once(jobs, pg, pg_url)
    assert per_id(lite, None) == per_id(pg, pg_url)


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchgen", *argv], capture_output=True, text=True, timeout=120
    )


async def test_status_and_report_from_the_state_alone(tmp_path: Path, pg_url: str) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs(16))
    await run_once(jobs, tmp_path / "run", pg_url)
    elsewhere = tmp_path / "another-machine"
    status = cli("status", str(elsewhere), "--state", pg_url)
    assert status.returncode == 0, status.stderr
    here = cli("status", str(tmp_path / "run"), "--state", pg_url)
    assert status.stdout == here.stdout
    assert "done" in status.stdout
    elsewhere.mkdir()
    report = cli("report", str(elsewhere), "--state", pg_url)
    assert report.returncode == 0, report.stderr
    ours, theirs = (
        json.loads((d / "report.json").read_text()) for d in (tmp_path / "run", elsewhere)
    )
    assert timeless(ours) == timeless(theirs)


async def test_the_key_is_nowhere_in_the_database(
    tmp_path: Path, pg_url: str, pg_server: Any
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", marked_jobs(16))
    await run_once(jobs, tmp_path / "out", pg_url)
    dump = pg_server.dump(pg_url)
    assert "m000" in dump  # the dump holds the jobs
    assert KEY not in dump


@pytest.mark.timeout(600)
async def test_a_settled_10k_folder_resumes_as_a_no_op(tmp_path: Path, pg_url: str) -> None:
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", ({"id": f"j{i}", "prompt": f"p {i}"} for i in range(10_000))
    )
    out = tmp_path / "out"
    assert await run_once(jobs, out, pg_url, concurrency=64, thumbnails=False) == 0
    async with _sim() as sim:
        config = make_config(out, sim.base_url, state=pg_url)
        t0 = time.perf_counter()
        result = await arun_files([jobs], config)
        took = time.perf_counter() - t0
        assert sim.stats.total == 0
    assert result.exit_code == 0
    assert result.plan.done == 10_000
    assert took < 15, took
    print(f"no-op resume of 10,000 jobs on PostgreSQL: {took:.2f} s")


@pytest.mark.timeout(600)
def test_resume_after_sigkills_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """A smaller chaos than test_chaos.py's: the CLI killed three times mid-flight
    on a faulty server, then run to the end; every job ends once, every done
    image decodes, and no more was sent than what the kills cut off in flight."""
    jobs_file = tmp_path / "jobs.jsonl"
    ids = set(write_chaos_jobs(jobs_file, 150))
    out, kills, concurrency = tmp_path / "out", 3, 8
    sim_config = SimConfig(
        small_images=True, api_key=KEY, latency="uniform:0.04:0.16",
        faults=dict(CHAOS_FAULTS), seed=7, retry_delay_s=0.05,
    )  # fmt: skip
    with SimulatorThread(sim_config) as sim:
        command = cli_command(
            jobs_file, out, sim.base_url, "--timeout", "1", "--state", pg_url,
            concurrency=concurrency,
        )  # fmt: skip
        for _ in range(kills):
            before = sim.stats.total
            proc = subprocess.Popen(
                command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                sending = functools.partial(sent_more, sim, before + 15)
                assert wait_for(sending, proc, time.monotonic() + 60), "the run ended too soon"
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        final = subprocess.run(
            command, env=cli_env(), capture_output=True, text=True, timeout=500, check=False
        )
        assert final.returncode in (0, 1), final.stderr
        sent = sim.stats.total
    with open_state(out, pg_url, readonly=True) as store:
        records = list(store.records())
    assert sorted(r.id for r in records) == sorted(ids)
    assert all(r.status in FINAL_STATUSES for r in records)
    done = [r for r in records if r.status is Status.DONE]
    assert done
    assert all(image_ok(out / r.files[0].split("#")[0]) for r in done)
    assert not temporaries(out)
    on_record = sum(r.requests for r in records)
    assert 0 <= sent - on_record <= kills * concurrency, (sent, on_record)
