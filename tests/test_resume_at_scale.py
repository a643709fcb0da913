"""A settled folder at scale, its state in PostgreSQL and its images on S3: the same
command again, through the CLI, finds nothing to do (scale-out test 8).

The folder is built through the CLI too, as a user builds it: `batchgen run`
with `--state postgresql://…` and `--out s3://…` (moto on loopback, the
`s3` fixture) against the simulator, to the end. The re-run must end in
≤ 15 s of wall time (the process's start included), send no request, and
write no object: moto counts every PUT, POST and DELETE it answers, in
whichever process they come from. Each run reports its own peak RSS: test
9's driver bar, ≤ 200 MB, holds for the build once it has planned every job
into PostgreSQL by COPY, and for the re-runs from start to end.

Size: a few thousand jobs in CI; ``BATCHGEN_TEST_SIZE=full`` (tests/sizes.py)
builds the design's 100,000-job folder once and runs the same checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, ROOT, TEST_MODEL
from tests.s3server import keys
from tests.sizes import sized
from tests.test_chaos import cli_env

JOBS = sized(3_000, 100_000)
NOOP_LIMIT_S = 15.0
RSS_LIMIT_MB = 200.0

#: `python -m batchgen`, saying on stderr its peak RSS once the run is planned (test
#: 9's bar: planning into PostgreSQL by COPY) and as it exits: VmHWM, the high-water
#: mark of this program's own memory (`ru_maxrss` would carry over the RSS of the
#: test process it was forked from, moto's objects included). The planning step is
#: found by its name in the runner: a rename fails here, loudly, not silently.
PEAK = """
import sys
import batchgen.engine.runner as runner
def peak(what):
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(what, kb / 1024, file=sys.stderr)
plan_run = runner._plan_run
def planned(*args, **kwargs):
    try:
        return plan_run(*args, **kwargs)
    finally:
        peak("planned-rss-mb")
runner._plan_run = planned
from batchgen.cli.main import main
sys.argv[0] = "batchgen"
try:
    sys.exit(main())
finally:
    peak("peak-rss-mb")
"""


@dataclass(frozen=True)
class Peaks:
    """A CLI run's peak RSS in MB: once planned (None: it did not plan), and in all."""

    planned: float | None
    whole: float


def run_cli(argv: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], Peaks]:
    """The CLI in its own process, with its peak RSS read from its last words."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv], env=cli_env(), cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip
    said = dict(line.split()[:2] for line in done.stderr.splitlines() if "-rss-mb " in line)
    assert "peak-rss-mb" in said, done.stderr
    planned = said.get("planned-rss-mb")
    return done, Peaks(None if planned is None else float(planned), float(said["peak-rss-mb"]))


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 5400))
def test_a_settled_folder_on_postgresql_and_s3_resumes_as_a_no_op(
    tmp_path: Path, s3: Any, pg_url: str
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    with jobs.open("w", encoding="utf-8") as fh:
        for i in range(JOBS):
            fh.write(json.dumps({"id": f"s{i:06d}", "prompt": f"a settled product {i}"}) + "\n")
    prefix = f"scale-{uuid.uuid4().hex[:6]}"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        argv = [
            "run", str(jobs), "--out", f"s3://{s3.bucket}/{prefix}", "--state", pg_url,
            "--base-url", sim.base_url, "--model", TEST_MODEL, "--no-progress",
            "--concurrency", "64", "--rpm", "1000000", "--report-every", "0",
        ]  # fmt: skip
        t0 = time.perf_counter()
        built, built_rss = run_cli(argv, timeout=sized(240, 5000))
        assert built_rss.planned is not None
        build_s = time.perf_counter() - t0
        assert built.returncode == 0, built.stderr
        assert sim.stats.total == JOBS
        images = [k for k in keys(s3.bucket, prefix + "/images/")]
        assert len(images) == JOBS

        # The same command: the inputs' digest matches the settled folder's (the fast
        # path). Then the same jobs in another order, from another file: no digest
        # to match, so the planner looks every job up and finds it done.
        shuffled = tmp_path / "reordered.jsonl"
        shuffled.write_text("".join(reversed(jobs.read_text().splitlines(True))))
        runs = {}
        for name, argv_i in (("same", argv), ("reordered", [*argv[:1], str(shuffled), *argv[2:]])):
            written = s3.server.written
            t0 = time.perf_counter()
            again, again_rss = run_cli(argv_i, timeout=120)
            took = time.perf_counter() - t0
            assert again.returncode == 0, again.stderr
            assert sim.stats.total == JOBS  # not one request more
            assert s3.server.written - written == 0  # no PUT, POST or DELETE
            assert took <= NOOP_LIMIT_S, (name, took)
            runs[name] = (took, again_rss.whole)
    # Test 9: planning every job into PostgreSQL (the build's COPY, the reordered
    # run's look-ups) within the bar; the no-op runs within it from start to end.
    assert built_rss.planned <= RSS_LIMIT_MB, built_rss
    assert max(rss for _, rss in runs.values()) <= RSS_LIMIT_MB, runs
    print(
        f"\nno-op resume of {JOBS:,} jobs (PostgreSQL + S3, through the CLI), 0 requests, "
        f"0 objects written: the same command {runs['same'][0]:.2f} s (peak RSS "
        f"{runs['same'][1]:.0f} MB), the jobs reordered (every one planned) "
        f"{runs['reordered'][0]:.2f} s ({runs['reordered'][1]:.0f} MB); limit "
        f"{NOOP_LIMIT_S:.0f} s; the build: {build_s:.1f} s, peak RSS {built_rss.planned:.0f} MB "
        f"planned, {built_rss.whole:.0f} MB at the end (the jobs run, the reports written)"
    )
