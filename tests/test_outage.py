"""No silent stalls: an endpoint that never answered stops the run naming the host
and the error; one that answered and went away is waited for up to --max-outage;
either way every unfinished job stays pending (the network is not the job's fault)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from batchgen.engine.outage import Outage
from batchgen.models import OutcomeKind, StopReason
from batchgen.output import client
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, ROOT, batchgen, write_jobs


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def statuses(out: Path) -> dict[str, int]:
    db = sqlite3.connect(out / ".batchgen" / "state.sqlite")
    try:
        return dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
    finally:
        db.close()


def test_an_endpoint_that_never_answered_stops_the_run_naming_it(tmp_path: Path) -> None:
    port = free_port()
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": f"p {i}"} for i in range(200)]
    )
    out = tmp_path / "out"
    started = time.monotonic()
    done = batchgen(
        "run", jobs, "--out", out, "--base-url", f"http://127.0.0.1:{port}",
        "--concurrency", "64", "--unreachable-after", "2", "--no-progress",
    )  # fmt: skip
    took = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    assert f"cannot reach 127.0.0.1:{port}" in done.stderr
    assert "Connect" in done.stderr  # the connection error itself, named
    assert took < 30, took
    assert statuses(out) == {"pending": 200}
    report = json.loads((out / "report.json").read_text())
    assert report["pending"] == 200
    assert report["requests"] == 0  # nothing reached a server: no attempt is counted
    assert KEY not in done.stderr


def test_an_outage_is_waited_for_then_stops_with_every_job_pending(tmp_path: Path) -> None:
    # The endpoint answers the first jobs, then goes away for good.
    rows = [{"id": f"j{i}", "prompt": f"p {i}"} for i in range(40)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    sim = SimulatorThread(SimConfig(small_images=True, api_key=KEY, latency="0.05")).start()
    stopped = threading.Event()

    def stop_after_some() -> None:
        while sim.stats.ok < 5:
            time.sleep(0.01)
        sim.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_after_some, daemon=True)
    stopper.start()
    try:
        done = batchgen(
            "run", jobs, "--out", out, "--base-url", sim.base_url, "--concurrency", "4",
            "--max-outage", "3", "--backoff-base", "0.05", "--backoff-cap", "0.1",
        )  # fmt: skip
    finally:
        stopper.join(timeout=30)
        sim.stop()
    assert stopped.is_set()
    assert done.returncode == 3, done.stderr
    host = sim.base_url.split("//")[1]
    assert f"{host} stopped answering" in done.stderr  # said when it went away
    assert "did not come back within --max-outage 3s" in done.stderr
    counts = statuses(out)
    assert counts.get("failed", 0) == 0, counts
    assert counts["done"] >= 5
    assert counts["pending"] == len(rows) - counts["done"]


def test_the_progress_lines_go_on_and_name_the_error_during_an_outage(tmp_path: Path) -> None:
    port = free_port()
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "p"}])
    env_run = [
        sys.executable, "-m", "batchgen", "run", str(jobs), "--out", str(tmp_path / "out"),
        "--base-url", f"http://127.0.0.1:{port}", "--unreachable-after", "12",
    ]  # fmt: skip
    done = subprocess.run(
        env_run,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"GEMINI_API_KEY": KEY, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("progress ")]
    # Nothing ended for 12 s, yet a line every 5 s says what the run waits for.
    waiting = [ln for ln in lines if f"waiting for 127.0.0.1:{port}" in ln]
    assert len(waiting) >= 2, done.stderr
    assert "Connect" in waiting[0]
    assert "elapsed=" in waiting[0]
    assert "eta=" in waiting[0]


async def test_a_refused_connection_is_unreachable_a_silent_server_a_server_error() -> None:
    import aiohttp

    port = free_port()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        async with aiohttp.ClientSession() as session:
            refused = await client.send(
                session, f"http://127.0.0.1:{port}/x", b"{}", {}, timeout_s=5, max_bytes=100
            )
            quiet = await client.send(
                session,
                f"http://127.0.0.1:{silent.getsockname()[1]}/x",
                b"{}",
                {},
                timeout_s=0.3,
                max_bytes=100,
            )
    assert refused.kind is OutcomeKind.UNREACHABLE
    assert "Connect" in refused.message
    assert quiet.kind is OutcomeKind.SERVER_ERROR  # the request was sent: the server's fault


async def test_one_probe_at_a_time_and_an_answer_ends_the_outage() -> None:
    now = [0.0]
    stops: list[StopReason] = []
    outage = Outage("h:1", on_stop=stops.append, max_outage_s=100, clock=lambda: now[0])
    outage.answered_now()
    import asyncio

    first = asyncio.create_task(outage.wait("refused"))
    second = asyncio.create_task(outage.wait("refused"))
    await asyncio.sleep(0)
    assert outage.since == 0.0
    now[0] = 1.5  # past the first probe's time: exactly one waiter probes
    outage._wake()
    done, _pending = await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    assert done.pop().result() is True
    outage.answered_now()  # the probe was answered: everyone goes
    assert await asyncio.wait_for(asyncio.gather(first, second), 1) == [True, True]
    assert outage.since is None
    assert not stops
