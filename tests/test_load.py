"""Load: thousands of jobs at --concurrency 256 with 5 % random faults.

The report's totals equal the input count, every id is in the state exactly
once and in a final state, every `done` job has its image, and the process's
open file descriptors (sampled from /proc while it runs) stay bounded by the
pool, not by the number of jobs. CI runs 5,000 jobs; `scripts/chaos.py load`
runs the same check at 100,000.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchgen.models import FINAL_STATUSES
from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store import Store
from tests.conftest import KEY
from tests.test_chaos import cli, cli_env, image_ok, temporaries

#: 5 % of requests fail at random, over every retryable kind.
LOAD_FAULTS: dict[str, float] = {
    "429": 0.01,
    "500": 0.01,
    "503": 0.01,
    "reset": 0.01,
    "truncate": 0.005,
    "hang": 0.005,
}


@dataclass
class LoadFigures:
    jobs: int
    concurrency: int
    exit_code: int = -1
    seconds: float = 0.0
    sim_requests: int = 0
    recorded_requests: int = 0
    retries: int = 0
    injected: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    max_fds: int = 0
    fd_samples: int = 0
    max_in_flight: int = 0
    images_checked: int = 0

    @property
    def wasted(self) -> int:
        return self.sim_requests - self.recorded_requests

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["wasted"] = self.wasted
        d["faults_injected"] = sum(self.injected.values())
        return d


class FdSampler:
    """Counts /proc/PID/fd entries of a running process every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.max = 0
        self.samples = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                n = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                return
            self.samples += 1
            self.max = max(self.max, n)

    def __enter__(self) -> FdSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def write_load_jobs(path: Path, n: int) -> set[str]:
    ids = set()
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            job_id = f"load-{i:07d}"
            ids.add(job_id)
            fh.write(f'{{"id": "{job_id}", "prompt": "catalogue item {i}"}}\n')
    return ids


def load_run(
    tmp: Path,
    *,
    jobs: int,
    concurrency: int = 256,
    seed: int = 5,
    faults: dict[str, float] | None = None,
    check_every: int = 1,
    log: Callable[[str], None] = lambda s: None,
) -> LoadFigures:
    """One run of `jobs` jobs to completion, then the invariants. `check_every`
    decodes every n-th image (all of them by default)."""
    tmp.mkdir(parents=True, exist_ok=True)
    jobs_file = tmp / "jobs.jsonl"
    ids = write_load_jobs(jobs_file, jobs)
    out = tmp / "out"
    figures = LoadFigures(jobs=jobs, concurrency=concurrency)
    sim_config = SimConfig(
        small_images=True,
        api_key=KEY,
        latency="uniform:0.01:0.05",
        faults=LOAD_FAULTS if faults is None else faults,
        seed=seed,
        retry_delay_s=0.05,
        recent_cap=0,
        stats_cap=jobs + 10,
    )
    with SimulatorThread(sim_config) as sim:
        started = time.monotonic()
        args = cli(jobs_file, out, sim.base_url, "--timeout", "2", concurrency=concurrency)
        proc = subprocess.Popen(
            args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        with FdSampler(proc.pid) as fds:
            _, stderr = proc.communicate(timeout=3600)
        figures.seconds = round(time.monotonic() - started, 1)
        figures.exit_code = proc.returncode
        figures.max_fds, figures.fd_samples = fds.max, fds.samples
        figures.sim_requests = sim.stats.total
        figures.injected = dict(sim.stats.injected)
        figures.max_in_flight = sim.stats.max_in_flight
        assert sim.stats.key_in_url == 0
    log(stderr)
    assert figures.exit_code in (0, 1), stderr
    report = json.loads((out / "report.json").read_text())
    figures.recorded_requests = report["requests"]
    figures.retries = report["retries"]
    finals = {s.value for s in FINAL_STATUSES}
    seen: set[str] = set()
    statuses: dict[str, int] = {}
    with Store(out, readonly=True) as store:
        for n, rec in enumerate(store.records()):
            assert rec.id not in seen, f"{rec.id} twice"
            seen.add(rec.id)
            statuses[rec.status.value] = statuses.get(rec.status.value, 0) + 1
            assert rec.status.value in finals, rec
            if rec.status.value == "done":
                assert rec.files
                path = out / rec.files[0]
                assert path.is_file(), path
                if n % check_every == 0:
                    assert image_ok(path), path
                    figures.images_checked += 1
    figures.statuses = statuses
    assert seen == ids, "jobs lost or invented"
    assert report["total"] == jobs
    assert sum(report[k] for k in ("done", "blocked", "failed", "skipped")) == jobs
    assert report["pending"] == 0
    assert not temporaries(out)
    # Every request is on record: this run was never interrupted.
    assert figures.sim_requests == figures.recorded_requests
    return figures


@pytest.mark.slow
def test_load_5000_jobs_at_concurrency_256(tmp_path: Path) -> None:
    figures = load_run(tmp_path, jobs=5000, concurrency=256)
    print(json.dumps(figures.as_dict()))
    assert figures.fd_samples > 10
    assert figures.max_fds <= 256 + 64, figures.as_dict()
    assert figures.max_in_flight <= 256
    assert figures.statuses.get("done", 0) >= 4990
    assert sum(figures.injected.values()) > 100
