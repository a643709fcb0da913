"""`run --redo rejected`: rejected images made again against the simulator,
the earlier ones kept as `<name>.vN.<ext>`, the decision cleared, the note
added through `redo_note`, and a redo stopped half-way resumed exactly."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from batchgen.engine.planner import plan
from batchgen.engine.runner import arun_files
from batchgen.errors import InputError
from batchgen.models import Job
from batchgen.output.history import history, history_name, move_to_history
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.store import Store
from batchgen.store.reviews import Decision
from tests.conftest import KEY, make_config, write_jobs
from tests.test_chaos import cli, cli_env, wait_for

ROWS = [
    {"id": "mug", "prompt": "a blue mug", "redo_note": "Fix this: {note}"},
    {"id": "lamp", "prompt": "a brass lamp", "tags": ["line:lamps"]},
    {"id": "vase", "prompt": "a tall vase"},
    {"id": "cup", "prompt": "a small cup"},
]


def decide(out: Path, **decisions: tuple[Decision, str]) -> None:
    with Store(out, lock=False) as store, store.transaction():
        for job_id, (decision, note) in decisions.items():
            store.set_review(job_id, decision, note)


def standing(out: Path) -> dict[str, Decision]:
    with Store(out, readonly=True) as store:
        return {r.job_id: r.decision for r in store.reviews()}


def test_history_names_and_moves(tmp_path: Path) -> None:
    assert history_name("images/ab/x-1.png", 3) == "images/ab/x-1.v3.png"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"one")
    assert move_to_history(tmp_path, "images/x.png") == "images/x.v1.png"
    assert move_to_history(tmp_path, "images/x.png") is None  # moved already: not twice
    (tmp_path / "images" / "x.png").write_bytes(b"two")
    assert move_to_history(tmp_path, "images/x.png") == "images/x.v2.png"
    assert history(tmp_path, "images/x.png") == ["images/x.v1.png", "images/x.v2.png"]
    assert (tmp_path / "images" / "x.v1.png").read_bytes() == b"one"


async def test_rejected_images_are_made_again_and_kept_as_history(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", ROWS)
    out = tmp_path / "out"
    config = make_config(out, sim.base_url)
    await arun_files([jobs], config)
    first = {r["id"]: (out / "images" / f"{r['id']}.png").read_bytes() for r in ROWS}
    decide(
        out,
        mug=(Decision.REJECTED, "the handle is missing"),
        lamp=(Decision.REJECTED, "wrong colour"),
        vase=(Decision.APPROVED, ""),
    )
    # Without --redo nothing happens: the decisions are the reviewer's, not the run's.
    again = await arun_files([jobs], config)
    assert (again.plan.to_run, sim.stats.total) == (0, 4)

    result = await arun_files([jobs], make_config(out, sim.base_url, redo="rejected"))
    assert (result.plan.redo, result.plan.done, result.exit_code) == (2, 2, 0)
    # Sent again, although an identical answer is in this folder's cache (lamp's).
    assert sim.stats.total == 6
    assert result.counters.cache_hits == 0
    for job_id in ("mug", "lamp"):
        assert (out / "images" / f"{job_id}.v1.png").read_bytes() == first[job_id]
        assert (out / "images" / f"{job_id}.png").is_file()
        assert not (out / "images" / f"{job_id}.v2.png").exists()
    assert not (out / "images" / "vase.v1.png").exists()
    # The note went into mug's prompt (it has redo_note), not into lamp's.
    with Store(out, readonly=True) as store:
        mug, lamp = store.job("mug"), store.job("lamp")
        assert mug is not None
        assert lamp is not None
        assert mug.prompt == "a blue mug\n\nFix this: the handle is missing"
        assert lamp.prompt == "a brass lamp"
        left = store.db.execute("SELECT job_id FROM reviews").fetchall()
    assert left == [("vase",)]  # the rejections were cleared, the approval kept
    assert standing(out) == {"vase": Decision.APPROVED}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["done"] == 4

    # A plain run after the redo sends nothing: the note does not change the job.
    plain = await arun_files([jobs], config)
    assert (plain.plan.to_run, sim.stats.total) == (0, 6)
    # Rejected again: the second image becomes v2, v1 stays the first.
    decide(out, mug=(Decision.REJECTED, "still no handle"))
    await arun_files([jobs], make_config(out, sim.base_url, redo="rejected"))
    assert history(out, "images/mug.png") == ["images/mug.v1.png", "images/mug.v2.png"]
    assert (out / "images" / "mug.v1.png").read_bytes() == first["mug"]
    assert sim.stats.total == 7


async def test_a_redo_stopped_before_its_moves_moves_each_file_once(
    tmp_path: Path, sim: Simulator
) -> None:
    """The plan committed, the run gone before any file moved (the moves are
    still recorded): the next run moves them, sends, and doubles nothing."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", ROWS)
    out = tmp_path / "out"
    await arun_files([jobs], make_config(out, sim.base_url))
    old = (out / "images" / "mug.png").read_bytes()
    decide(out, mug=(Decision.REJECTED, "no handle"))
    with Store(out) as store, store.transaction():
        store.start_run()
        rows = [
            Job(id=str(r["id"]), prompt=str(r["prompt"]), redo_note=r.get("redo_note"))
            for r in ROWS
        ]
        done = plan(
            rows,
            store,
            default_model=make_config(out, sim.base_url).model,
            redo=store.redo_notes(all_rejected=True),
        )
        assert done.redo == 1
    assert (out / "images" / "mug.png").read_bytes() == old  # not moved yet
    # Resumed without --redo: the pending redo runs on, with its note.
    result = await arun_files([jobs], make_config(out, sim.base_url))
    assert (result.plan.pending, result.exit_code) == (1, 0)
    assert history(out, "images/mug.png") == ["images/mug.v1.png"]
    assert (out / "images" / "mug.v1.png").read_bytes() == old
    with Store(out, readonly=True) as store:
        mug = store.job("mug")
        assert mug is not None
        assert mug.prompt.endswith("Fix this: no handle")
        assert store.redo_moves() == []
    assert standing(out) == {}


