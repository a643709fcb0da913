#!/usr/bin/env python3
"""`--engine ray` against one quota, at full size: the figures of the scale-out tests.

    python scripts/bench_ray.py            # 1,200 jobs, quota 120 per 10 s
    python scripts/bench_ray.py --quick    # 600 jobs, quota 240 per 4 s (~6 minutes)
    python scripts/bench_ray.py --no-control    # full size without the slow control

Starts a PostgreSQL server (`tests/pgserver.py`) and a local Ray (2 CPUs), and
runs `tests/test_ray_engine.py::quota_run` four times against a simulator with
a sliding-window quota (the pacer's window scaled to the simulator's):

1. ``--rpm`` = the quota, 4 workers x C 16: most requests in any window (≤ the
   quota), 429s (0), accepted rate ÷ quota (≥ 0.95);
2. no ``--rpm``, 5 workers x C 8, one shared pacer: accepted rate ÷ quota
   (≥ 0.90), 429 share (≤ 5 %);
3. the same with each worker pacing alone (what five separate runs do): the
   control; its wall time ÷ the shared run's is the gain of one pacer;
4. the inline engine at C 40 on the same quota, for reference.

Prints one JSON object of figures and ratios (and writes it with `--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batchgen.engine.ray_engine import PACER_ENV  # noqa: E402
from tests.conftest import KEY  # noqa: E402
from tests.pgserver import PgServer  # noqa: E402
from tests.test_ray_engine import QuotaFigures, quota_run  # noqa: E402


def _figures(f: QuotaFigures) -> dict[str, Any]:
    return {**asdict(f), "share_429": round(f.share_429, 4), "of_quota": round(f.of_quota, 3)}


async def _bench(args: argparse.Namespace, tmp: Path, pg: PgServer) -> dict[str, Any]:
    quota, window, jobs = (240, 4.0, 600) if args.quick else (120, 10.0, 1200)
    runs: dict[str, Any] = {}

    async def one(name: str, **options: Any) -> QuotaFigures:
        print(f"bench_ray: {name} …", file=sys.stderr, flush=True)
        figures = await quota_run(
            tmp / name, pg.fresh_db(), jobs=jobs, quota=quota, window=window, **options
        )
        runs[name] = _figures(figures)
        return figures

    hard = await one("hard_quota", workers=4, concurrency=16, rpm=quota)
    shared = await one("unknown_shared", workers=5, concurrency=8, rpm=None)
    control = None
    if not args.no_control:
        os.environ[PACER_ENV] = "own"
        try:
            control = await one("unknown_independent", workers=5, concurrency=8, rpm=None)
        finally:
            os.environ.pop(PACER_ENV, None)
    await one("unknown_inline", workers=1, concurrency=40, rpm=None, engine="inline")
    ratios: dict[str, Any] = {
        "hard: most in a window / quota": hard.most_in_window / quota,
        "hard: accepted rate / quota": round(hard.of_quota, 3),
        "hard: 429s": hard.rate_limited,
        "shared: accepted rate / quota": round(shared.of_quota, 3),
        "shared: 429 share": round(shared.share_429, 4),
    }
    if control is not None:
        ratios["independent / shared wall time"] = round(control.seconds / shared.seconds, 2)
    return {
        "quota": f"{quota} per {window:g} s",
        "jobs": jobs,
        "runs": runs,
        "ratios": ratios,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 jobs, quota 240 per 4 s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--no-control",
        action="store_true",
        help="skip the independent-pacer control (at full size it runs for most of an hour)",
    )
    args = parser.parse_args()
    import ray

    os.environ["GEMINI_API_KEY"] = KEY  # the simulator's key, read by every worker
    pg = PgServer()
    pg.start()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as name:
        tmp = Path(name)
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp / "ray"))
        try:
            figures = asyncio.run(_bench(args, tmp, pg))
        finally:
            ray.shutdown()
            pg.stop()
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
