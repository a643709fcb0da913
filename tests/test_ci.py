"""What a CI pipeline reads: the JUnit file (read back by a real JUnit parser),
`--fail-under`'s exit codes, and `validate --format json`."""

from __future__ import annotations

import json
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import junitparser
import pytest

from batchgen.cli.ci import verdict
from batchgen.cli.main import main
from batchgen.errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
)
from batchgen.models import ErrorInfo, Job, Status
from batchgen.report.junit import RunFacts, attr, judge, text, write_junit
from batchgen.sim import SimulatorThread
from batchgen.store import Store
from tests.conftest import KEY, TEST_MODEL, batchgen, write_jobs

#: Control characters, markup and a CDATA end: what a hostile job file can put in a prompt.
HOSTILE = 'shoe \x00\x01\x08\x0b\x0c\x1b\x7f\x85 & <b>"q"</b> \']]> \r\n\ttab \U0001f600'


def cases(path: Path) -> dict[str, junitparser.TestCase]:
    xml = junitparser.JUnitXml.fromfile(str(path))
    return {case.name: case for suite in xml for case in suite}


def suite_of(path: Path) -> junitparser.TestSuite:
    xml = junitparser.JUnitXml.fromfile(str(path))
    (suite,) = list(xml)
    assert isinstance(suite, junitparser.TestSuite)
    return suite


def run(
    tmp_path: Path, sim: SimulatorThread, *extra: str | Path
) -> subprocess.CompletedProcess[str]:
    rows = [
        {"id": "ok1", "prompt": "a red shoe"},
        {"id": "ok2", "prompt": "a blue shoe"},
        {"id": "blocked", "prompt": f"{HOSTILE} [[sim:block]]"},
        {"id": "bad", "prompt": f"leaked {KEY} [[sim:400]]"},
        {"id": "child", "prompt": "edit it", "images": ["@bad"]},
    ]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    return batchgen(
        "run", jobs, "--out", tmp_path / "out", "--base-url", sim.base_url, "--no-progress",
        "--model", TEST_MODEL, *extra,
    )  # fmt: skip


def test_one_testcase_per_job_read_by_a_junit_parser(
    tmp_path: Path, sim_thread: SimulatorThread
) -> None:
    junit = tmp_path / "ci" / "results.xml"
    ran = run(tmp_path, sim_thread, "--junit", junit)
    assert ran.returncode == EXIT_SOME_FAILED, ran.stderr
    suite = suite_of(junit)
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 2, 0, 1)
    found = cases(junit)
    assert set(found) == {"ok1", "ok2", "blocked", "bad", "child"}
    assert found["ok1"].is_passed
    assert found["ok1"].classname == "jobs.jsonl"
    (blocked,) = found["blocked"].result
    assert isinstance(blocked, junitparser.Failure)
    assert blocked.type == "blocked"
    (bad,) = found["bad"].result
    assert isinstance(bad, junitparser.Failure)
    assert bad.type == "bad_request"
    assert bad.message
    assert "HTTP 400" in (bad.text or "")
    (skipped,) = found["child"].result
    assert isinstance(skipped, junitparser.Skipped)
    assert "bad" in (skipped.message or "")
    props = {p.name: p.value for p in suite.properties()}
    assert props["exit_code"] == str(EXIT_SOME_FAILED)
    assert props["done_share"] == "0.4000"


def test_hostile_text_is_escaped_and_the_key_never_written(
    tmp_path: Path, sim_thread: SimulatorThread
) -> None:
    junit = tmp_path / "results.xml"
    run(tmp_path, sim_thread, "--junit", junit)
    raw = junit.read_text(encoding="utf-8")
    assert KEY not in raw
    assert "leaked *** [[sim:400]]" in raw
    (blocked,) = cases(junit)["blocked"].result
    body = blocked.text or ""
    # Unrepresentable characters are visible escapes; markup comes back as it was.
    assert "\\x00\\x01\\x08\\x0b\\x0c\\x1b\\x7f\\x85" in body
    assert '& <b>"q"</b> \']]>' in body
    assert "\ttab \U0001f600" in body