def test_a_redo_killed_in_flight_resumes_without_losing_or_doubling(tmp_path: Path) -> None:
    """`kill -9` while the redo's requests are in flight (the old images already
    in history): the same command finishes, each old image is v1 once."""
    ids = [f"sku-{i:02d}" for i in range(12)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": i, "prompt": f"shot {i}"} for i in ids])
    out = tmp_path / "out"
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY, latency=0.5)) as sim:
        env = cli_env()
        first = subprocess.run(cli(jobs, out, sim.base_url), env=env, capture_output=True)
        assert first.returncode == 0, first.stderr
        old = {i: (out / "images" / f"{i}.png").read_bytes() for i in ids}
        rejected = ids[::2]
        decide(out, **{i: (Decision.REJECTED, "") for i in rejected})
        before = sim.stats.total
        redo = cli(jobs, out, sim.base_url, "--redo", "rejected", concurrency=2)
        proc = subprocess.Popen(redo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert wait_for(lambda: sim.stats.in_flight == 2, proc, time.monotonic() + 60)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        assert sim.stats.total - before == 2
        again = subprocess.run(redo, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert sim.stats.total - before >= len(rejected)
    for i in ids:
        want = ["images/" + f"{i}.v1.png"] if i in rejected else []
        assert history(out, f"images/{i}.png") == want, i
        if want:
            assert (out / want[0]).read_bytes() == old[i]
        assert (out / "images" / f"{i}.png").is_file()
    assert standing(out) == {}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["done"] == len(ids)


async def test_redo_note_must_say_where_the_note_goes(tmp_path: Path, sim: Simulator) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "p", "redo_note": "fix"}])
    with pytest.raises(InputError) as caught:
        await arun_files([jobs], make_config(tmp_path / "out", sim.base_url))
    assert "redo_note" in caught.value.render()
    assert "{note}" in caught.value.render()
