#!/usr/bin/env python3
"""Full-size reliability runs: the CI tests' chaos and load checks, bigger.

    python scripts/chaos.py chaos --jobs 2000 --kills 100 --seed 7
    python scripts/chaos.py load --jobs 100000 --concurrency 256
    python scripts/chaos.py all --json docs/reliability-figures.json

`chaos` is `tests/test_chaos.py::chaos_run`: a simulator injecting ~10 %
faults (429, 500, 503, resets, hangs), the CLI killed with SIGKILL at seeded
random moments `--kills` times, the folder checked after each kill (every
`done` job has a decodable image, no partial file under a final name, the
previous kill's temporaries gone), then run to completion and checked again
(every job in exactly one final state, no stray file, requests ≤ jobs +
retries + kills × concurrency). `load` is `tests/test_load.py::load_run`:
one run at `--concurrency` with 5 % faults, totals equal to the input, no job
lost or duplicated, open file descriptors sampled from /proc.

"Requests wasted" is what the simulator counted minus what the state records
(jobs + retries): the requests cut off in flight by the kills.
Both print their figures as JSON (and write them with `--json`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_chaos import chaos_run  # noqa: E402
from tests.test_load import load_run  # noqa: E402


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_chaos(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures = chaos_run(
        tmp / "chaos",
        jobs=args.jobs,
        kills=args.kills,
        seed=args.seed,
        concurrency=args.concurrency,
        log=_log,
    )
    return {"chaos": figures.as_dict()}


def run_load(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures = load_run(
        tmp / "load",
        jobs=args.load_jobs,
        concurrency=args.load_concurrency,
        seed=args.seed,
        check_every=args.check_every,
        log=lambda text: _log(text.strip()),
    )
    if figures.max_fds > args.load_concurrency + 64:
        raise SystemExit(f"open fds reached {figures.max_fds}: more than the pool allows")
    return {"load": figures.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("chaos", "load", "all"))
    parser.add_argument("--jobs", type=int, default=2000, help="chaos: jobs (default 2000)")
    parser.add_argument("--kills", type=int, default=100, help="chaos: SIGKILLs (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="chaos: pool (default 8)")
    parser.add_argument("--seed", type=int, default=20261125, help="seed for faults and kills")
    parser.add_argument(
        "--load-jobs", type=int, default=100_000, help="load: jobs (default 100000)"
    )
    parser.add_argument("--load-concurrency", type=int, default=256, help="load: pool (256)")
    parser.add_argument(
        "--check-every", type=int, default=1, help="load: decode every n-th image (default all)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="batchgen-chaos-") as scratch:
        tmp = args.keep or Path(scratch)
        if args.what in ("chaos", "all"):
            figures.update(run_chaos(args, tmp))
            _log(json.dumps(figures["chaos"]))
        if args.what in ("load", "all"):
            figures.update(run_load(args, tmp))
            _log(json.dumps(figures["load"]))
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