def test_escaping_round_trips_through_a_parser() -> None:
    from xml.dom.minidom import parseString

    value = "".join(chr(c) for c in range(0x00, 0xA0)) + "\ud800\ufffe\uffff é"
    doc = parseString(f'<a b="{attr(value)}">{text(value)}</a>'.encode())
    a = doc.documentElement
    assert a.getAttribute("b") == a.firstChild.data  # type: ignore[union-attr]
    assert "\\x00" in a.getAttribute("b")
    assert "\\ud800" in a.getAttribute("b")
    assert "\t\n" in a.getAttribute("b")


@pytest.mark.parametrize(
    ("rate", "code"), [("0.4", EXIT_OK), ("0", EXIT_OK), ("0.41", EXIT_SOME_FAILED)]
)
def test_fail_under_sets_what_passes(
    tmp_path: Path, sim_thread: SimulatorThread, rate: str, code: int
) -> None:
    ran = run(tmp_path, sim_thread, "--fail-under", rate, "--junit", tmp_path / "r.xml")
    assert ran.returncode == code, ran.stderr
    assert f"--fail-under {float(rate)}: 40.0% of the 5 ended jobs are done" in ran.stderr
    # The others are still reported as failures.
    assert suite_of(tmp_path / "r.xml").failures == 2


def test_a_stopped_run_keeps_exit_3_and_writes_junit_then_resumes(
    tmp_path: Path, sim_thread: SimulatorThread
) -> None:
    rows = [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(3)]
    rows.append({"id": "wall", "prompt": "quota [[sim:dailyx1]]"})
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    junit, out = tmp_path / "r.xml", tmp_path / "out"
    argv = ["run", jobs, "--out", out, "--base-url", sim_thread.base_url, "--no-progress",
            "--model", TEST_MODEL, "--concurrency", "1", "--junit", junit,
            "--fail-under", "0"]  # fmt: skip
    stopped = batchgen(*argv)
    assert stopped.returncode == EXIT_ABORTED, stopped.stderr
    assert "not judged, the run did not finish (exit 3)" in stopped.stderr
    found = cases(junit)
    assert len(found) == 4
    pending = [n for n, c in found.items() if c.is_skipped]
    assert "wall" in pending
    props = {p.name: p.value for p in suite_of(junit).properties()}
    assert props["exit_code"] == str(EXIT_ABORTED)
    assert props["stop"].startswith("quota")
    resumed = batchgen(*argv)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert all(c.is_passed for c in cases(junit).values())
    # A settled folder re-run (the fast path) still writes it.
    junit.unlink()
    again = batchgen(*argv)
    assert again.returncode == EXIT_OK
    assert "0 requests this run" in again.stderr
    assert len(cases(junit)) == 4


def test_report_writes_junit_from_a_folder(tmp_path: Path, sim_thread: SimulatorThread) -> None:
    run(tmp_path, sim_thread)
    made = batchgen("report", tmp_path / "out", "--junit", tmp_path / "from-folder.xml")
    assert made.returncode == 0, made.stderr
    assert suite_of(tmp_path / "from-folder.xml").tests == 5


@pytest.mark.parametrize("code", [EXIT_USAGE, EXIT_ABORTED, 4, EXIT_INTERRUPTED])
def test_fail_under_leaves_unfinished_runs_alone(code: int) -> None:
    counts = {"done": 10, "failed": 0, "blocked": 0, "skipped": 0, "pending": 5}
    assert judge(code, counts, 0.5) == code


def test_fail_under_judges_ended_jobs_only() -> None:
    counts = {"done": 19, "failed": 1, "blocked": 0, "skipped": 0, "pending": 1000}
    assert judge(EXIT_SOME_FAILED, counts, 0.95) == EXIT_OK
    assert judge(EXIT_OK, counts, 0.96) == EXIT_SOME_FAILED
    assert judge(EXIT_SOME_FAILED, counts, None) == EXIT_SOME_FAILED
    assert judge(EXIT_OK, {"pending": 3}, 0.5) == EXIT_OK


