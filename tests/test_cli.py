"""The command line as users and CI scripts call it: exit codes, messages, files."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen.sim import SimulatorThread
from tests.conftest import TEST_MODEL, batchgen, write_jobs

ROOT = Path(__file__).resolve().parent.parent


def test_help_and_version() -> None:
    assert batchgen("--help").returncode == 0
    out = batchgen("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("batchgen ")
    assert "--rpm" in batchgen("run", "--help").stdout


def test_demo_runs_then_resumes_with_zero_requests(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = batchgen("run", "sample_jobs/demo.jsonl", "--out", out, "--sim", key=None)
    assert first.returncode == 0, first.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == report["total"] > 0
    again = batchgen("run", "sample_jobs/demo.jsonl", "--out", out, "--sim", key=None)
    assert again.returncode == 0
    assert "0 requests this run" in again.stderr
    assert json.loads((out / "report.json").read_text())["requests"] == report["requests"]


def test_bad_rows_are_all_reported_and_nothing_is_sent(
    tmp_path: Path, sim_thread: SimulatorThread
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "ok", "prompt": "fine"}\n'
        '{"id": "../escape", "prompt": "x"}\n'
        '{"id": "noprompt"}\n'
        '{"id": "ratio", "prompt": "x", "aspect_ratio": "7:3"}\n'
        '{"id": "img", "prompt": "x", "images": ["missing.png"]}\n'
        "{broken json\n"
    )
    checked = batchgen("validate", jobs)
    assert checked.returncode == 2
    for line, field in [(2, "id"), (3, "prompt"), (4, "aspect_ratio"), (5, "images")]:
        assert f"jobs.jsonl:{line}: [{field}]" in checked.stderr
    assert "jobs.jsonl:6" in checked.stderr
    out = tmp_path / "out"
    ran = batchgen("run", jobs, "--out", out, "--base-url", sim_thread.base_url)
    assert ran.returncode == 2
    assert "nothing was sent" in ran.stderr
    assert sim_thread.stats.total == 0
    assert not out.exists()


def test_validate_ok(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"id": "a", "prompt": "p"}])
    done = batchgen("validate", jobs)
    assert (done.returncode, done.stdout.strip()) == (0, "1 jobs OK")


def test_missing_key_and_cleartext_base_url_are_refused(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"id": "a", "prompt": "p"}])
    nokey = batchgen("run", jobs, "--out", tmp_path / "o", key=None)
    assert nokey.returncode == 2
    assert "GEMINI_API_KEY" in nokey.stderr
    clear = batchgen(
        "run", jobs, "--out", tmp_path / "o", "--base-url", "http://proxy.example:8080"
    )
    assert clear.returncode == 2
    assert "in clear" in clear.stderr
    assert "Traceback" not in nokey.stderr + clear.stderr


def test_exit_code_1_report_by_tag_and_status(tmp_path: Path, sim_thread: SimulatorThread) -> None:
    rows = [
        {"id": "a", "prompt": "shoe", "tags": ["line:shoes", "brand:acme"]},
        {"id": "b", "prompt": "boot", "tags": ["line:shoes"]},
        {"id": "c", "prompt": "nope [[sim:block]]", "tags": ["line:hats"]},
    ]
    jobs = write_jobs(tmp_path / "j.jsonl", rows)
    out = tmp_path / "out"
    ran = batchgen("run", jobs, "--out", out, "--base-url", sim_thread.base_url, "--no-progress")
    assert ran.returncode == 1
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert [(f["id"], f["status"], f["error"]["kind"]) for f in failed] == [
        ("c", "blocked", "blocked")
    ]
    assert failed[0]["prompt"] == "nope [[sim:block]]"
    by_tag = batchgen("report", out, "--by", "tag", "--format", "csv")
    assert by_tag.returncode == 0
    table = {r["tag"]: r for r in csv.DictReader(io.StringIO(by_tag.stdout))}
    assert set(table) == {"brand:acme", "line:hats", "line:shoes"}
    assert table["line:shoes"]["jobs"] == "2"
    assert table["line:shoes"]["done"] == "2"
    report = json.loads((out / "report.json").read_text())
    shoes = sum(j["cost_usd"] for j in report["jobs"] if "line:shoes" in j["tags"])
    assert float(table["line:shoes"]["cost_usd"]) == pytest.approx(shoes, abs=1e-5)
    status = batchgen("status", out)
    assert status.returncode == 0
    assert "2 done, 1 blocked, 0 failed" in status.stdout


def test_dry_run_prints_counts_and_estimate(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"id": f"j{i}", "prompt": "p"} for i in range(10)])
    dry = batchgen(
        "run", jobs, "--out", tmp_path / "o", "--dry-run", "--model", TEST_MODEL, key=None
    )
    assert dry.returncode == 0
    assert "10 jobs: 10 new" in dry.stdout
    assert "estimated cost $0.39" in dry.stdout
    assert not (tmp_path / "o").exists()


def test_state_of_another_folder_is_not_mistaken(tmp_path: Path) -> None:
    missing = batchgen("status", tmp_path / "nothing-here")
    assert missing.returncode == 2
    assert "no batchgen state" in missing.stderr


def test_help_does_not_load_the_heavy_modules() -> None:
    code = (
        "import sys; from batchgen.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('aiohttp', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "[]"


def test_sim_alone_serves_like_sim_serve() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sim", "--port", "0", "--small-images"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("batchgen simulator serving at http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
