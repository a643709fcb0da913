"""junit: the store in, a JUnit XML file out, and the `--fail-under` verdict.

A CI system shows a run as a test suite: one test case per job, named by its
id and grouped by the job file it came from. A done job passes; a failed or
blocked one is a ``<failure>`` whose ``type`` is the error kind and whose
``message`` is the server's (or the policy's) message; a skipped one (its
parent did not finish) and a pending one (left by ``--limit``, or by a run that
stopped: exit 3 or 130) are ``<skipped>``, each saying why. Like the report, it
describes every job of the folder across all its runs, so a resumed run's file
is whole.

Built for a million jobs: the counts at the top come from the store's
aggregates, then each test case is written as its row streams from the store
(never a tree in memory), into a temporary file renamed into place
(`output/atomic.py`). Read from a folder a run is writing (`batchgen report OUT
--junit`), the counts are those of a moment before the rows.

Everything that comes from a job file or a server (ids, prompts, messages) is
escaped; characters XML 1.0 cannot carry at all (control characters, lone
surrogates) are written as visible ``\\xNN`` / ``\\uNNNN`` escapes rather than
dropped, so the file always parses. The API key, if it was ever echoed into a
message or a prompt, is redacted once more here.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from batchgen.config import RunConfig, Secret
from batchgen.errors import EXIT_OK, EXIT_SOME_FAILED
from batchgen.models import FINAL_STATUSES, JobRecord, Status, StopReason
from batchgen.output.atomic import write_text
from batchgen.store import Store

__all__ = [
    "RunFacts",
    "done_share",
    "judge",
    "judge_folder",
    "write_junit",
    "write_run_junit",
]

#: What XML 1.0 cannot carry (C0 controls but tab, LF and CR; lone surrogates;
#: U+FFFE/U+FFFF), and the C1 controls and DEL, which it can but no reader wants.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"}
#: In an attribute, line ends and tabs too: a parser would fold them into spaces.
_ATTR_ENTITIES = {**_ENTITIES, "\n": "&#10;", "\t": "&#9;"}
_TEXT = re.compile('[&<>"\r]')
_ATTR = re.compile('[&<>"\r\n\t]')


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


#: Anything either escape changes: most ids and messages have none, and one
#: search is cheaper than two substitutions (a million rows).
_ANY = re.compile('[&<>"\t\n\r\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]')


def text(value: str) -> str:
    """`value` as XML character data."""
    if not _ANY.search(value):
        return value
    value = _UNSAFE.sub(_visible, value)
    return _TEXT.sub(lambda m: _ENTITIES[m.group()], value)


def attr(value: object) -> str:
    """`value` as a double-quoted XML attribute's content."""
    cleaned = str(value)
    if not _ANY.search(cleaned):
        return cleaned
    cleaned = _UNSAFE.sub(_visible, cleaned)
    return _ATTR.sub(lambda m: _ATTR_ENTITIES[m.group()], cleaned)


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the run that wrote the file knew beyond the store: written as the
    suite's properties. `batchgen report --junit` has none of them."""

    exit_code: int | None = None
    stop: str | None = None
    fail_under: float | None = None
    secret: Secret | None = field(default=None, repr=False)


def done_share(counts: Mapping[str, int]) -> float | None:
    """The share of ended jobs (done, failed, blocked, skipped) that are done;
    None when none ended. Pending jobs (left by ``--limit``) do not count."""
    ended = sum(counts.get(status.value, 0) for status in FINAL_STATUSES)
    return counts.get(Status.DONE.value, 0) / ended if ended else None


def judge(exit_code: int, counts: Mapping[str, int], fail_under: float | None) -> int:
    """The exit code after ``--fail-under RATE``: a run that finished (0 or 1)
    passes when at least RATE of its ended jobs are done. Every other code
    (2 usage, 3 stopped, 4 still running, 130 interrupted) means the run did
    not finish, and stands. With no job ended there is nothing to judge."""
    if fail_under is None or exit_code not in (EXIT_OK, EXIT_SOME_FAILED):
        return exit_code
    share = done_share(counts)
    if share is None:
        return exit_code
    return EXIT_OK if share >= fail_under else EXIT_SOME_FAILED


def judge_folder(store: Store, exit_code: int, fail_under: float | None) -> int:
    """`judge` on the whole folder's jobs, as the report counts them (a resumed
    run is judged on every job); the counts are read only under ``--fail-under``."""
    return exit_code if fail_under is None else judge(exit_code, store.counts(), fail_under)


