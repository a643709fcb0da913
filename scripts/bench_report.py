#!/usr/bin/env python3
"""The report of a big settled folder: time, memory, and the gallery in a browser.

Builds an N-job settled output folder directly through the `Store` (no
simulator, no image files: each job's first image is recorded as its own
preview, as the pipeline does for small answers, so the report makes no
previews), then runs `batchgen report OUT` as a child process and opens the
gallery in the chromium of `scripts/install-browser`. Prints one table of
figures and their ratios to the issue's limits:

- report: wall seconds / 60 s and peak RSS (the child's own rusage) / 300 MB;
- gallery: seconds from navigation to the first page of cards, and to the
  cards of a status filter and of a tag filter / 3 s.

    python scripts/bench_report.py --jobs 1000000            # build, report, browse
    python scripts/bench_report.py --jobs 200000 --keep DIR  # keep the folder in DIR
    python scripts/bench_report.py --folder DIR              # an existing folder

The folder's mix: 96 % done, 2 % failed (two error kinds), 1 % blocked, the
rest skipped and pending; 20 tags; every 30th job retried after a 429;
every 50th edits a reference image (a real small PNG in the folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchgen.models import ErrorInfo, Job, Status  # noqa: E402
from batchgen.store import Store  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
BATCH = 20_000


def _outcome(i: int) -> tuple[Status, ErrorInfo | None]:
    r = i % 200
    if r < 4:
        return Status.FAILED, ErrorInfo("bad_request" if r < 2 else "no_image", 400, "nope")
    if r < 6:
        return Status.BLOCKED, ErrorInfo("blocked", 200, "SAFETY")
    if r == 6:
        return Status.SKIPPED, ErrorInfo("parent_failed", None, "parent failed")
    if r == 7:
        return Status.PENDING, None
    return Status.DONE, None


def build(out: Path, n: int) -> float:
    """A settled `n`-job folder; returns the seconds it took."""
    from PIL import Image

    started = time.perf_counter()
    refs = out / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    ref_paths = []
    for k in range(4):
        path = refs / f"ref{k}.png"
        Image.new("RGB", (32, 32), (k * 60, 90, 160)).save(path)
        ref_paths.append(str(path))
    with Store(out) as store:
        with store.transaction():
            store.start_run()
            store.set_meta("sharded", "1")
        for lo in range(0, n, BATCH):
            with store.transaction():
                for i in range(lo, min(n, lo + BATCH)):
                    _add(store, i, ref_paths)
        with store.transaction():
            store.end_run(0)
    return time.perf_counter() - started


def _add(store: Store, i: int, refs: list[str]) -> None:
    job_id = f"m{i:07d}"
    images = (refs[i // 50 % len(refs)],) if i % 50 == 0 else ()
    job = Job(
        id=job_id,
        prompt=f"studio photo of catalogue item {i}, white background",
        tags=(f"cat{i % 20}",),
        images=images,
        source="jobs.jsonl",
        line=i + 1,
    )
    store.plan(job, f"fp{i}", reset=True)
    status, error = _outcome(i)
    if status in (Status.PENDING, Status.SKIPPED):
        if status is Status.SKIPPED:
            store.finish(job_id, status, error=error)
        return
    if i % 30 == 0:
        store.record_retry(job_id, "rate_limited")
    store.record_attempt(
        job_id,
        cost=0.039,
        prompt_tokens=12,
        output_tokens=1290,
        cost_source="usage",
        model="gemini-2.5-flash-image",
        image_size="1K",
        mode="live",
    )
    files = [f"images/{i % 256:02x}/{job_id}.png"] if status is Status.DONE else None
    store.finish(
        job_id,
        status,
        files=files,
        error=error,
        preview=files[0] if files else None,
        pixels="16x16" if files else None,
    )


@dataclass
class Child:
    rc: int
    wall: float
    #: CPU seconds (user + system): on a shared machine, what the wall time would
    #: be with a core to itself, give or take the disk.
    cpu: float
    maxrss_mb: float
    stderr: str


def report(out: Path, *extra: str) -> Child:
    """`batchgen report OUT` in a child, timed, with its own peak RSS."""
    os.sync()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "batchgen", "report", str(out), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    cpu = usage.ru_utime + usage.ru_stime
    return Child(os.waitstatus_to_exitcode(status), wall, cpu, usage.ru_maxrss / 1024, err)


def browse(out: Path, rare: str = "m0999", failures: bool = True) -> dict[str, float]:
    """Seconds to the first page of cards, then to each filter's cards. `rare` is
    searched for; without `failures` (a folder where every job is done) the steps
    that filter on failed jobs are left out, since they would have nothing to page."""
    from playwright.sync_api import sync_playwright

    times: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(120_000)
        started = time.perf_counter()
        pg.goto((out / "report.html").as_uri())
        pg.wait_for_selector("body[data-ready='1'] [data-testid=card]")
        times["open"] = time.perf_counter() - started
        seen = [pg.evaluate("document.body.dataset.renders")]

        def settle() -> None:
            """Wait until the page has drawn once more since the last settle."""
            pg.wait_for_function(f"document.body.dataset.renders !== {seen[0]!r}")
            seen[0] = pg.evaluate("document.body.dataset.renders")

        def choose(testid: str, value: str) -> None:
            pg.get_by_test_id(testid).select_option(value)

        def click(testid: str) -> None:
            pg.locator(f"[data-testid={testid}], #{testid}").first.click()

        def search(text: str) -> None:
            pg.get_by_test_id("search").fill(text)

        reset_sort = lambda: (click("reset"), settle(), choose("sort", "cost"))  # noqa: E731
        reset_search = lambda: (click("reset"), settle(), search(rare))  # noqa: E731
        if failures:
            steps = [
                ("status filter (failed)", lambda: choose("filter-status", "failed")),
                ("its page 3", lambda: (click("next"), settle(), click("next"))),
                ("tag filter on top (failed, cat3)", lambda: choose("filter-tag", "cat3")),
                (
                    "reset, tag filter (cat7)",
                    lambda: (click("reset"), settle(), choose("filter-tag", "cat7")),
                ),
                ("its next page", lambda: click("next")),
                ("sort by cost", reset_sort),
            ]
        else:  # every job done: no failed filter; page the whole list, which has pages
            steps = [
                ("tag filter (cat7)", lambda: choose("filter-tag", "cat7")),
                ("sort by cost", reset_sort),
                ("its next page", lambda: click("next")),
            ]
        steps.append(("search (a rare id)", reset_search))
        for name, action in steps:
            started = time.perf_counter()
            action()
            settle()
            times[name] = time.perf_counter() - started
        browser.close()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the built folder")
    parser.add_argument("--folder", type=Path, help="report on this folder instead of building")
    parser.add_argument("--keep", type=Path, help="build the folder here and keep it")
    parser.add_argument("--build-only", action="store_true", help="build the folder and stop")
    parser.add_argument("--no-browser", action="store_true", help="skip the gallery timings")
    args = parser.parse_args(argv)
    tmp: Path | None = None
    if args.folder:
        out = args.folder
    else:
        base = args.keep or Path(tempfile.mkdtemp(prefix="batchgen-bench-report-"))
        tmp = None if args.keep else base
        out = base / "out"
        print(f"building a settled {args.jobs:,}-job folder in {out}", file=sys.stderr)
        took = build(out, args.jobs)
        print(f"built in {took:.0f} s", file=sys.stderr)
    try:
        if args.build_only:
            return 0
        rows = [("figure", "value", "limit", "ratio")]
        child = report(out)
        if child.rc != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        rows.append(("report: seconds", f"{child.wall:.1f}", "60", f"{child.wall / 60:.2f}"))
        rows.append(("report: CPU seconds", f"{child.cpu:.1f}", "60", f"{child.cpu / 60:.2f}"))
        rss = child.maxrss_mb
        rows.append(("report: peak RSS MB", f"{rss:.0f}", "300", f"{rss / 300:.2f}"))
        if not args.no_browser:
            for name, secs in browse(out).items():
                rows.append((f"gallery: {name}, s", f"{secs:.2f}", "3", f"{secs / 3:.2f}"))
        print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
