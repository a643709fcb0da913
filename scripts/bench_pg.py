"""A PostgreSQL state at scale: planning by COPY, and a resume that finds nothing to do.

``python scripts/bench_pg.py [--jobs 100000]`` starts a throwaway PostgreSQL
(as the tests do: `tests/pgserver.py`, initdb + pg_ctl, unix socket only),
then, each in a fresh child process so its peak RSS is its own:

1. plans N new jobs into an empty state (the planner's pass, rows written by
   COPY into a staging table and one INSERT … SELECT per 5,000): wall time
   and the driver's peak RSS against the 200 MB bar;
2. marks every job done (one UPDATE, as a finished run leaves them) and plans
   the same N again: the resume's planning pass, which finds every job done
   and writes nothing: wall time against the 15 s bar.

The same two passes on SQLite are printed beside them for scale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgserver import PgServer  # noqa: E402

RSS_LIMIT_MB = 200
NOOP_LIMIT_S = 15.0

CHILD = """
import resource, sys, time
from pathlib import Path
from batchgen.engine.planner import plan
from batchgen.models import Job
from batchgen.store.open import open_state

out, state, n, settle = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3]), sys.argv[4]
jobs = (Job(id=f"job-{i:07d}", prompt=f"a product photo {i}", tags=("bench",)) for i in range(n))
with open_state(out, state) as store:
    if settle == "1":
        with store.transaction():
            store.db.execute("UPDATE jobs SET status = 'done', files = '[\\"images/x.png\\"]'")
    t0 = time.perf_counter()
    with store.transaction():
        store.start_run()
        p = plan(jobs, store, default_model="gemini-2.5-flash-image")
    took = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{took:.2f} {rss:.0f} {p.new} {p.done}")
"""


def child(out: Path, state: str | None, n: int, settle: bool) -> tuple[float, float, int, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), state or "", str(n), "1" if settle else "0"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    took, rss, new, already = done.stdout.split()
    return float(took), float(rss), int(new), int(already)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    args = ap.parse_args()
    n = args.jobs
    server = PgServer()
    server.start()
    failed = False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, state in (("postgresql", server.fresh_db()), ("sqlite", None)):
                out = Path(tmp) / name
                t0 = time.perf_counter()
                took, rss, new, _ = child(out, state, n, settle=False)
                assert new == n, new
                again, rss2, _, done = child(out, state, n, settle=True)
                assert done == n, done
                print(
                    f"{name:>10}: plan {n:,} new jobs {took:6.2f} s (peak RSS {rss:.0f} MB); "
                    f"resume pass, all done {again:6.2f} s (peak RSS {rss2:.0f} MB) "
                    f"[{time.perf_counter() - t0:.1f} s with start-up]"
                )
                if name == "postgresql":
                    print(
                        f"{'':>10}  RSS {max(rss, rss2):.0f} / {RSS_LIMIT_MB} MB = "
                        f"{max(rss, rss2) / RSS_LIMIT_MB:.2f}; resume {again:.2f} / "
                        f"{NOOP_LIMIT_S:.0f} s = {again / NOOP_LIMIT_S:.2f}"
                    )
                    failed = max(rss, rss2) > RSS_LIMIT_MB or again > NOOP_LIMIT_S
    finally:
        server.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
