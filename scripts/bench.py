#!/usr/bin/env python3
"""batchgen's performance benchmark: one table, re-runnable by anyone.

Starts the simulator (`batchgen sim serve`) in its own process, runs batchgen
as a subprocess against it for each scenario of the performance issue, and
prints one table: scenario, figure, value, limit, ratio to the limit, pass or
fail. In the same invocation and on the same simulators it runs the naive
baseline (`scripts/baseline_naive.py`: pandas, one task per row under
`asyncio.gather` and a semaphore, tenacity retries, no shared rate limiter)
and prints batchgen's throughput, 429 share and peak memory as ratios to it.

    python scripts/bench.py                 # default sizes (~15 min on 2 cores)
    python scripts/bench.py --size quick    # seconds: the CI smoke
    python scripts/bench.py --size full     # the issue's sizes (1M resume, 20k/200k RSS)
    python scripts/bench.py --markdown docs/performance-table.md

Measuring: wall time with `time.perf_counter`, CPU time and peak RSS of each
child from `os.wait4` (its own rusage, threads included). Throughput is jobs
over the span from the first request to the last checkpoint (read from the
state database); "end to end" adds start-up, validation, planning and the
reports. Quota scenarios scale the quota window (`--quota-window` on the
simulator, `BATCHGEN_QUOTA_WINDOW` for batchgen) so that they take minutes,
not hours; the limits are the same fractions of the quota.

Disk state matters at zero latency: on ext4, creating files costs several
times more CPU for a few minutes after many files were deleted (the inode
allocator skips recently freed inodes), which moved scenario 2 between 900
and 1,300 jobs/s on one machine. Don't run it right after deleting a big
output folder (or an earlier benchmark's, unless `--keep`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scripts" / "baseline_naive.py"
PROBE = ROOT / "scripts" / "_bench_probe.py"
BANNER = "batchgen simulator serving at "
HEADER = "| scenario | figure | value | limit | ratio | result |"

#: name -> knobs. Scenario numbers follow the issue.
SIZES: dict[str, dict[str, Any]] = {
    "quick": {
        "lat_jobs": 300,
        "lat_c": 16,
        "lat_l": 0.05,
        "ovh_jobs": 400,
        "ovh_rounds": 1,
        "quota_window": 2.0,
        "quota": 20,
        "quota_jobs": 80,
        "quota_c": 16,
        "short_window": 3.0,
        "rpm_jobs": 50,
        "dry_lines": 5_000,
        "mem_small": 300,
        "mem_big": 1_500,
        "baseline_quota": False,
        "big": [(2, "rgb", 16, 8, 1.0)],
    },
    "default": {
        "lat_jobs": 5_000,
        "lat_c": 64,
        "lat_l": 0.2,
        "ovh_jobs": 10_000,
        "ovh_rounds": 3,
        "quota_window": 10.0,
        "quota": 100,
        "quota_jobs": 1_200,
        "quota_c": 64,
        "short_window": 10.0,
        "rpm_jobs": 600,
        "dry_lines": 1_000_000,
        "mem_small": 10_000,
        "mem_big": 100_000,
        "baseline_quota": True,
        "big": [(2, "rgb", 320, 32, 4.0), (4, "palette", 640, 64, 4.0)],
    },
    "full": {
        "lat_jobs": 5_000,
        "lat_c": 64,
        "lat_l": 0.2,
        "ovh_jobs": 20_000,
        "ovh_rounds": 3,
        "quota_window": 60.0,
        "quota": 600,
        "quota_jobs": 2_400,
        "quota_c": 64,
        "short_window": 60.0,
        "rpm_jobs": 2_400,
        "dry_lines": 1_000_000,
        "mem_small": 20_000,
        "mem_big": 200_000,
        "resume_big": 1_000_000,
        "baseline_quota": True,
        "big": [(2, "rgb", 320, 32, 4.0), (4, "palette", 640, 64, 4.0)],
    },
}


# -- processes -------------------------------------------------------------------------


@dataclass
class Child:
    """A finished child process: exit code, wall, CPU and peak RSS."""

    rc: int
    wall: float
    cpu: float
    maxrss_mb: float
    stdout: str
    stderr: str


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None) -> Child:
    """Run `cmd` to completion and take its own rusage with `os.wait4`. The disk's
    dirty pages are flushed first, so that no child pays for an earlier one's writes."""
    os.sync()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM: leave no child behind
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(
            rc=proc.returncode,
            wall=wall,
            cpu=usage.ru_utime + usage.ru_stime,
            maxrss_mb=usage.ru_maxrss / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


class Sim:
    """`batchgen sim serve` in its own process."""

    def __init__(self, *args: str, log: Path | None = None, small: bool = True) -> None:
        cmd = [sys.executable, "-m", "batchgen", "sim", "serve", "--port", "0"]
        cmd += ["--small-images", *args] if small else list(args)
        if log is not None:
            cmd += ["--log", str(log)]
        self.log = log
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(BANNER):
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line[len(BANNER) :].strip()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=30) as resp:
            doc: dict[str, Any] = json.load(resp)
        return doc

    def cpu(self) -> float:
        """CPU seconds the simulator process used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def sim(*args: str, log: Path | None = None, small: bool = True) -> Iterator[Sim]:
    server = Sim(*args, log=log, small=small)
    try:
        yield server
    finally:
        server.stop()


def env_for(window: float | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["GEMINI_API_KEY"] = "bench-fake-key"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("BATCHGEN_QUOTA_WINDOW", None)
    if window is not None:
        env["BATCHGEN_QUOTA_WINDOW"] = f"{window:g}"
    return env


#: scripts/baseline_naive.py's model (the run's own default is a thinking model).
BASELINE_MODEL = "gemini-2.5-flash-image"


def batchgen(
    jobs: Path,
    out: Path,
    url: str,
    *extra: str,
    window: float | None = None,
    probe: bool = False,
) -> Child:
    head = [sys.executable, str(PROBE)] if probe else [sys.executable, "-m", "batchgen"]
    cmd = [*head, "run", str(jobs), "--out", str(out), "--base-url", url, "--no-progress"]
    # The baseline's model: both sides ask the simulator for the same answers.
    cmd += ["--model", BASELINE_MODEL]
    child = run_child([*cmd, *extra], env_for(window))
    if child.rc not in (0,):
        print(f"  batchgen exited {child.rc}: {child.stderr.strip()[-400:]}", file=sys.stderr)
    return child


def baseline(jobs: Path, out: Path, url: str, concurrency: int) -> tuple[Child, dict[str, Any]]:
    cmd = [sys.executable, str(BASELINE), str(jobs), "--out", str(out), "--base-url", url]
    child = run_child([*cmd, "--concurrency", str(concurrency)], env_for())
    try:
        summary = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"  baseline failed: {child.stderr.strip()[-400:]}", file=sys.stderr)
        summary = {"jobs": 0, "ok": 0, "requests": 0, "rate_limited": 0}
    return child, summary


# -- data ------------------------------------------------------------------------------


def write_jobs(path: Path, n: int, *, tag: str = "p", refs: Sequence[Path] = ()) -> Path:
    """`n` JSONL jobs; every 50th edits one of `refs` when given."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            job: dict[str, Any] = {
                "id": f"{tag}{i:07d}",
                "prompt": f"studio photo of catalogue item {i}, white background",
                "tags": [f"cat{i % 20}"],
            }
            if refs and i % 50 == 0:
                job["images"] = [str(refs[i // 50 % len(refs)])]
            fh.write(json.dumps(job) + "\n")
    return path


def write_refs(folder: Path, n: int) -> list[Path]:
    """Small distinct PNG reference photos."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"ref{i}.png"
        Image.new("RGB", (32, 32), (i * 40 % 256, 80, 160)).save(path)
        paths.append(path)
    return paths


@dataclass
class StoreFacts:
    done: int
    requests: int
    first: float
    last: float


def store_facts(out: Path) -> StoreFacts:
    db = sqlite3.connect(f"file:{out / '.batchgen' / 'state.sqlite'}?mode=ro", uri=True)
    try:
        done, requests, first, last = db.execute(
            "SELECT sum(status='done'), sum(requests), min(started_at), max(finished_at) FROM jobs"
        ).fetchone()
    finally:
        db.close()
    return StoreFacts(int(done or 0), int(requests or 0), float(first or 0), float(last or 0))


def steady_rate(out: Path, latency: float) -> float:
    """Jobs per second from the first request to the last checkpoint. A job's
    `started_at` is stamped when its first answer arrives, so the first request
    left `latency` earlier."""
    f = store_facts(out)
    span = f.last - f.first + latency
    return f.done / span if span > 0 else 0.0


def log_records(log: Path) -> list[tuple[float, int | None]]:
    rows = []
    with open(log, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec.get("path", "").endswith(":generateContent"):
                rows.append((float(rec["t"]), rec["status"]))
    rows.sort()
    return rows


def max_in_window(times: Sequence[float], window: float) -> int:
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def settled_rate(rows: Sequence[tuple[float, int | None]], window: float, skip: int = 2) -> float:
    """Accepted requests per second after the first `skip` windows (the start-up
    burst and the first pause), up to the last accepted request."""
    ok = [t for t, status in rows if status == 200]
    if len(ok) < 2:
        return 0.0
    start = rows[0][0] + skip * window
    late = [t for t in ok if t >= start]
    span = ok[-1] - start
    return len(late) / span if span > 0 and late else 0.0


def dir_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# -- the table -------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    figure: str
    value: str
    limit: str = ""
    ratio: float | None = None
    ok: bool | None = None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        result = "" if self.ok is None else ("pass" if self.ok else "FAIL")
        return [self.scenario, self.figure, self.value, self.limit, ratio, result]


@dataclass
class Bench:
    size: str
    knobs: dict[str, Any]
    tmp: Path
    rows: list[Row] = field(default_factory=list)
    base_rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the scenarios asked for (9, the report, reuses scenario 4's folder)
    only: set[str] = field(default_factory=set)

    def add(self, *args: Any, **kw: Any) -> None:
        row = Row(*args, **kw)
        self.rows.append(row)
        print("  " + " | ".join(c for c in row.cells() if c), file=sys.stderr, flush=True)

    def base(self, *args: Any, **kw: Any) -> None:
        row = Row(*args, **kw)
        self.base_rows.append(row)
        print("  " + " | ".join(c for c in row.cells() if c), file=sys.stderr, flush=True)

    # 1 ---------------------------------------------------------------------------------
    def latency(self) -> None:
        k = self.knobs
        n, c, lat = k["lat_jobs"], k["lat_c"], k["lat_l"]
        print(f"[1] latency-bound: {n} jobs, C={c}, L={lat}s", file=sys.stderr, flush=True)
        jobs = write_jobs(self.tmp / "lat.jsonl", n, tag="lat")
        limit = c / lat
        name = f"1 latency-bound (C={c}, L={lat:g}s, {n:,} jobs)"
        with sim("--latency", str(lat)) as server:
            out = self.tmp / "lat-out"
            child = batchgen(jobs, out, server.url, "--concurrency", str(c))
            rate = steady_rate(out, lat)
            self.add(
                name,
                "jobs/s, first request to last checkpoint",
                f"{rate:.1f}",
                f">= 0.95 x C/L = {0.95 * limit:.0f}",
                rate / limit,
                rate >= 0.95 * limit,
            )
            e2e = n / child.wall
            self.add(
                name,
                "jobs/s end to end (start-up, planning, reports)",
                f"{e2e:.1f}",
                f"C/L = {limit:.0f}",
                e2e / limit,
            )
            b_child, b_sum = baseline(jobs, self.tmp / "lat-base", server.url, c)
            b_rate = b_sum["ok"] / b_child.wall
            self.base(
                name,
                "throughput end to end, batchgen / baseline",
                f"{e2e:.1f} / {b_rate:.1f} jobs/s",
                "",
                e2e / b_rate if b_rate else None,
            )

    # 2 ---------------------------------------------------------------------------------
    def overhead(self) -> None:
        """Goal 6 at zero latency. Rounds alternate batchgen and the baseline on one
        simulator and the figures are medians: on a shared 2-core machine one
        pair of runs moved the ratio by ±30 % (the same build took 4.9-6.9 s)."""
        n, rounds = self.knobs["ovh_jobs"], self.knobs["ovh_rounds"]
        print(f"[2] overhead: {n} jobs, zero latency, {rounds} rounds", file=sys.stderr, flush=True)
        jobs = write_jobs(self.tmp / "ovh.jsonl", n, tag="ovh")
        name = f"2 overhead (L=0, C=64, {n:,} jobs, median of {rounds})"
        runs: list[tuple[Child, float, float]] = []
        bases: list[tuple[Child, float]] = []
        with sim() as server:
            for i in range(rounds):
                out = self.tmp / f"ovh-out{i}"
                sim_cpu = server.cpu()
                child = batchgen(jobs, out, server.url, "--concurrency", "64")
                sim_cpu = server.cpu() - sim_cpu
                runs.append((child, steady_rate(out, 0.0), sim_cpu))
                b_child, b_sum = baseline(jobs, self.tmp / f"ovh-base{i}", server.url, 64)
                bases.append((b_child, b_sum["ok"] / b_child.wall))
        rate = statistics.median(r for _, r, _ in runs)
        e2e = [n / c.wall for c, _, _ in runs]
        b_e2e = [r for _, r in bases]
        e2e_mid, b_e2e_mid = statistics.median(e2e), statistics.median(b_e2e)
        cpu = statistics.median(c.cpu for c, _, _ in runs)
        b_cpu = statistics.median(c.cpu for c, _ in bases)
        self.add(
            name,
            "jobs/s, first request to last checkpoint",
            f"{rate:.0f}",
            ">= 1000",
            rate / 1000,
            rate >= 1000,
        )
        self.add(name, "batchgen CPU ms per job (whole process)", f"{cpu * 1000 / n:.2f}")
        sim_ms = statistics.median(s for _, _, s in runs) * 1000 / n
        self.add(name, "simulator CPU ms per request", f"{sim_ms:.2f}")
        self.add(name, "jobs/s end to end", f"{e2e_mid:.0f}")
        ratio = e2e_mid / b_e2e_mid if all(b_e2e) else 0.0
        each = ", ".join(f"{a / b:.2f}" for a, b in zip(e2e, b_e2e, strict=True) if b)
        self.add(
            name,
            "end to end ÷ baseline (goal 6; each round: " + each + ")",
            f"{e2e_mid:.0f} / {b_e2e_mid:.0f} jobs/s",
            ">= 0.9",
            ratio,
            ratio >= 0.9,
        )
        self.base(
            name,
            "throughput end to end, batchgen / baseline",
            f"{e2e_mid:.0f} / {b_e2e_mid:.0f} jobs/s",
            "",
            ratio,
        )
        self.base(
            name,
            "CPU ms per job, batchgen / baseline",
            f"{cpu * 1000 / n:.2f} / {b_cpu * 1000 / max(1, n):.2f}",
            "",
            cpu / b_cpu if b_cpu else None,
        )
        rss = statistics.median(c.maxrss_mb for c, _, _ in runs)
        b_rss = statistics.median(c.maxrss_mb for c, _ in bases)
        self.base(
            name, "peak RSS MB, batchgen / baseline", f"{rss:.0f} / {b_rss:.0f}", "", rss / b_rss
        )

    # 3 ---------------------------------------------------------------------------------
    def quota(self) -> None:
        k = self.knobs
        w, q, n, c = k["quota_window"], k["quota"], k["quota_jobs"], k["quota_c"]
        per_min = q * 60 / w
        print(f"[3] unknown quota: {q} per {w:g}s, {n} jobs, C={c}", file=sys.stderr, flush=True)
        scaled = "" if w == 60 else f", window scaled to {w:g}s"
        name = f"3 unknown quota ({per_min:.0f}/min{scaled}, C={c}, {n:,} jobs)"
        jobs = write_jobs(self.tmp / "quota.jsonl", n, tag="q")
        args = ("--latency", "0.2", "--rpm", str(q), "--quota-window", str(w))
        log = self.tmp / "quota-sim.log"
        with sim(*args, log=log) as server:
            child = batchgen(
                jobs, self.tmp / "quota-out", server.url, "--concurrency", str(c), window=w
            )
            rows = log_records(log)
        rate = settled_rate(rows, w)
        share = sum(1 for _, s in rows if s == 429) / max(1, len(rows))
        self.add(
            name,
            "settled rate, share of the quota",
            f"{rate * w:.1f}/{q} per window",
            ">= 0.90",
            rate * w / q,
            rate * w >= 0.90 * q,
        )
        self.add(
            name,
            "requests answered 429",
            f"{share:.1%} of {len(rows)}",
            "<= 5%",
            share / 0.05,
            share <= 0.05,
        )
        if child.rc != 0:
            self.notes.append(f"scenario 3 batchgen exit code {child.rc}")
        if k["baseline_quota"]:
            log_b = self.tmp / "quota-base-sim.log"
            with sim(*args, log=log_b) as server:
                b_child, b_sum = baseline(jobs, self.tmp / "quota-base", server.url, c)
                b_rows = log_records(log_b)
            b_share = sum(1 for _, s in b_rows if s == 429) / max(1, len(b_rows))
            self.base(
                name,
                "429 share, batchgen / baseline",
                f"{share:.1%} / {b_share:.1%}",
                "",
                share / b_share if b_share else None,
            )
            e2e, b_e2e = n / child.wall, b_sum["ok"] / b_child.wall
            self.base(
                name,
                "jobs/s end to end, batchgen / baseline",
                f"{e2e:.2f} / {b_e2e:.2f} ({b_sum['ok']}/{n} ok)",
                "",
                e2e / b_e2e if b_e2e else None,
            )
        self.short_run()
        # With --rpm: never above it in any window, and close to it.
        n = k["rpm_jobs"]
        name = f"3 --rpm {per_min:.0f} given ({n:,} jobs{scaled})"
        jobs = write_jobs(self.tmp / "rpm.jsonl", n, tag="r")
        log = self.tmp / "rpm-sim.log"
        with sim(*args, log=log) as server:
            batchgen(
                jobs,
                self.tmp / "rpm-out",
                server.url,
                "--concurrency",
                str(c),
                "--rpm",
                f"{q:g}",
                window=w,
            )
            rows = log_records(log)
        times = [t for t, _ in rows]
        most = max_in_window(times, w)
        self.add(name, "most requests in any window", f"{most}", f"<= {q}", most / q, most <= q)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        # Even spacing: N requests span (N - 1) intervals.
        reached = (len(times) - 1) / span * w if span else 0.0
        self.add(
            name,
            "rate reached, share of --rpm",
            f"{reached:.1f}/{q} per window",
            ">= 0.95",
            reached / q,
            reached >= 0.95 * q,
        )

    def short_run(self) -> None:
        """Issue 18's short run: 400 jobs at C=32 against an unknown quota of 200
        per window, where the first wall is most of the run's 429s. The window is
        scaled (not the quota), so the first wall meets the same pool as at 60 s."""
        w, q, n, c = self.knobs["short_window"], 200, 400, 32
        print(f"[3] short run: {q} per {w:g}s, {n} jobs, C={c}", file=sys.stderr, flush=True)
        scaled = "" if w == 60 else f", window scaled to {w:g}s"
        name = f"3 short run, unknown quota ({q} per window{scaled}, C={c}, {n} jobs)"
        jobs = write_jobs(self.tmp / "short.jsonl", n, tag="s")
        args = ("--latency", "0.2", "--rpm", str(q), "--quota-window", str(w))
        log = self.tmp / "short-sim.log"
        with sim(*args, log=log) as server:
            out = self.tmp / "short-out"
            child = batchgen(jobs, out, server.url, "--concurrency", str(c), window=w)
            rows = log_records(log)
        share = sum(1 for _, s in rows if s == 429) / max(1, len(rows))
        n429 = sum(1 for _, s in rows if s == 429)
        self.add(
            name,
            "requests answered 429",
            f"{share:.1%} ({n429} of {len(rows)})",
            "<= 5%",
            share / 0.05,
            share <= 0.05,
        )
        rate = settled_rate(rows, w, skip=1)
        self.add(
            name,
            "settled rate after the first window, share of the quota",
            f"{rate * w:.1f}/{q} per window",
            "",
            rate * w / q,
        )
        if child.rc != 0:
            self.notes.append(f"scenario 3 short run: batchgen exit code {child.rc}")
        if self.knobs["baseline_quota"]:
            log_b = self.tmp / "short-base-sim.log"
            with sim(*args, log=log_b) as server:
                baseline(jobs, self.tmp / "short-base", server.url, c)
                b_rows = log_records(log_b)
            b_share = sum(1 for _, s in b_rows if s == 429) / max(1, len(b_rows))
            self.base(
                name,
                "429 share, batchgen / baseline",
                f"{share:.1%} / {b_share:.1%}",
                "",
                share / b_share if b_share else None,
            )

    # 7 ---------------------------------------------------------------------------------
    def big_answers(self) -> None:
        """Issue 18, goal 1: answers of real weight. `scale` 2 is 2048 px and 4 is 4096
        px; "rgb" noise weighs 3 bytes a pixel (12.6 MB at 2048), "palette" noise 1
        (16.8 MB at 4096); the simulator rotates a few pre-built images."""
        for scale, kind, n, c, lat in self.knobs["big"]:
            px = 1024 * scale
            print(f"[7] {n} {px}-px {kind} answers, C={c}, L={lat:g}s", file=sys.stderr, flush=True)
            noise = "--rgb-noise" if kind == "rgb" else "--noise"
            args = (noise, "--noise-pool", "4", "--size-scale", str(scale), "--latency", str(lat))
            jobs = write_jobs(self.tmp / f"big{scale}.jsonl", n, tag=f"b{scale}-")
            limit = c / lat
            mb = (3 if kind == "rgb" else 1) * px * px / 1e6
            name = f"7 real-size answers ({px} px {kind} noise, {mb:.1f} MB, C={c}, L={lat:g}s, "
            name += f"{n} jobs)"
            rss_limit = 400 if c <= 32 else 600
            with sim(*args, small=False) as server:
                out = self.tmp / f"big{scale}-out"
                sim_cpu = server.cpu()
                child = batchgen(jobs, out, server.url, "--concurrency", str(c))
                sim_cpu = server.cpu() - sim_cpu
                rate = steady_rate(out, lat)
                done = store_facts(out).done
                # "Where the CPU allows it": both processes share the machine's cores,
                # so their CPU per image caps the rate below C/L for the heaviest answers.
                per_image = (child.cpu + sim_cpu) / n
                cpu_rate = (os.cpu_count() or 1) / per_image if per_image else limit
                bound = min(limit, cpu_rate)
                why = "C/L" if bound == limit else f"CPU: {os.cpu_count()} cores / "
                why += "" if bound == limit else f"{per_image * 1000:.0f} ms per image"
                self.add(
                    name,
                    "jobs/s, first request to last checkpoint",
                    f"{rate:.2f} ({done}/{n} done, {rate / limit:.2f} of C/L = {limit:g})",
                    f">= 0.9 x {bound:.1f} ({why})",
                    rate / bound,
                    rate >= 0.9 * bound and done == n,
                )
                self.add(
                    name,
                    "peak RSS MB",
                    f"{child.maxrss_mb:.0f}",
                    f"<= {rss_limit}",
                    child.maxrss_mb / rss_limit,
                    child.maxrss_mb <= rss_limit,
                )
                self.add(name, "batchgen CPU ms per image", f"{child.cpu * 1000 / n:.0f}")
                # Both share the 2 cores: when these add up to about a core-second per
                # second of the run, the machine, not the client, bounds the rate.
                self.add(name, "simulator CPU ms per answer", f"{sim_cpu * 1000 / n:.0f}")
                shutil.rmtree(out, ignore_errors=True)
                b_child, b_sum = baseline(jobs, self.tmp / f"big{scale}-base", server.url, c)
                shutil.rmtree(self.tmp / f"big{scale}-base", ignore_errors=True)
            e2e, b_e2e = n / child.wall, b_sum["ok"] / b_child.wall
            self.base(
                name,
                "jobs/s end to end, batchgen / baseline (share of C/L)",
                f"{e2e:.2f} ({e2e / limit:.2f}) / {b_e2e:.2f} ({b_e2e / limit:.2f})",
                "",
                e2e / b_e2e if b_e2e else None,
            )
            self.base(
                name,
                "peak RSS MB, batchgen / baseline",
                f"{child.maxrss_mb:.0f} / {b_child.maxrss_mb:.0f}",
                "",
                child.maxrss_mb / b_child.maxrss_mb if b_child.maxrss_mb else None,
            )
            self.base(
                name,
                "CPU ms per image, batchgen / baseline",
                f"{child.cpu * 1000 / n:.0f} / {b_child.cpu * 1000 / n:.0f}",
                "",
                child.cpu / b_child.cpu if b_child.cpu else None,
            )

    # 8 ---------------------------------------------------------------------------------
    def sizes(self) -> None:
        """Issue 18, goal 2: the three platform presets of one photo-like 1024-px image,
        in CPU-seconds (the process's own, so a busy machine does not move it)."""
        from bench_sizes import LIMIT_S, cpu, old_way, photo

        from batchgen.output.sizes import PRESETS, parse_size, resize_all

        print("[8] platform sizes of a 1024-px photo", file=sys.stderr, flush=True)
        data = photo(1024)
        specs = [parse_size(preset) for preset in PRESETS]
        ours = cpu(lambda: resize_all(data, specs), 5)
        theirs = cpu(lambda: old_way(data), 3)
        name = f"8 platform sizes ({', '.join(PRESETS)}; 1024-px photo-like PNG)"
        self.add(
            name,
            "CPU seconds for the three presets",
            f"{ours:.3f}",
            f"<= {LIMIT_S}",
            ours / LIMIT_S,
            ours <= LIMIT_S,
        )
        self.base(
            name,
            "CPU seconds, batchgen / a decode each and PNG level 6",
            f"{ours:.3f} / {theirs:.3f}",
            "",
            ours / theirs,
        )

    # 9 ---------------------------------------------------------------------------------
    def report_scale(self, out: Path, n: int) -> None:
        """Issue 18, goal 3: `batchgen report` of the biggest settled folder of the run
        (60 s and 300 MB for a million jobs; the time limit pro rata below that, but
        not under 5 s, since a child's start-up does not shrink with the folder), then
        the gallery in the headless chromium of `scripts/install-browser` (3 s)."""
        from bench_report import browse, report

        print(f"[9] report of the finished {n}-job folder", file=sys.stderr, flush=True)
        name = f"9 report of a finished {n:,}-job folder"
        secs = max(5.0, 60 * min(1.0, n / 1_000_000))  # pro rata; start-up is fixed
        child = report(out)
        ok = child.rc == 0
        self.add(name, "seconds", f"{child.wall:.1f}", f"<= {secs:g}", child.wall / secs, ok
                 and child.wall <= secs)  # fmt: skip
        rss = child.maxrss_mb
        self.add(name, "peak RSS MB", f"{rss:.0f}", "<= 300", rss / 300, ok and rss <= 300)
        try:
            times = browse(out, rare=f"m{n // 2:07d}", failures=False)
        except Exception as exc:  # no chromium or no playwright: say so, don't guess
            self.notes.append(f"gallery not timed: {type(exc).__name__}: {exc}"[:300])
            return
        for step, took in times.items():
            self.add(name, f"gallery: {step}, s", f"{took:.2f}", "<= 3", took / 3, took <= 3)

    # 4, 5, 6 ---------------------------------------------------------------------------
    def memory(self) -> None:
        k = self.knobs
        lines = k["dry_lines"]
        print(f"[4] dry run of {lines} lines", file=sys.stderr, flush=True)
        jobs = write_jobs(self.tmp / "dry.jsonl", lines, tag="d")
        cmd = [
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(jobs),
            "--out",
            str(self.tmp / "dry"),
            "--dry-run",
        ]
        child = run_child(cmd, env_for())
        ok = child.rc == 0
        self.add(
            f"4 memory: --dry-run of {lines:,} lines",
            "peak RSS MB",
            f"{child.maxrss_mb:.0f} ({child.wall:.0f} s)",
            "<= 200",
            child.maxrss_mb / 200,
            ok and child.maxrss_mb <= 200,
        )
        jobs.unlink()

        small, big = k["mem_small"], k["mem_big"]
        refs = write_refs(self.tmp / "refs", 8)
        print(f"[4] real runs of {small} and {big} jobs", file=sys.stderr, flush=True)
        with sim() as server:
            runs = {}
            for n in (small, big):
                jobs = write_jobs(self.tmp / f"mem{n}.jsonl", n, tag="m", refs=refs)
                runs[n] = batchgen(jobs, self.tmp / f"mem{n}", server.url, "--concurrency", "64")
            grow = runs[big].maxrss_mb / runs[small].maxrss_mb
            self.add(
                f"4 memory: real run {big:,} vs {small:,} jobs",
                "peak RSS MB",
                f"{runs[big].maxrss_mb:.0f} vs {runs[small].maxrss_mb:.0f}",
                "<= +20 %",
                grow / 1.2,
                grow <= 1.2,
            )
            b_child, _ = baseline(
                self.tmp / f"mem{big}.jsonl", self.tmp / "mem-base", server.url, 64
            )
            self.base(
                f"4 memory: real run of {big:,} jobs",
                "peak RSS MB, batchgen / baseline",
                f"{runs[big].maxrss_mb:.0f} / {b_child.maxrss_mb:.0f}",
                "",
                runs[big].maxrss_mb / b_child.maxrss_mb,
            )
            shutil.rmtree(self.tmp / "mem-base", ignore_errors=True)
            self.resume(server, big, self.tmp / f"mem{big}", self.tmp / f"mem{big}.jsonl")
            self.layout(self.tmp / f"mem{big}", big)
        resume_big = k.get("resume_big")
        if not resume_big and "9" in self.only:
            self.report_scale(self.tmp / f"mem{big}", big)
        if resume_big:
            print(f"[5] building a finished {resume_big}-job folder", file=sys.stderr, flush=True)
            with sim() as server:
                jobs = write_jobs(self.tmp / "resume.jsonl", resume_big, tag="m", refs=refs)
                child = batchgen(jobs, self.tmp / "resume", server.url, "--concurrency", "64")
                self.notes.append(
                    f"the {resume_big:,}-job folder took {child.wall:.0f} s to build "
                    f"({resume_big / child.wall:.0f} jobs/s end to end)"
                )
                self.resume(server, resume_big, self.tmp / "resume", jobs)
                self.layout(self.tmp / "resume", resume_big)
            if "9" in self.only:
                self.report_scale(self.tmp / "resume", resume_big)

    def resume(self, server: Sim, n: int, out: Path, jobs: Path) -> None:
        print(f"[5] resume of a finished {n}-job folder", file=sys.stderr, flush=True)
        before = server.stats()["total"]
        child = batchgen(jobs, out, server.url, "--concurrency", "64", probe=True)
        sent = server.stats()["total"] - before
        reads = _probe_reads(child.stderr)
        name = f"5 resume: finished {n:,}-job folder"
        self.add(
            name,
            "seconds to find nothing to do",
            f"{child.wall:.1f} ({sent} requests)",
            "<= 15",
            child.wall / 15,
            child.wall <= 15 and sent == 0,
        )
        self.add(name, "reference images read again", f"{reads}", "0", None, reads == 0)
        # One changed prompt among them: exactly one request.
        # (Line by line: a million lines held at once would raise this process's peak
        # RSS, which its later children inherit in their own rusage.)
        changed = jobs.with_name(jobs.stem + "-changed.jsonl")
        with open(jobs, encoding="utf-8") as src, open(changed, "w", encoding="utf-8") as dst:
            for i, line in enumerate(src):
                if i == n // 2:
                    row = json.loads(line)
                    row["prompt"] += " (changed)"
                    line = json.dumps(row) + "\n"
                dst.write(line)
        before = server.stats()["total"]
        child = batchgen(changed, out, server.url, "--concurrency", "64")
        sent = server.stats()["total"] - before
        self.add(
            name,
            "requests after one prompt changed",
            f"{sent} ({child.wall:.1f} s)",
            "1",
            None,
            sent == 1,
        )

    def layout(self, out: Path, n: int) -> None:
        images = out / "images"
        folders = [p for p in images.iterdir() if p.is_dir()]
        per_folder = [sum(1 for _ in p.iterdir()) for p in folders] or [
            sum(1 for p in images.iterdir() if p.is_file())
        ]
        missing = missing_report_paths(out)
        sharded = len(folders) == 256
        expect = n > 10_000
        self.add(
            f"6 layout: {n:,} images",
            "folders / most files in one folder",
            f"{len(folders)} / {max(per_folder)}",
            "256 above 10,000 jobs",
            None,
            sharded == expect and missing == 0,
        )
        self.add(
            f"6 layout: {n:,} images",
            "report paths missing on disk",
            f"{missing}",
            "0",
            None,
            missing == 0,
        )


#: Counts the paths of report.json that are not files. It runs in a child: a
#: million-job report takes gigabytes as Python objects, and every later child
#: of this process would report that as its own peak RSS (Linux carries the
#: parent's high-water mark into a child forked from it, across `exec`).
_MISSING = """
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
report = json.loads((out / "report.json").read_text(encoding="utf-8"))
print(sum(1 for job in report["jobs"] for f in job["files"] if not (out / f).is_file()))
"""


def missing_report_paths(out: Path) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", _MISSING, str(out)], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def _probe_reads(stderr: str) -> int:
    for line in stderr.splitlines():
        if line.startswith("bench-probe reference reads: "):
            return int(line.rsplit(" ", 1)[1])
    return -1


def machine() -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GB"
    py = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, {mem} RAM, Linux {platform.release()}, Python {py}"


def render(rows: list[Row]) -> str:
    lines = [HEADER, "| --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--quick", action="store_const", const="quick", dest="size")
    parser.add_argument("--full", action="store_const", const="full", dest="size")
    parser.add_argument(
        "--only",
        default="1,2,3,4,7,8,9",
        help="scenarios to run, comma-separated: 1 latency, 2 overhead, 3 quota, "
        "4 memory (with 5 resume and 6 layout), 7 real-size answers, 8 platform sizes, "
        "9 the report and gallery of scenario 4's biggest folder",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so that simulators and children are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="batchgen-bench-"))
    bench = Bench(args.size, SIZES[args.size], tmp, only=only)
    started = time.perf_counter()
    try:
        for key, step in (
            ("1", bench.latency),
            ("2", bench.overhead),
            ("3", bench.quota),
            ("4", bench.memory),
            ("7", bench.big_answers),
            ("8", bench.sizes),
        ):
            if key in only:
                step()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    failed = sum(1 for r in bench.rows if r.ok is False)
    text = "\n".join(
        [
            f"batchgen benchmark, size {args.size}, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{elapsed:.0f} s",
            f"machine: {machine()}",
            "",
            render(bench.rows),
            "",
            "baseline (scripts/baseline_naive.py) on the same simulator; ratio = batchgen / "
            "baseline:",
            "",
            render(bench.base_rows),
            *([""] + [f"note: {n}" for n in bench.notes] if bench.notes else []),
            "",
            f"{failed} of {sum(1 for r in bench.rows if r.ok is not None)} checks failed",
        ]
    )
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
