"""SIGTERM and Ctrl-C: the first drains in-flight requests, the second stops at once.

The CLI runs as a subprocess against a simulator thread; the tests wait for a
known number of requests to be in flight (a condition, not a sleep) before
signalling, then check the exit code, the message, the state and that a
re-run finishes the rest without paying twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY
from tests.test_chaos import check_folder, cli, cli_env, read_store, temporaries, wait_for

SIGNALS = [signal.SIGTERM, signal.SIGINT]


def _jobs(path: Path, n: int, marker: str = "") -> set[str]:
    rows = [{"id": f"j{i:03d}", "prompt": f"signal test {i}{marker}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {r["id"] for r in rows}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_first_signal_drains_in_flight_and_exits_130(tmp_path: Path, sig: int) -> None:
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 40)
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY, latency=1.0)) as sim:
        proc = subprocess.Popen(
            cli(jobs, out, sim.base_url, concurrency=4),
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for(lambda: sim.stats.in_flight == 4, proc, time.monotonic() + 60)
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr
        assert "Traceback" not in stderr
        # The four requests in flight were answered and kept; nothing new was sent.
        assert sim.stats.total == 4
        view = check_folder(out, ids, final=False)
        assert view is not None
        assert (view.statuses["done"], view.statuses["pending"]) == (4, 36)
        report = json.loads((out / "report.json").read_text())
        assert (report["done"], report["pending"]) == (4, 36)
        # The same command finishes the rest, and only the rest.
        again = subprocess.run(
            cli(jobs, out, sim.base_url), env=cli_env(), capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr
        assert sim.stats.total == 40
    check_folder(out, ids, final=True)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_second_signal_stops_at_once_with_consistent_state(tmp_path: Path, sig: int) -> None:
    """Every first request hangs: draining would wait the whole grace period, the
    second signal cancels at once; the folder is consistent and resumable."""
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 12, " [[sim:hangx1]]")
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        proc = subprocess.Popen(
            cli(jobs, out, sim.base_url, "--timeout", "600", concurrency=4),
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert proc.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
        reader.start()
        try:
            assert wait_for(lambda: sim.stats.in_flight == 4, proc, time.monotonic() + 60)
            proc.send_signal(sig)
            # Two signals sent back to back may reach the process as one (POSIX
            # merges a pending signal): wait until the first was heard.
            heard = wait_for(
                lambda: any("interrupt again to stop at once" in x for x in lines),
                proc,
                time.monotonic() + 30,
            )
            assert heard, "".join(lines)
            time_first = time.monotonic()
            proc.send_signal(sig)
            proc.wait(timeout=60)
            stopped_in = time.monotonic() - time_first
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
        stderr = "".join(lines)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "Task was destroyed" not in stderr
        assert stopped_in < 5.0, f"took {stopped_in:.1f}s: the grace period is 10 s"
        assert sim.stats.total == 4
        view = check_folder(out, ids, final=False)
        assert view is not None
        assert view.statuses == {"pending": 12}
        assert not temporaries(out)
        report = json.loads((out / "report.json").read_text())
        assert report["pending"] == 12
        # Resumable: the lock is free and the rest of the run completes.
        again = subprocess.run(
            cli(jobs, out, sim.base_url, "--timeout", "1"),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        # The 4 cancelled requests, then the other 8 jobs' first (hung) requests
        # cut by the 1 s timeout, and one answer per job.
        assert sim.stats.total == 4 + 8 + 12
    final = read_store(out)
    assert final is not None
    assert final.statuses == {"done": 12}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_planning_is_an_interruption_too(tmp_path: Path, sig: int) -> None:
    """Before the first request (validating and planning a big file) a signal
    also ends the run with 130 and a consistent, resumable folder."""
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 40_000)
    out = tmp_path / "out"
    state = out / ".batchgen" / "state.sqlite"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY)) as sim:
        proc = subprocess.Popen(
            cli(jobs, out, sim.base_url),
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for(state.exists, proc, time.monotonic() + 60)
            assert sim.stats.total == 0
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130, (proc.returncode, stderr)
        assert "interrupted" in stderr
        assert "Traceback" not in stderr
        assert sim.stats.total == 0
        check_folder(out, ids, final=False)
        again = subprocess.run(
            cli(jobs, out, sim.base_url, "--limit", "10"),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        assert sim.stats.total == 10
