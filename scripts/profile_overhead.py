#!/usr/bin/env python3
"""Where a zero-latency run's time goes: phases, state statements, and what each
guarantee's writes cost in place (issue 18, goal 6).

Runs `batchgen run` on N jobs against one zero-latency simulator, in rounds that
alternate these variants with the naive baseline (`baseline_naive.py`):

* ``as-is``: batchgen as shipped;
* ``no-state-writes``: the per-job rows (attempt, end, request cache) and the
  request-cache lookup replaced by no-ops;
* ``no-image-writes``: each answer's image checked but not written;
* ``neither``: both;
* ``recorder``: a prototype of the step these point at: the per-job rows and
  the image writes done by a second process that owns its own SQLite
  connection, sent one unit of work at a time over a pipe; the unit's
  request slots are freed when that process says the unit is committed.
  Only the zero-latency path is covered (small images, no sizes, no errors,
  no kill or disk-full handling): it measures whether the design pays, it
  is not a way to run batchgen.

The variants are a measurement, not a mode of batchgen: they drop guarantees
to show what those cost inside a real run, where timing a statement alone
(a few microseconds on a warm CPU cache) understates it. Each child prints its
phases (imports, planning, the pool, the report); with ``--statements`` one
more as-is run times every SQL statement of the pool. The outputs go to a
temporary folder on the same disk as the benchmark's and are removed at the end.

Usage: profile_overhead.py [--jobs 20000] [--rounds 3] [--statements] [--dir /dev/shm]
                           [--variants as-is,recorder]

``--dir`` on a tmpfs takes the disk out of the figures: on the project's test
machine, creating files soon after many were removed costs several times more
(docs/performance.md, "The machine under the zero-latency scenario").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the benchmark's simulator, jobs and baseline helpers

VARIANTS = ("as-is", "no-state-writes", "no-image-writes", "neither", "recorder")
MARK = "PROFILE "


def child(variant: str, statements: bool, argv: list[str]) -> int:
    """Run the CLI in this process with `variant`'s parts replaced; print one
    `MARK` line of phase times (and statement times) on stderr at the end."""
    t0, c0 = time.perf_counter(), time.process_time()
    from batchgen.cli.main import main
    from batchgen.engine import runner
    from batchgen.output import writer
    from batchgen.store import db, jobs, requests

    phases: dict[str, float] = {"imports": round(time.perf_counter() - t0, 3)}
    in_pool = [False]  # statements are timed while the pool runs

    def timed(name: str, label: str) -> None:
        fn = getattr(runner, name)
        if name == "_schedule":

            async def wrapped_async(*a: Any, **k: Any) -> Any:
                start = time.perf_counter()
                in_pool[0] = True
                try:
                    return await fn(*a, **k)
                finally:
                    in_pool[0] = False
                    phases[label] = round(time.perf_counter() - start, 3)

            setattr(runner, name, wrapped_async)
            return

        def wrapped(*a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = round(time.perf_counter() - start, 3)

        setattr(runner, name, wrapped)

    timed("_plan_run", "plan")
    timed("_schedule", "pool")
    timed("_report", "report")
    if variant in ("no-state-writes", "neither"):
        jobs.JobsTable.record_attempt = lambda self, *a, **k: None  # type: ignore[method-assign]
        jobs.JobsTable.finish = lambda self, *a, **k: None  # type: ignore[method-assign]
        requests.RequestTables.remember_request = lambda self, *a, **k: None  # type: ignore[method-assign]
        requests.RequestTables.cached_request = lambda self, key: None  # type: ignore[method-assign]
    if variant in ("no-image-writes", "neither"):

        async def save(self: writer.Writer, job: Any, images: Any) -> writer.Written | None:
            dims = writer._dims(images)
            return (
                None
                if dims is None
                else writer.Written([f"images/{job.id}.png"], [], None, dims[0])
            )

        writer.Writer.save = save  # type: ignore[method-assign]
    recorder = _second_process() if variant == "recorder" else None
    stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    if statements:
        original = db._Connection.execute

        def execute(self: Any, sql: str, parameters: Any = (), /) -> Any:
            if not in_pool[0]:
                return original(self, sql, parameters)
            start = time.perf_counter()
            try:
                return original(self, sql, parameters)
            finally:
                entry = stats[" ".join(sql.split())[:60]]
                entry[0] += 1
                entry[1] += time.perf_counter() - start

        db._Connection.execute = execute  # type: ignore[method-assign]
    rc = main(argv)
    phases["total"] = round(time.perf_counter() - t0, 3)
    phases["cpu"] = round(time.process_time() - c0, 3)
    doc: dict[str, Any] = {"variant": variant, **phases}
    if recorder is not None:
        doc["recorder_cpu"] = round(recorder(), 3)
    if statements:
        doc["statements"] = {k: [int(n), round(s, 4)] for k, (n, s) in stats.items()}
    print(MARK + json.dumps(doc), file=sys.stderr)
    return rc


def _second_process() -> Callable[[], float]:
    """Fork the `recorder` variant's writer process and route the pool's per-job
    rows and image writes to it; returns a function that ends it and gives its CPU.

    The ledger's units of work are kept (`GROUP_S`, a commit per turn when the
    API bounds the run), but a unit is sent, rows and image bytes, to the
    other process, which writes the images atomically, then the rows with one
    `executemany` per statement and a COMMIT, and answers with the unit's
    number; only then are the unit's `after_commit` calls (the slots) run. The
    request-cache lookup looks through the rows of units not yet answered."""
    import multiprocessing

    here, there = multiprocessing.Pipe()
    if os.fork() == 0:
        here.close()
        _record(there)
        os._exit(0)
    there.close()
    import asyncio

    from batchgen.engine import ledger
    from batchgen.output import writer
    from batchgen.output.mime import extension_for
    from batchgen.output.sink import image_prefix
    from batchgen.output.thumbs import is_own_preview
    from batchgen.store import db

    rows: dict[str, list[Any]] = {}
    files: list[tuple[str, bytes]] = []
    sent: dict[int, dict[str, list[Any]]] = {}
    waiting: dict[int, list[Callable[[], None]]] = {}
    where: dict[str, str] = {}
    units = iter(range(1 << 62))

    def write_row(self: db.Database, sql: str, parameters: tuple[Any, ...]) -> None:
        where.setdefault("out", str(self.out))
        where.setdefault("db", str(self.path))
        rows.setdefault(sql, []).append(parameters)

    def held_rows(self: db.Database, sql: str) -> list[Any]:
        return [r for unit in sent.values() for r in unit.get(sql, ())] + rows.get(sql, [])

    def answered() -> None:
        while here.poll():
            unit = here.recv()
            sent.pop(unit, None)
            for fn in waiting.pop(unit, []):
                fn()

    def send(after: list[Callable[[], None]]) -> None:
        nonlocal rows, files
        if not rows and not files:
            for fn in after:
                fn()
            return
        unit = next(units)
        if not sent and not waiting:
            loop = asyncio.get_running_loop()
            loop.remove_reader(here.fileno())
            loop.add_reader(here.fileno(), answered)
        sent[unit], waiting[unit] = rows, after
        here.send((unit, where["out"], where["db"], files, rows))
        rows, files = {}, []

    def open_unit(self: ledger.Ledger) -> None:
        if self._commit_handle is None:
            loop = asyncio.get_running_loop()
            self._grouped = self._busy()
            if self._grouped:
                self._commit_handle = loop.call_later(ledger.GROUP_S, self._commit)
            else:
                self._commit_handle = loop.call_soon(self._commit)

    def commit(self: ledger.Ledger) -> None:
        self._forget_unit()
        after, self._after = self._after, []
        send(after)

    def close(self: ledger.Ledger) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
        commit(self)
        os.set_blocking(here.fileno(), True)  # uvloop's reader left it non-blocking
        while sent:
            unit = here.recv()
            sent.pop(unit, None)
            for fn in waiting.pop(unit, []):
                fn()

    async def save(self: writer.Writer, job: Any, images: Any) -> writer.Written | None:
        dims = writer._dims(images)
        if dims is None:
            return None
        prefix = image_prefix(job.id, sharded=self.sharded)
        paths = []
        for n, image in enumerate(images, start=1):
            rel = f"{prefix}/{job.id}{'' if n == 1 else f'-{n}'}.{extension_for(image.mime_type)}"
            files.append((rel, image.data))
            paths.append(rel)
        head = images[0]
        own = is_own_preview("." + extension_for(head.mime_type), dims[0], len(head.data))
        return writer.Written(paths, [], paths[0] if own else None, dims[0])

    db.Database._write_row = write_row  # type: ignore[method-assign]
    db.Database._held_rows = held_rows  # type: ignore[method-assign]
    db.Database._writing = lambda self: None  # type: ignore[method-assign]
    ledger.Ledger._open = open_unit  # type: ignore[method-assign]
    ledger.Ledger._commit = commit  # type: ignore[method-assign]
    ledger.Ledger.close = close  # type: ignore[method-assign]
    writer.Writer.save = save  # type: ignore[method-assign]

    def end() -> float:
        os.set_blocking(here.fileno(), True)
        here.send(None)
        cpu: float = here.recv()
        return cpu

    return end


def _record(there: Any) -> None:
    """The `recorder` variant's other process: units in, images and rows out."""
    import sqlite3

    from batchgen.output import atomic

    conn: sqlite3.Connection | None = None
    folders: set[str] = set()
    c0 = time.process_time()
    while True:
        try:
            message = there.recv()
        except EOFError:
            return
        if message is None:
            there.send(time.process_time() - c0)
            return
        unit, out, path, files, rows = message
        if conn is None:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=NORMAL")
        for rel, data in files:
            folder = os.path.dirname(rel)
            if folder not in folders:
                os.makedirs(os.path.join(out, folder), exist_ok=True)
                folders.add(folder)
            atomic.write_bytes(os.path.join(out, rel), data)
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in rows.items():
            conn.executemany(sql, params)
        conn.execute("COMMIT")
        there.send(unit)


