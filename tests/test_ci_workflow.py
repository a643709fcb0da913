"""The GitHub Actions workflow in docs/ci/ is true to the CLI: every batchgen
command line in it parses with the real parser, and its smoke job runs here,
on the simulator, exactly as its shell lines say."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import junitparser
import pytest
import yaml

from batchgen.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "docs" / "ci" / "batchgen.yml"
#: Where a shell command line ends and something else (a redirect, a pipe) begins.
SHELL_BREAKS = {">", ">>", "|", "&&", "||", ";", "2>&1"}


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def run_scripts(job: str) -> list[str]:
    return [step["run"] for step in workflow()["jobs"][job]["steps"] if "run" in step]


def command_lines(script: str) -> list[list[str]]:
    """The batchgen command lines of a step's shell script, continuations joined."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] != ["batchgen"]:
            continue
        cut = next((i for i, w in enumerate(words) if w in SHELL_BREAKS), len(words))
        found.append(words[1:cut])
    return found


def all_command_lines() -> list[list[str]]:
    return [
        argv for job in workflow()["jobs"] for s in run_scripts(job) for argv in command_lines(s)
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"batchgen {shlex.join(argv)}: {err.getvalue().strip()}")


def test_the_workflow_has_a_smoke_job_and_a_real_one() -> None:
    doc = workflow()
    # YAML 1.1 reads the key `on` as True.
    triggers = doc.get("on", doc.get(True))
    assert set(triggers) == {"pull_request", "push"}
    assert triggers["push"]["branches"] == ["main"]
    smoke, real = doc["jobs"]["smoke"], doc["jobs"]["real"]
    assert "pull_request" in smoke["if"]
    assert "refs/heads/main" in real["if"]
    assert real["env"]["GEMINI_API_KEY"] == "${{ secrets.GEMINI_API_KEY }}"
    assert "GEMINI_API_KEY" not in json.dumps(smoke)
    for job in (smoke, real):
        uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload")]
        assert uploads
        assert all(s["if"] == "always()" for s in uploads)


def test_every_batchgen_command_line_parses() -> None:
    lines = all_command_lines()
    assert len(lines) >= 4
    commands = {parse(argv).command for argv in lines}
    assert {"validate", "run", "check"} <= commands
    runs = [parse(argv) for argv in lines if argv[0] == "run"]
    smoke = next(a for a in runs if a.sim)
    real = next(a for a in runs if not a.sim)
    assert smoke.junit is not None
    assert smoke.fail_under is not None
    assert real.limit == 20
    assert real.junit is not None
    assert real.budget is not None


def test_a_misspelt_flag_would_be_caught() -> None:
    with pytest.raises(pytest.fail.Exception, match="--limt"):
        parse(["run", "jobs.csv", "--out", "o", "--limt", "20"])


@pytest.mark.timeout(300)
def test_the_smoke_job_runs_on_the_simulator(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "sample_jobs", tmp_path / "sample_jobs")
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    ran = 0
    for script in run_scripts("smoke"):
        if not command_lines(script):
            continue  # the install step: this test runs the installed checkout
        assert shutil.which("batchgen", path=env["PATH"]) is not None
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        ran += 1
    assert ran == 2
    assert json.loads((tmp_path / "validate.json").read_text())["ok"] is True
    out = tmp_path / "smoke-out"
    xml = junitparser.JUnitXml.fromfile(str(out / "junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert cases
    assert all(case.is_passed for case in cases)
    assert (out / "report.html").is_file()
