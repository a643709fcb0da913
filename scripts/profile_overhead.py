#!/usr/bin/env python3
"""Where a zero-latency run's time goes: phases, state statements, and what each
guarantee's writes cost in place (issue 18, goal 6).

Runs `batchgen run` on N jobs against one zero-latency simulator, in rounds that
alternate these variants with the naive baseline (`baseline_naive.py`):

* ``as-is``: batchgen as shipped;
* ``no-state-writes``: the per-job rows (attempt, end, request cache) and the
  request-cache lookup replaced by no-ops;
* ``no-image-writes``: each answer's image checked but not written;
* ``neither``: both.

The variants are a measurement, not a mode of batchgen: they drop guarantees
to show what those cost inside a real run, where timing a statement alone
(a few microseconds on a warm CPU cache) understates it. Each child prints its
phases (imports, planning, the pool, the report); with ``--statements`` one
more as-is run times every SQL statement of the pool. The outputs go to a
temporary folder on the same disk as the benchmark's and are removed at the end.

Usage: profile_overhead.py [--jobs 20000] [--rounds 3] [--statements] [--dir /dev/shm]

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the benchmark's simulator, jobs and baseline helpers

VARIANTS = ("as-is", "no-state-writes", "no-image-writes", "neither")
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
    if statements:
        doc["statements"] = {k: [int(n), round(s, 4)] for k, (n, s) in stats.items()}
    print(MARK + json.dumps(doc), file=sys.stderr)
    return rc


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
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return child(args.child, args.statements, [a for a in rest if a != "--"])
    tmp = Path(tempfile.mkdtemp(prefix="batchgen-profile-", dir=args.dir))
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in (*VARIANTS, "baseline")}
    try:
        jobs = bench.write_jobs(tmp / "jobs.jsonl", args.jobs, tag="ovh")
        with bench.sim() as server:
            for i in range(args.rounds):
                for variant in VARIANTS:
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
    for variant in VARIANTS:
        m = med[variant]
        print(
            f"{variant:15s} {m['plan']:6.2f} {m['pool']:6.2f} {m['report']:7.2f} {m['total']:6.2f}"
            f"   {pool - m['pool']:9.2f}   {base_total / m['total']:.2f}"
        )
    print(f"baseline                             {base_total:6.2f}")
    print("(no-image-writes' report also makes the previews of images it never wrote)")
    if args.statements:
        print("\nstatements of one as-is run's pool (count, seconds, µs each):")
        for sql, (n, s) in sorted(timed["statements"].items(), key=lambda kv: -kv[1][1])[:8]:
            print(f"  {n:7d} {s:7.3f} {s / n * 1e6:7.1f}  {sql}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