def run_variant(
    variant: str, jobs: Path, out: Path, url: str, *, statements: bool = False
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant]
    cmd += ["--statements"] if statements else []
    cmd += ["--", "run", str(jobs), "--out", str(out), "--base-url", url, "--no-progress"]
    cmd += ["--model", bench.BASELINE_MODEL, "--concurrency", "64"]
    done = subprocess.run(cmd, env=bench.env_for(), capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        if line.startswith(MARK):
            doc: dict[str, Any] = json.loads(line[len(MARK) :])
            return doc
    raise RuntimeError(f"{variant}: no profile line (exit {done.returncode}): {done.stderr[-400:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--statements", action="store_true", help="also time each statement")
    parser.add_argument(
        "--dir", type=Path, help="where the outputs go (default: the system's temporary folder)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="which to run, comma-separated (as-is is always run: the others are against it)",
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return child(args.child, args.statements, [a for a in rest if a != "--"])
    chosen = {v.strip() for v in args.variants.split(",")}
    unknown = chosen - set(VARIANTS)
    if unknown:
        parser.error(
            f"--variants: unknown {', '.join(sorted(unknown))} (known: {', '.join(VARIANTS)})"
        )
    variants = [v for v in VARIANTS if v in chosen or v == "as-is"]
    tmp = Path(tempfile.mkdtemp(prefix="batchgen-profile-", dir=args.dir))
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in (*variants, "baseline")}
    try:
        jobs = bench.write_jobs(tmp / "jobs.jsonl", args.jobs, tag="ovh")
        with bench.sim() as server:
            for i in range(args.rounds):
                for variant in variants:
                    os.sync()
                    results[variant].append(
                        run_variant(variant, jobs, tmp / f"{variant}-{i}", server.url)
                    )
                    print(f"round {i + 1}: {json.dumps(results[variant][-1])}", file=sys.stderr)
                b_child, _ = bench.baseline(jobs, tmp / f"baseline-{i}", server.url, 64)
                results["baseline"].append(
                    {"total": round(b_child.wall, 3), "cpu": round(b_child.cpu, 3)}
                )
            if args.statements:
                os.sync()
                timed = run_variant("as-is", jobs, tmp / "statements", server.url, statements=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "variant"}
        for v, rs in results.items()
    }
    base_total = med["baseline"]["total"]
    pool = med["as-is"]["pool"]
    print(
        f"{args.jobs:,} jobs at zero latency, C=64, "
        f"median of {args.rounds} alternating rounds (seconds)"
    )
    print("variant          plan   pool   report  total   pool saved  baseline ÷ total")
    for variant in variants:
        m = med[variant]
        print(
            f"{variant:15s} {m['plan']:6.2f} {m['pool']:6.2f} {m['report']:7.2f} {m['total']:6.2f}"
            f"   {pool - m['pool']:9.2f}   {base_total / m['total']:.2f}"
        )
    print(f"baseline                             {base_total:6.2f}")
    if "no-image-writes" in med:
        print("(no-image-writes' report also makes the previews of images it never wrote)")
    if "recorder" in med:
        print(f"(recorder: its other process used {med['recorder']['recorder_cpu']:.2f} CPU-s)")
    if args.statements:
        print("\nstatements of one as-is run's pool (count, seconds, µs each):")
        for sql, (n, s) in sorted(timed["statements"].items(), key=lambda kv: -kv[1][1])[:8]:
            print(f"  {n:7d} {s:7.3f} {s / n * 1e6:7.1f}  {sql}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
