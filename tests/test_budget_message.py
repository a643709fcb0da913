"""The end-of-run message after a budget stop prices the jobs left as the run
priced its requests: with `--prices` and with each job's model (else `--model`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.engine.pricing import TOKENS_PER_IMAGE
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, batchgen, write_jobs

#: Ten times the list price of an image; no input price, so that the
#: estimate of a job left is exactly one image at this rate.
OUTPUT_PER_M = 300.0
PER_IMAGE = TOKENS_PER_IMAGE * OUTPUT_PER_M / 1e6


def prices(path: Path, model: str) -> Path:
    path.write_text(json.dumps({model: {"input_per_m": 0.0, "output_per_m": OUTPUT_PER_M}}))
    return path


def left_estimate(stderr: str) -> tuple[int, float]:
    found = re.search(r"the (\d+) jobs left would cost about \$([0-9.]+)", stderr)
    assert found is not None, stderr
    return int(found[1]), float(found[2])


def check_budget_stop(tmp_path: Path, *args: str, model: str) -> None:
    rows = [{"id": f"p{i}", "prompt": f"product {i}"} for i in range(12)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    table = prices(tmp_path / "prices.json", model)
    done = batchgen(
        "run", jobs, "--out", out, *args, "--model", model, "--prices", table,
        "--budget", "2", "--concurrency", "2", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert 0 < report["pending"] < len(rows)
    left, usd = left_estimate(done.stderr)
    assert left == report["pending"]
    assert usd == pytest.approx(left * PER_IMAGE, abs=0.006)


def test_budget_stop_prices_what_is_left_with_the_prices_file(tmp_path: Path) -> None:
    check_budget_stop(tmp_path, "--sim", model="gemini-2.5-flash-image")


@pytest.fixture
def acme_sim() -> Iterator[SimulatorThread]:
    config = SimConfig(small_images=True, api_key=KEY, models=("acme-image-2",))
    with SimulatorThread(config) as sim:
        yield sim


def test_budget_stop_prices_what_is_left_at_the_runs_model(
    tmp_path: Path, acme_sim: SimulatorThread
) -> None:
    check_budget_stop(tmp_path, "--base-url", acme_sim.base_url, model="acme-image-2")