def test_fail_under_out_of_range_is_a_usage_error(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "j.jsonl", [{"id": "a", "prompt": "p"}])
    bad = batchgen("run", jobs, "--out", tmp_path / "o", "--sim", "--fail-under", "95")
    assert bad.returncode == EXIT_USAGE
    assert "share from 0 to 1" in bad.stderr


def _fill(store: Store, n: int) -> None:
    with store.transaction():
        store.start_run()
        for i in range(n):
            job = Job(id=f"job-{i:07d}", prompt=f"prompt {i} " + "x" * 60, source="j.csv", line=i)
            store.plan(job, f"fp{i}", reset=True)
            if i % 3:
                error = ErrorInfo("bad_request", 400, f"no \x00 <{i}>")
                store.finish(job.id, Status.FAILED, error=error)
            else:
                store.finish(job.id, Status.DONE, files=[f"images/{job.id}.png"])


def test_junit_is_streamed_memory_does_not_grow_with_jobs(tmp_path: Path) -> None:
    peaks = []
    for n in (2_000, 20_000):
        out = tmp_path / str(n)
        with Store(out) as store:
            _fill(store, n)
            tracemalloc.start()
            write_junit(store, out / "junit.xml", RunFacts(exit_code=1))
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        assert suite_of(out / "junit.xml").tests == n
    assert peaks[1] < peaks[0] * 1.5 + 256 * 1024, peaks


def validate_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, Any]:
    """`batchgen validate --format json`, in this process (as a pipeline would read it)."""
    code = main(["validate", *map(str, argv), "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_validate_format_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_jobs(tmp_path / "good.jsonl", [{"id": "a", "prompt": "p"}])
    code, doc = validate_json(capsys, good)
    assert code == EXIT_OK
    assert (doc["ok"], doc["jobs"], doc["problems"], doc["exit_code"]) == (True, 1, [], 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p"}\n{"id": "a"}\nnot json\n', encoding="utf-8")
    code, doc = validate_json(capsys, good, bad)
    assert code == EXIT_USAGE
    assert doc["ok"] is False
    assert doc["exit_code"] == EXIT_USAGE
    assert doc["jobs"] is None
    assert doc["counts"]["problems"] == len(doc["problems"]) >= 2
    assert set(doc["counts"]["files"]) == {str(bad)}
    for problem in doc["problems"]:
        assert set(problem) == {"file", "line", "field", "message"}
    assert any(p["line"] == 2 and p["field"] == "prompt" for p in doc["problems"])
    assert any(p["line"] == 3 for p in doc["problems"])
    code, doc = validate_json(capsys, good, "--model", "gemini-3-pro-image-preview")
    assert code == EXIT_USAGE
    assert "retired" in doc["error"]
    code, doc = validate_json(capsys, good, "--delimiter", "ab")
    assert code == EXIT_USAGE
    assert "--delimiter" in doc["error"]


def test_the_verdict_says_why() -> None:
    report = {"done": 3, "failed": 1, "blocked": 0, "skipped": 0}
    assert verdict(None, report, EXIT_OK) is None
    assert verdict(0.5, report, EXIT_OK) == (
        "--fail-under 0.5: 75.0% of the 4 ended jobs are done: pass (exit 0)"
    )
    assert "fail (exit 1)" in (verdict(0.8, report, EXIT_SOME_FAILED) or "")
    assert "nothing to judge" in (verdict(0.8, {"done": 0, "failed": 0}, EXIT_OK) or "")
    assert "did not finish (exit 130)" in (verdict(0.8, report, EXIT_INTERRUPTED) or "")


def test_the_python_api_takes_junit_and_fail_under(tmp_path: Path) -> None:
    import batchgen as api

    jobs = [{"id": "a", "prompt": "ok"}, {"id": "b", "prompt": "no [[sim:400]]"}]
    common = {"out": tmp_path / "out", "sim": True, "model": TEST_MODEL, "progress": False}
    passed = api.run(jobs, junit=tmp_path / "r.xml", fail_under=0.5, **common)
    assert passed.exit_code == EXIT_OK
    assert suite_of(tmp_path / "r.xml").failures == 1
    failed = api.run(jobs, fail_under=0.75, **common)
    assert failed.exit_code == EXIT_SOME_FAILED
