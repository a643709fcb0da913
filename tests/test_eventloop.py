"""The event loop a run gets: uvloop where installed, asyncio's on request."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from batchgen.engine import eventloop
from batchgen.errors import UsageError
from tests.conftest import TEST_MODEL, batchgen, write_jobs

uvloop = pytest.importorskip("uvloop")


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_unknown_loop_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "trio")
    with pytest.raises(UsageError, match="BATCHGEN_LOOP='trio': expected 'uvloop' or 'asyncio'"):
        eventloop.loop_factory()


def _sim_run(
    tmp_path: Path, loop: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[subprocess.CompletedProcess[str], Path]:
    monkeypatch.setenv(eventloop.ENV, loop)
    jobs = write_jobs(
        tmp_path / f"jobs-{loop}.jsonl",
        ({"id": f"j{i}", "prompt": f"a shoe {i}"} for i in range(6)),
    )
    out = tmp_path / f"out-{loop}"
    return batchgen("run", jobs, "--out", out, "--sim", "--model", TEST_MODEL, "--no-progress"), out


def test_same_run_on_either_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice changes speed only: the CLI's simulated run ends the same on both."""
    reports = {}
    for loop in ("uvloop", "asyncio"):
        done, out = _sim_run(tmp_path, loop, monkeypatch)
        assert done.returncode == 0, done.stderr
        report = json.loads((out / "report.json").read_text())
        counts = {k: report[k] for k in ("done", "failed", "pending", "requests", "cost_usd")}
        reports[loop] = (counts, sorted(p.name for p in (out / "images").iterdir()))
    assert reports["uvloop"] == reports["asyncio"]
    assert reports["uvloop"][0]["done"] == 6


def test_cli_names_a_bad_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done, out = _sim_run(tmp_path, "trio", monkeypatch)
    assert done.returncode == 2
    assert "BATCHGEN_LOOP='trio'" in done.stderr
    assert not (out / "report.json").exists()
