"""Batch Mode chaos at full size: many SIGKILLs across upload, create, poll and download.

    python scripts/chaos_batch.py [--jobs 2000] [--kills 40] [--seed 15]

Runs `tests/test_batch_chaos.batch_chaos_run` and prints its figures as JSON;
it raises when an invariant breaks (two batches for one wave, a line counted
twice, a job lost).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_batch_chaos import batch_chaos_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaos-batch-") as tmp:
        figures = batch_chaos_run(
            Path(tmp), jobs=args.jobs, kills=args.kills, seed=args.seed, batch_size=100,
            log=lambda s: print(s, file=sys.stderr),
        )  # fmt: skip
    print(json.dumps(figures.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
