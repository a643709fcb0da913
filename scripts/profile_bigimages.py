#!/usr/bin/env python3
"""Where a large answer's request slot goes: the stages of a real-size run
(issue 18, goal 1), timed in place.

Goal 1 counts jobs per second against C/L. A slot is busy from the moment it
is taken until the answer is on record, so every millisecond past the
latency in any stage costs C/L. This runs the benchmark's real-size scenario
(`bench.py` scenario 7: noisy 2048-px or 4096-px answers, 4 s of latency)
with timers on each stage of every job:

* ``slot``: the request slot taken until it is freed (the whole cycle);
* ``send``: the request sent until its whole body is in its spool file,
  of which ``body`` is reading the body once the headers are in;
* ``unspool``: waiting for one of the few decode places, then parsing;
* ``save``: checking the image, writing it and making its preview.

Rounds alternate two variants, each in its own process:

* ``as-is``: batchgen as shipped;
* ``no-previews``: the gallery previews left to the report at the end (a
  measurement, not a mode: it shows what making the preview while the slot
  waits costs the rate; the report then makes every preview after the last
  checkpoint, so its CPU per image rises).

Usage: profile_bigimages.py [--size 4096|2048] [--jobs N] [--concurrency C] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # the benchmark's simulator, jobs and helpers

VARIANTS = ("as-is", "no-previews")
STAGES = ("slot", "send", "body", "unspool", "save")
MARK = "PROFILE "
LATENCY_S = 4.0


def _timed(fn: Callable[..., Awaitable[Any]], into: list[float]) -> Callable[..., Awaitable[Any]]:
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)

    return wrapped


def child(variant: str, argv: list[str]) -> int:
    """Run the CLI in this process with timers on each stage (and `variant`'s
    change); print one `MARK` line of the stages' times on stderr at the end."""
    from batchgen.cli.main import main
    from batchgen.engine import pool
    from batchgen.output import spool, writer

    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    build = pool.Pool.__init__

    def init(self: pool.Pool, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        self._send = _timed(self._send, times["send"])  # type: ignore[assignment]
        slots = self._slots
        taken: list[float] = []  # slots are freed in no particular order: times, FIFO
        acquire, release = slots.acquire, slots.release

        async def take() -> bool:
            got = await acquire()
            taken.append(time.perf_counter())
            return got

        def free() -> None:
            if taken:
                times["slot"].append(time.perf_counter() - taken.pop(0))
            release()

        slots.acquire = take  # type: ignore[method-assign]
        slots.release = free  # type: ignore[method-assign]

    pool.Pool.__init__ = init  # type: ignore[method-assign]
    pool.Pool._unspool = _timed(pool.Pool._unspool, times["unspool"])  # type: ignore[method-assign,assignment]
    writer.Writer.save = _timed(writer.Writer.save, times["save"])  # type: ignore[method-assign,assignment]
    spool.receive = _timed(spool.receive, times["body"])  # type: ignore[assignment]
    if variant == "no-previews":
        start_writer = writer.Writer.__init__

        def no_previews(self: writer.Writer, *args: Any, **kwargs: Any) -> None:
            start_writer(self, *args, **{**kwargs, "thumbnails": False})

        writer.Writer.__init__ = no_previews  # type: ignore[method-assign]
    c0 = time.process_time()
    rc = main(argv)
    doc = {"variant": variant, "cpu": time.process_time() - c0, **times}
    print(MARK + json.dumps(doc), file=sys.stderr)
    return rc


def run_variant(variant: str, jobs: Path, out: Path, url: str, concurrency: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--"]
    cmd += ["run", str(jobs), "--out", str(out), "--base-url", url, "--no-progress"]
    cmd += ["--model", bench.BASELINE_MODEL, "--concurrency", str(concurrency)]
    os.sync()
    done = subprocess.run(cmd, env=bench.env_for(), capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        if line.startswith(MARK):
            doc: dict[str, Any] = json.loads(line[len(MARK) :])
            doc["rate"] = bench.steady_rate(out, LATENCY_S)
            return doc
    raise RuntimeError(f"{variant}: no profile line (exit {done.returncode}): {done.stderr[-400:]}")


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, choices=(2048, 4096), default=4096)
    parser.add_argument("--jobs", type=int, help="default: as in the benchmark (320, 640)")
    parser.add_argument("--concurrency", type=int, help="default: as in the benchmark (32, 64)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="where the outputs go")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        return child(args.child, [a for a in rest if a != "--"])
    # The benchmark's scenario 7: 2048 px RGB noise, or 4096 px palette noise.
    big = args.size == 4096
    args.jobs = args.jobs or (640 if big else 320)
    args.concurrency = args.concurrency or (64 if big else 32)
    noise = ("--rgb-noise", "2") if args.size == 2048 else ("--noise", "4")
    limit = args.concurrency / LATENCY_S
    tmp = Path(tempfile.mkdtemp(prefix="batchgen-bigimages-", dir=args.dir))
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    try:
        jobs = bench.write_jobs(tmp / "jobs.jsonl", args.jobs, tag="big")
        flags = (noise[0], "--noise-pool", "4", "--size-scale", noise[1])
        with bench.sim(*flags, "--latency", f"{LATENCY_S:g}", small=False) as server:
            for i in range(args.rounds):
                for variant in VARIANTS:
                    out = tmp / f"{variant}-{i}"
                    doc = run_variant(variant, jobs, out, server.url, args.concurrency)
                    results[variant].append(doc)
                    print(
                        f"round {i + 1} {variant}: {doc['rate'] / limit:.3f} of C/L",
                        file=sys.stderr,
                        flush=True,
                    )
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"{args.jobs} jobs of {args.size}-px answers, C={args.concurrency}, "
        f"L={LATENCY_S:g}s (C/L = {limit:g} jobs/s); stage times in ms over every "
        f"job of {args.rounds} rounds"
    )
    print("variant       rate÷C/L (each round)   CPU ms/image  stage    mean   p50   p90   max")
    for variant, docs in results.items():
        ratios = [d["rate"] / limit for d in docs]
        head = f"{statistics.median(ratios):.3f} (" + ", ".join(f"{r:.3f}" for r in ratios) + ")"
        cpu = statistics.median(d["cpu"] for d in docs) * 1000 / args.jobs
        for n, stage in enumerate(STAGES):
            values = [v for d in docs for v in d[stage]]
            if not values:
                continue
            lead = f"{variant:13s} {head:23s} {cpu:13.1f}" if n == 0 else " " * 51
            print(
                f"{lead}  {stage:7s} {statistics.mean(values) * 1000:6.0f} "
                f"{_ms(values, 0.5):5.0f} {_ms(values, 0.9):5.0f} {_ms(values, 1.0):5.0f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
