"""The Python API where notebooks call it: inside a running event loop.

Jupyter runs every cell inside its own event loop, so `batchgen.run` there
must not call `asyncio.run` on that loop: it runs on a fresh loop in a worker
thread and waits. An uncaught `InputError` says what to fix in its `str`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import threading
import time
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import batchgen
from batchgen import RunResult, api
from batchgen.errors import InputError, InputProblem
from batchgen.sim import SimConfig, SimulatorThread
from tests.conftest import KEY, write_jobs


async def test_run_works_inside_a_running_event_loop(tmp_path: Path) -> None:
    """As in a notebook cell: a loop is running, and `run` (not `arun`) is called."""
    loop = asyncio.get_running_loop()
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"j{n}", "prompt": f"p{n}"} for n in range(3)]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = batchgen.run(jobs, out=tmp_path / "out", sim=True)
        gc.collect()  # a coroutine never awaited would warn when collected
    assert [str(w.message) for w in caught] == []
    assert result.exit_code == 0
    assert result.report["done"] == 3
    assert asyncio.get_running_loop() is loop
    assert not loop.is_closed()
    # The caller's loop still runs its own work afterwards, and so does a second run.
    await asyncio.sleep(0)
    again = batchgen.run(jobs, out=tmp_path / "out", sim=True)
    assert again.counters.requests == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("batchgen-run")]


async def test_bad_input_inside_a_running_loop_raises_the_problems(tmp_path: Path) -> None:
    rows = [{"id": f"j{n}", "prompt": ""} for n in range(12)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    with pytest.raises(InputError) as caught:
        batchgen.run(jobs, out=tmp_path / "out", sim=True)
    text = str(caught.value)
    assert text.startswith("12 problems in the job files:\n")
    assert "jobs.jsonl:1: [prompt]" in text
    assert "jobs.jsonl:10: [prompt]" in text
    assert "jobs.jsonl:11:" not in text
    assert text.endswith("… and 2 more")


def test_input_error_str_lists_the_problems() -> None:
    one = InputError([InputProblem("a.csv", 3, "aspect_ratio", "'7:5' is not one of 1:1, …")])
    assert (
        str(one)
        == "1 problem in the job files:\na.csv:3: [aspect_ratio] '7:5' is not one of 1:1, …"
    )
    kept = [InputProblem("b.jsonl", n, "id", "bad") for n in range(1, 11)]
    many = InputError(kept, omitted=5)
    lines = str(many).splitlines()
    assert lines[0] == "15 problems in the job files:"
    assert len(lines) == 1 + 10 + 1
    assert lines[-1] == "… and 5 more"
    # The command line's longer listing is unchanged.
    assert many.render().endswith("15 problems in the job files; nothing was sent.")


def test_interrupting_the_wait_cancels_the_run_and_keeps_the_state(tmp_path: Path) -> None:
    """The kernel's stop button is a KeyboardInterrupt in the waiting thread: the
    run on the worker thread is cancelled, writes its state and report, and ends."""
    rows = [{"id": "stuck", "prompt": "a hat [[sim:hang]]"}]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    main = threading.get_ident()
    # A request that hangs for less than the test timeout: a lost interrupt fails, not hangs.
    with SimulatorThread(SimConfig(small_images=True, api_key=KEY, hang_seconds=60)) as sim:

        def interrupt_once_sent() -> None:
            while sim.stats.in_flight == 0:  # waits for a condition, not for a time
                time.sleep(0.01)
            signal.pthread_kill(main, signal.SIGINT)

        def start() -> Coroutine[Any, Any, RunResult]:
            return batchgen.arun(jobs, out=out, api_key=KEY, base_url=sim.base_url)

        # Python's own SIGINT handler, as in a kernel, whatever an earlier test left.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        trigger = threading.Thread(target=interrupt_once_sent)
        trigger.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                api._in_worker_thread(start)
        finally:
            trigger.join()
            signal.signal(signal.SIGINT, previous)
    report = json.loads((out / "report.json").read_text())
    assert (report["pending"], report["done"]) == (1, 0)
    assert not [t for t in threading.enumerate() if t.name.startswith("batchgen-run")]


def test_a_stop_pressed_while_the_run_is_handed_over_waits_for_the_try() -> None:
    """The stop button can be pressed while the worker thread is being started
    (on a busy machine the run may already be sending by then): the interrupt
    is held and raised where it cancels the run, not where it would strand it."""
    # Python's own SIGINT handler, as in a kernel, whatever an earlier test left.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    held = api._hold_sigint()
    try:
        # Unheld, the interrupt would be raised as this call returns.
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        delivered = False
    finally:
        try:
            api._release_sigint(held)
        except KeyboardInterrupt:
            delivered = True
        signal.signal(signal.SIGINT, previous)
    assert delivered
