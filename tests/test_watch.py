"""Watching a night run: the report files are refreshed during the run, `batchgen
report` and `batchgen status` read a folder a run holds, the budget line names each
figure once, the dry run estimates the duration at --rpm, the simulator says what
it served, and the end of a run names both report files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, ROOT, batchgen, write_jobs


def read_report(out: Path) -> dict[str, Any] | None:
    try:
        report: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return report


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    """Poll `check()` until it is truthy (the run is another process: no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_the_report_is_refreshed_during_the_run_and_readable_while_it_holds_the_folder(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p {i}"} for i in range(10)]
    rows.append({"id": "slow", "prompt": "[[sim:hang]] the last one"})
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    env = {**os.environ, "GEMINI_API_KEY": KEY}
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        argv = [
            sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(out),
            "--base-url", sim.base_url, "--report-every", "0.2", "--max-attempts", "1",
            "--no-progress",
        ]  # fmt: skip
        run = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # The hanging job holds the run open: its report is the refresh's.
            live = wait_for(lambda: (r := read_report(out)) and r["done"] == 10 and r)
            assert run.poll() is None
            assert live["pending"] == 1
            assert (out / "report.html").is_file()
            status = batchgen("status", out)
            assert status.returncode == 0, status.stderr
            assert "10 done" in status.stdout
            report = batchgen("report", out)
            assert report.returncode == 0, report.stderr
            assert "report.html" in report.stdout
        finally:
            sim.stop()  # the hanging request is dropped: the job fails, the run ends
            _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    final = read_report(out)
    assert final is not None
    assert (final["done"], final["failed"], final["pending"]) == (10, 1, 0)
    assert f"report: {out / 'report.json'}; gallery: {out / 'report.html'}" in stderr


def test_the_budget_line_names_spent_reserved_and_limit_once(tmp_path: Path) -> None:
    rows = [{"id": f"p{i}", "prompt": f"product {i}"} for i in range(60)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    done = batchgen(
        "run", jobs, "--out", out, "--sim", "--budget", "1", "--concurrency", "64", "--no-progress"
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("reached") == 1, done.stderr  # the stop is said once
    report = read_report(out)
    assert report is not None
    spent = re.findall(r"\$([0-9.]+) spent|spent \$([0-9.]+)", done.stderr)
    assert len(spent) == 1, done.stderr  # one figure, named once
    figure = float(next(x for x in spent[0] if x))
    assert figure == round(report["cost_usd"], 2)
    line = re.search(
        r"budget \$1\.00 reached: \$([0-9.]+) spent in this folder, \$([0-9.]+) left; "
        r"the next request reserves up to \$([0-9.]+)",
        done.stderr,
    )
    assert line is not None, done.stderr
    left, reserve = float(line[2]), float(line[3])
    assert left == round(1.0 - figure, 2)
    assert left < reserve  # reached in truth: the next request's worst case does not fit
    assert report["cost_usd"] <= 1.0


def test_the_dry_run_gives_a_lower_bound_of_the_duration_at_rpm(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": "p"} for i in range(600)])
    done = batchgen("run", jobs, "--out", tmp_path / "out", "--dry-run", "--rpm", "20")
    assert done.returncode == 0, done.stderr
    assert "at --rpm 20 it takes at least 30 min (a lower bound" in done.stdout


def test_sim_serve_says_what_it_served_when_stopped(tmp_path: Path) -> None:
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sim", "serve", "--port", "0", "--small-images"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        body = json.dumps({"contents": [{"parts": [{"text": "a red apple"}]}]}).encode()
        request = urllib.request.Request(
            f"{url}/v1beta/models/gemini-2.5-flash-image:generateContent",
            data=body,
            headers={"Content-Type": "application/json", "x-goog-api-key": "k"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0
    assert "served 1 request (1 ok)" in stderr


def test_the_end_of_a_run_says_how_many_platform_sizes_were_upscaled(tmp_path: Path) -> None:
    # The simulator's small images (16 px) are smaller than any platform preset.
    rows = [{"id": f"s{i}", "prompt": f"p {i}", "sizes": ["800x800"]} for i in range(3)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        done = batchgen("run", jobs, "--out", tmp_path / "out", "--base-url", sim.base_url)
    assert done.returncode == 0, done.stderr
    assert "3 platform sizes were upscaled beyond the model's output; see report.json" in (
        done.stderr
    )
