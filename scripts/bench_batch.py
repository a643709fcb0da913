"""Batch Mode at size on the simulator: ratios that should be 1.00 (or 0.50 for cost).

    python scripts/bench_batch.py            # 20,000 jobs; peak RSS at 1,000 and 4,000
    python scripts/bench_batch.py --quick    # 400 jobs; peak RSS at 50 and 200 (seconds)

1. ``batchgen run --mode batch`` of N jobs (``--batch-size`` 1,000) against a
   simulator whose clock runs a simulated day in a few real seconds: the
   batches made against the expected ceil(N / batch size), every image
   written and valid against N, the cost against what live would have cost.
2. Peak RSS of the run process (``ru_maxrss``) for one batch of M jobs and of
   4M jobs with heavier images (noise at 256 px: ~0.3 MB of base64 a line):
   the results file grows four times, the peak should not.

Prints a table; exit 1 when a ratio is off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchgen.sim import SimConfig, SimulatorThread  # noqa: E402

KEY = "bench-batch-key"
MODEL = "gemini-2.5-flash-image"
#: Runs the CLI in this process and writes its peak RSS (KiB) to argv[1].
_WRAPPER = (
    "import resource, sys\n"
    "from batchgen.cli.main import main\n"
    "code = main(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def write_jobs(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"job-{i:06d}", "prompt": f"product {i}"}) + "\n")


def run(tmp: Path, n: int, batch_size: int, sim_config: SimConfig) -> dict[str, Any]:
    """One run of `n` jobs; its report, peak RSS, batches made and results bytes."""
    jobs, out, rss = tmp / f"jobs-{n}.jsonl", tmp / f"out-{n}", tmp / f"rss-{n}"
    write_jobs(jobs, n)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    env["GEMINI_API_KEY"] = KEY
    with SimulatorThread(sim_config) as sim:
        argv = ["run", str(jobs), "--out", str(out), "--base-url", sim.base_url, "--no-progress"]
        argv += ["--mode", "batch", "--model", MODEL, "--batch-size", str(batch_size)]
        argv += ["--poll-interval", "0.2"]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(rss), *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"run of {n} jobs exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        made = sim.stats.by_outcome["batch_created"]
    report = json.loads((out / "report.json").read_text())
    # The results file is deleted once collected: its size is the images' in base64.
    results = sum(p.stat().st_size for p in (out / "images").rglob("*") if p.is_file()) * 4 / 3
    return {
        "report": report,
        "out": out,
        "rss_mb": int(rss.read_text()) / 1024,
        "made": made,
        "results_mb": results / 1e6,
        "seconds": seconds,
    }


def valid_images(out: Path, report: dict[str, Any]) -> int:
    from PIL import Image

    ok = 0
    for row in report["jobs"]:
        if row["status"] != "done":
            continue
        try:
            with Image.open(out / row["files"][0]) as im:
                im.verify()
        except Exception:
            continue
        ok += 1
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 jobs; RSS at 50 and 200")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    args = parser.parse_args(argv)
    n = args.jobs or (400 if args.quick else 20_000)
    size = args.batch_size or (100 if args.quick else 1000)
    m = 50 if args.quick else 1000
    # A batch passes in ~1.3 s; files live 48 simulated hours, ~6 real minutes.
    fast = {"time_scale": 500.0, "batch_pending_s": 60.0, "batch_running_s": 600.0}
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        tmp = Path(folder)
        main_run = run(tmp, n, size, SimConfig(small_images=True, api_key=KEY, **fast))
        report = main_run["report"]
        spend = report["by_mode"]["batch"]
        rows.append(("cost batch / live", "0.50", spend["cost_usd"] / spend["live_cost_usd"], 0.5))
        valid = valid_images(main_run["out"], report)
        rows.append(("images valid / jobs", "1.00", valid / n, 1.0))
        rows.append(
            ("batches made / expected", "1.00", main_run["made"] / math.ceil(n / size), 1.0)
        )
        heavy: dict[str, Any] = {"noise": True, "size_scale": 0.25, "api_key": KEY, **fast}
        measured = []
        for k in (m, 4 * m):
            where = tmp / f"rss{k}"
            where.mkdir()
            measured.append(run(where, k, k, SimConfig(files_dir=str(where), **heavy)))
        small, big = measured
        rows.append(
            ("peak RSS 4M / M (one batch each)", "~1", big["rss_mb"] / small["rss_mb"], 1.0)
        )
    print(f"Batch Mode on the simulator: {n} jobs in batches of {size}")
    print(
        f"  run: {main_run['seconds']:.1f} s, peak RSS {main_run['rss_mb']:.0f} MB, "
        f"{main_run['made']} batches, ${spend['cost_usd']:.2f} "
        f"(live ${spend['live_cost_usd']:.2f})"
    )
    for label, run_ in ((f"M={m}", small), (f"4M={4 * m}", big)):
        mb, rss = run_["results_mb"], run_["rss_mb"]
        print(f"  {label}: results file ~{mb:.0f} MB, peak RSS {rss:.0f} MB")
    print("| figure | expected | ratio |")
    print("| --- | --- | --- |")
    bad = False
    for label, expected, ratio, want in rows:
        off = abs(ratio - want) > (0.25 if label.startswith("peak") else 0.005)
        bad = bad or off
        print(f"| {label} | {expected} | {ratio:.2f}{' (off)' if off else ''} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
