"""Batch Mode chaos: SIGKILL at random moments across upload, create, poll and
download, the same command run again each time, then a clean finish.

The CLI runs as a real subprocess against a simulator thread whose batches
take a few real seconds (scaled clock) and answer ~8 % of lines with a 500,
so follow-up waves happen too. After every kill the folder's invariants hold
(`test_chaos.check_folder`) and no display name was ever created twice; at the
end every job has ended, the simulator created exactly the batches the store
recorded, and every result line it delivered was counted once: the lines of
the succeeded batches are the report's requests, no more.

`batch_chaos_run` is also what ``scripts/chaos_batch.py`` runs at full size.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.sim import SimConfig, SimulatorThread
from batchgen.sim.batches import BATCHES_KEY
from batchgen.store import DB_NAME, STATE_DIR, Store
from batchgen.store.batches import INTENT
from tests.conftest import KEY, TEST_MODEL
from tests.test_chaos import check_folder, cli_env, write_chaos_jobs


@dataclass
class BatchChaos:
    jobs: int
    kills: int = 0
    runs: int = 0
    #: What the store showed at each kill: intents not created, batches being collected, ...
    phases: Counter[str] = field(default_factory=Counter)
    #: The moment each kill aimed at (upload, create, poll, download).
    aimed: Counter[str] = field(default_factory=Counter)
    batches_created: int = 0
    batches_recorded: int = 0
    lines_delivered: int = 0
    requests_recorded: int = 0
    final_status: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "phases": dict(self.phases), "aimed": dict(self.aimed)}


def _phase(out: Path) -> str:
    """Where the killed run was, as its state shows it."""
    if not (out / STATE_DIR / DB_NAME).exists():
        return "start-up"
    with Store(out, readonly=True) as store:
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master")}
        if "batches" not in tables:
            return "start-up"
        rows = store.batches(open_only=True)
        if any(r.state == INTENT and r.input_file is None for r in rows):
            return "upload"
        if any(r.state == INTENT for r in rows):
            return "create"
        if any(r.state == "SUCCEEDED" for r in rows):
            return "download"
        return "poll" if rows else "between waves"


#: The moments kills aim at, in turn, and the sim's outcomes that mark them.
TARGETS = ("upload", "create", "poll", "download")
EVENTS = {
    "upload": ("upload_started", "upload_chunk", "upload_final"),
    "create": ("batch_created",),
    "download": ("file_download",),
    "poll": ("batch",),
}
#: Seconds after the event the kill comes, and how long to wait for the event.
AFTER_EVENT = {"upload": (0.0, 0.01), "create": (0.0, 0.004), "download": (0.0, 0.15)}
EVENT_WAIT_S = 6.0


def _events(sim: SimulatorThread, target: str) -> int:
    return sum(sim.stats.by_outcome[name] for name in EVENTS[target])


def _unique_names(sim: SimulatorThread) -> int:
    names = [b.display_name for b in sim.simulator.app[BATCHES_KEY].batches.values()]
    twice = [n for n, k in Counter(names).items() if k > 1]
    assert not twice, f"two batches for one wave: {twice}"
    return len(names)


def batch_chaos_run(
    tmp: Path,
    *,
    jobs: int,
    kills: int,
    seed: int,
    batch_size: int = 20,
    time_scale: float = 150.0,
    kill_after: tuple[float, float] = (0.4, 3.0),
    log: Callable[[str], None] = lambda s: None,
) -> BatchChaos:
    rng = random.Random(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    jobs_file = tmp / "jobs.jsonl"
    ids = set(write_chaos_jobs(jobs_file, jobs))
    out = tmp / "out"
    figures = BatchChaos(jobs=jobs)
    config = SimConfig(
        small_images=True, api_key=KEY, seed=seed, faults={"500": 0.08}, time_scale=time_scale
    )
    command = [sys.executable, "-m", "batchgen", "run", str(jobs_file), "--out", str(out)]
    command += ["--mode", "batch", "--model", TEST_MODEL, "--no-progress", "--max-attempts", "6"]
    command += ["--poll-interval", "0.1", "--batch-size", str(batch_size)]
    started = time.monotonic()
    with SimulatorThread(config) as sim:
        command += ["--base-url", sim.base_url]
        while figures.kills < kills:
            target = TARGETS[figures.kills % len(TARGETS)]
            before = _events(sim, target)
            proc = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL)
            figures.runs += 1
            try:
                if target == "poll":
                    proc.wait(timeout=rng.uniform(*kill_after))
                else:
                    # Wait for the moment aimed at (the run's next upload, create,
                    # download), then kill a few milliseconds into it.
                    deadline = time.monotonic() + EVENT_WAIT_S
                    while _events(sim, target) == before and time.monotonic() < deadline:
                        if proc.poll() is not None:
                            break
                        time.sleep(0.002)
                    seen = _events(sim, target) > before
                    proc.wait(timeout=rng.uniform(*AFTER_EVENT[target]) if seen else 0.001)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                figures.kills += 1
                figures.phases[_phase(out)] += 1
                figures.aimed[target] += 1
            else:
                raise AssertionError(f"run {figures.runs} ended before kill {figures.kills + 1}")
            _unique_names(sim)
            check_folder(out, ids, final=False)
            log(f"kill {figures.kills}/{kills} aimed at {target}: {dict(figures.phases)}")
        final = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=600)
        figures.runs += 1
        assert final.returncode in (0, 1), final.stderr
        view = check_folder(out, ids, final=True)
        assert view is not None
        figures.batches_created = _unique_names(sim)
        batches = sim.simulator.app[BATCHES_KEY].batches.values()
        states = Counter(b.state for b in batches)
        assert set(states) == {"BATCH_STATE_SUCCEEDED"}, states
        figures.lines_delivered = sum(b.count for b in batches)
        figures.final_status = dict(view.statuses)
    with Store(out, readonly=True) as store:
        recorded = store.batches()
    figures.batches_recorded = len(recorded)
    report = json.loads((out / "report.json").read_text())
    figures.requests_recorded = report["requests"]
    figures.seconds = round(time.monotonic() - started, 1)
    assert all(r.closed for r in recorded)
    assert figures.batches_created == figures.batches_recorded, figures.as_dict()
    assert figures.lines_delivered == figures.requests_recorded, figures.as_dict()
    assert report["pending"] == 0
    return figures


def test_batch_mode_survives_10_sigkills(tmp_path: Path) -> None:
    figures = batch_chaos_run(tmp_path, jobs=300, kills=10, seed=15)
    assert figures.kills == 10
    assert set(figures.aimed) == set(TARGETS)
    assert figures.final_status.get("done", 0) >= 295
    print(json.dumps(figures.as_dict()))