def write_run_junit(
    store: Store, config: RunConfig, exit_code: int, stop: StopReason | None
) -> None:
    """``--junit FILE`` at the end of a run (after the report; a stopped run too)."""
    if config.junit is None:
        return
    why = None if stop is None else f"{stop.kind}: {stop.message}"
    write_junit(store, config.junit, RunFacts(exit_code, why, config.fail_under, config.api_key))


def write_junit(store: Store, path: Path, facts: RunFacts = RunFacts()) -> None:
    """Write the folder's jobs to `path` as one JUnit test suite, atomically."""
    t = store.totals()
    counts = {
        Status.DONE.value: t.done,
        Status.FAILED.value: t.failed,
        Status.BLOCKED.value: t.blocked,
        Status.SKIPPED.value: t.skipped,
    }
    head = (
        f'tests="{t.jobs}" failures="{t.failed + t.blocked}" errors="0" '
        f'skipped="{t.skipped + t.pending}" time="{t.elapsed_s:.3f}"'
    )
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with write_text(path) as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        fh.write(f'<testsuites name="batchgen" {head}>\n')
        fh.write(
            f'  <testsuite name="{attr(f"batchgen {store.out}")}" {head} '
            f'timestamp="{now}" hostname="{attr(socket.gethostname())}">\n'
        )
        _properties(fh, store.out, counts, t.pending, facts)
        for rec in store.records():
            _testcase(fh, rec, facts.secret)
        fh.write("  </testsuite>\n</testsuites>\n")


def _properties(
    fh: TextIO, out: Path, counts: Mapping[str, int], pending: int, facts: RunFacts
) -> None:
    share = done_share(counts)
    props: dict[str, object] = {
        "out": out,
        "done": counts[Status.DONE.value],
        "pending": pending,
        "done_share": "" if share is None else f"{share:.4f}",
    }
    if facts.fail_under is not None:
        props["fail_under"] = facts.fail_under
    if facts.exit_code is not None:
        props["exit_code"] = facts.exit_code
    if facts.stop:
        props["stop"] = facts.secret.redact(facts.stop) if facts.secret else facts.stop
    fh.write("    <properties>\n")
    for name, value in props.items():
        fh.write(f'      <property name="{name}" value="{attr(value)}"/>\n')
    fh.write("    </properties>\n")


def _testcase(fh: TextIO, rec: JobRecord, secret: Secret | None) -> None:
    source = os.path.basename(rec.source) or "batchgen"
    seconds = (
        rec.finished_at - rec.started_at
        if rec.finished_at is not None and rec.started_at is not None
        else 0.0
    )
    fh.write(
        f'    <testcase classname="{attr(source)}" name="{attr(rec.id)}" '
        f'file="{attr(rec.source)}" line="{rec.line}" time="{max(seconds, 0.0):.3f}"'
    )
    body = _outcome(rec, secret)
    fh.write(f">\n{body}    </testcase>\n" if body else "/>\n")


def _outcome(rec: JobRecord, secret: Secret | None) -> str:
    """The test case's inner elements: nothing for a done job (but its files)."""

    def clean(value: str) -> str:
        return secret.redact(value) if secret is not None else value

    if rec.status is Status.DONE:
        if not rec.files:
            return ""
        return f"      <system-out>{text(chr(10).join(rec.files))}</system-out>\n"
    if rec.status is Status.PENDING:
        why = "pending: not ended yet (--limit, or the run stopped; the same command resumes)"
        return f'      <skipped message="{attr(why)}"/>\n'
    err = rec.error
    kind = err.kind if err is not None else rec.status.value
    message = clean(err.message) if err is not None else ""
    if rec.status is Status.SKIPPED:
        return f'      <skipped type="{attr(kind)}" message="{attr(message or "skipped")}"/>\n'
    status = f" (HTTP {err.http_status})" if err is not None and err.http_status else ""
    what = rec.status.value if kind == rec.status.value else f"{rec.status.value}: {kind}"
    detail = f"{what}{status}\n{message}\nprompt: {clean(rec.prompt)}"
    return (
        f'      <failure type="{attr(kind)}" message="{attr(message or rec.status.value)}">'
        f"{text(detail)}</failure>\n"
    )
