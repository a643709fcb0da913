"""The recorder process (`store/recorder.py`): the pool's job rows and small images
committed by a second process. Real runs of the CLI against the simulator, with
the recorder forced on (`BATCHGEN_RECORDER=1`); kills, a killed recorder,
Ctrl-C and identical requests, each checked against the folder's state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from batchgen.sim import SimConfig, SimulatorThread
from batchgen.store import recorder
from tests.conftest import KEY
from tests.test_chaos import chaos_run, check_folder, cli, cli_env, read_store, wait_for


@pytest.fixture(autouse=True)
def _recorder_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recorder.ENV, "1")


def _jobs(path: Path, n: int, *, distinct: int | None = None) -> set[str]:
    rows = [
        {"id": f"r{i:04d}", "prompt": f"recorder product {i % (distinct or n)}"} for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {r["id"] for r in rows}


def _children(pid: int) -> list[int]:
    """The process's children (Linux: /proc/PID/task/*/children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found += [int(p) for p in text.split()]
    return found


def test_wanted_by_size_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(recorder.ENV)
    assert not recorder.wanted(recorder.MIN_JOBS - 1)
    assert recorder.wanted(recorder.MIN_JOBS)
    monkeypatch.setenv(recorder.ENV, "0")
    assert not recorder.wanted(10**6)
    monkeypatch.setenv(recorder.ENV, "1")
    assert recorder.wanted(1)


def test_a_run_through_the_recorder_ends_every_job_with_its_image(tmp_path: Path) -> None:
    """Identical prompts too: the second of each pair is done from the first's
    answer, found among the rows the recorder has not yet committed."""
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 400, distinct=200)
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        done = subprocess.run(
            cli(jobs, out, sim.base_url, concurrency=32),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        sent = sim.stats.total
    assert done.returncode == 0, done.stderr
    view = check_folder(out, ids, final=True)
    assert view is not None
    assert view.statuses == {"done": 400}
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 400
    assert sent == report["requests"] == 200
    assert report["cache"]["hits"] == 200
    assert not [p for p in out.rglob("*") if p.name.startswith(".part-")]


def test_kills_with_the_recorder_resend_no_more_than_the_requests_in_flight(
    tmp_path: Path,
) -> None:
    """The chaos test's promise with the recorder on: seeded SIGKILLs of the run
    (the recorder reads a closed pipe and ends), faults and retries included;
    every job ends in one state with its whole image, and only the requests in
    flight at a kill are sent again (a unit sent to the recorder keeps its
    slots until it is committed)."""
    figures = chaos_run(tmp_path, jobs=300, kills=6, seed=20261201, concurrency=8)
    assert figures.kills == 6
    assert figures.final_status.get("done", 0) >= 295


def test_a_killed_recorder_stops_the_run_and_the_same_command_finishes(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 3000)
    out = tmp_path / "out"
    config = SimConfig(small_images=True, api_key=KEY, latency="uniform:0.005:0.02")
    with SimulatorThread(config) as sim:
        args = cli(jobs, out, sim.base_url, concurrency=16)
        proc = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE, text=True)
        try:
            found = wait_for(lambda: sim.stats.total >= 200, proc, time.monotonic() + 60)
            assert found, "the run ended or stalled before 200 requests"
            children = _children(proc.pid)
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 3, err
        assert "the process writing the state stopped unexpectedly" in err
        assert "run the same command again" in err
        assert "Traceback" not in err
        check_folder(out, ids, final=False)
        again = subprocess.run(
            args, env=cli_env(), capture_output=True, text=True, timeout=120, check=False
        )
    assert again.returncode == 0, again.stderr
    check_folder(out, ids, final=True)
    view = read_store(out)
    assert view is not None
    assert view.statuses == {"done": 3000}


def test_ctrl_c_with_the_recorder_drains_and_the_folder_resumes(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: the recorder
    ignores it and commits what the run hands it while the run drains."""
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 3000)
    out = tmp_path / "out"
    config = SimConfig(small_images=True, api_key=KEY, latency="uniform:0.005:0.02")
    with SimulatorThread(config) as sim:
        args = cli(jobs, out, sim.base_url, concurrency=16)
        proc = subprocess.Popen(
            args, env=cli_env(), stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            found = wait_for(lambda: sim.stats.total >= 200, proc, time.monotonic() + 60)
            assert found, "the run ended or stalled before 200 requests"
            os.killpg(proc.pid, signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        view = check_folder(out, ids, final=False)
        assert view is not None
        # Everything the server answered before the drain ended is on record.
        assert sim.stats.total == view.requests, (sim.stats.total, view.requests)
        again = subprocess.run(
            args, env=cli_env(), capture_output=True, text=True, timeout=120, check=False
        )
    assert again.returncode == 0, again.stderr
    check_folder(out, ids, final=True)
