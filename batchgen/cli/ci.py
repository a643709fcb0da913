"""cli ci: what a CI pipeline reads from batchgen, on the command line.

`run --junit FILE` and `--fail-under RATE` (the files and the verdict are
`report/junit.py`'s), and `validate --format json`: one JSON document on stdout
that a pipeline parses instead of scraping lines (`docs/ci.md` shows it)::

    {"ok": bool, "exit_code": int, "jobs": int | null,
     "counts": {"problems": int, "listed": int, "files": {file: problems}},
     "problems": [{"file": str, "line": int, "field": str, "message": str}],
     "error": str | null}

``jobs`` is the number of valid jobs (null when the files did not pass);
``problems`` lists at most the reader's cap (``counts.problems`` counts all);
``error`` is a problem that is not a row's (a bad flag, a retired ``--model``).
The exit code is the text format's: 0, or 2 for bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from batchgen.config import Flag
from batchgen.errors import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, BatchgenError, InputError

#: `batchgen run` flags for CI (`RUN_FLAGS` ends with them).
CI_FLAGS: tuple[Flag, ...] = (
    Flag(
        "--junit",
        "junit",
        "also write every job as a JUnit XML test case to FILE",
        type=Path,
        metavar="FILE",
    ),
    Flag(
        "--fail-under",
        "fail_under",
        "exit 0 when at least RATE (0..1) of the ended jobs are "
        "done, 1 below (a run that did not finish keeps its exit code)",
        type=float,
        metavar="RATE",
    ),
)


def verdict(fail_under: float | None, report: Mapping[str, Any], exit_code: int) -> str | None:
    """The sentence that says why ``--fail-under`` passed or failed the run."""
    from batchgen.report.junit import done_share

    if fail_under is None or not report:
        return None
    if exit_code not in (EXIT_OK, EXIT_SOME_FAILED):
        return f"--fail-under {fail_under}: not judged, the run did not finish (exit {exit_code})"
    share = done_share(report)
    if share is None:
        return f"--fail-under {fail_under}: no job ended, nothing to judge"
    ended = sum(report[k] for k in ("done", "failed", "blocked", "skipped"))
    word = "pass" if exit_code == EXIT_OK else "fail"
    return (
        f"--fail-under {fail_under}: {share:.1%} of the {ended} ended jobs are done: "
        f"{word} (exit {exit_code})"
    )


def as_json(count_jobs: Callable[[], int]) -> int:
    """Run `validate`'s check and print its result as one JSON document."""
    doc: dict[str, Any] = {
        "ok": True,
        "exit_code": EXIT_OK,
        "jobs": None,
        "problems": [],
        "error": None,
    }
    problems: list[dict[str, Any]] = []
    total = 0
    try:
        doc["jobs"] = count_jobs()
    except InputError as exc:
        problems = [
            {"file": p.file, "line": p.line, "field": p.field, "message": p.message}
            for p in exc.problems
        ]
        total = len(problems) + exc.omitted
        doc.update(ok=False, exit_code=exc.exit_code)
    except BatchgenError as exc:
        doc.update(ok=False, exit_code=exc.exit_code, error=str(exc))
    except OSError as exc:  # as `main` maps it: a file that cannot be read at all
        doc.update(ok=False, exit_code=EXIT_USAGE, error=str(exc))
    files: dict[str, int] = {}
    for p in problems:
        files[p["file"]] = files.get(p["file"], 0) + 1
    doc["problems"] = problems
    doc["counts"] = {"problems": total, "listed": len(problems), "files": files}
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return int(doc["exit_code"])


__all__ = ["CI_FLAGS", "as_json", "verdict"]
