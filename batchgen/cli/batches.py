"""cli/batches: ``batchgen batches OUT`` and ``batchgen cancel OUT``.

`batches` lists a folder's Batch Mode batches from its state (read-only, so
it works while a run holds the folder): name, batch id, state and counts as
last polled, age, jobs. `cancel` cancels the open ones at the API and puts
their jobs back to pending (it takes the folder's lock: stop the run first).
The engine is imported inside the commands, so ``batchgen --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from batchgen.cli.state import add_state_option
from batchgen.config import RunConfig, RunMode, check_base_url, key_from_env
from batchgen.errors import EXIT_OK, UsageError


def register(sub: Any) -> None:
    ls = sub.add_parser(
        "batches",
        help="list an output folder's Batch Mode batches",
        description="List the batches of an output folder run with --mode batch: id, state and "
        "counts as last polled, age, jobs. Works while a run holds the folder.",
    )
    ls.add_argument("out", type=Path, help="an output folder (the --out of a run)")
    add_state_option(ls)
    ls.set_defaults(func=cmd_batches)
    cancel = sub.add_parser(
        "cancel",
        help="cancel an output folder's open batches (their jobs go back to pending)",
        description="Cancel every pending or running batch of the folder at the API; their "
        "jobs go back to pending, so the next run submits them again. The API key is read "
        "from GEMINI_API_KEY (or GOOGLE_API_KEY).",
    )
    cancel.add_argument("out", type=Path, help="an output folder (the --out of a run)")
    add_state_option(cancel)
    cancel.add_argument(
        "--base-url",
        default=None,
        help=f"API root (default $GEMINI_BASE_URL or {RunConfig.base_url})",
    )
    cancel.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL to a non-loopback host",
    )
    cancel.set_defaults(func=cmd_cancel)


def _age(seconds: float) -> str:
    s = int(max(0.0, seconds))
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def cmd_batches(args: argparse.Namespace) -> int:
    from batchgen.store.open import open_state

    with open_state(args.out, args.state, readonly=True) as store:
        rows = store.batches()
    if not rows:
        print("no batches in this folder")
        return EXIT_OK
    now = time.time()
    print("name\tbatch\tstate\tanswered/requests\tage\tjobs\tnote")
    for row in rows:
        stats = row.stats
        answered = stats.get("successfulRequestCount", 0) + stats.get("failedRequestCount", 0)
        requests = stats.get("requestCount") or row.jobs
        state = row.state.lower() + ("" if row.closed else " (open)")
        print(
            f"{row.name}\t{row.batch_id or '-'}\t{state}\t{answered}/{requests}\t"
            f"{_age(now - row.created_at)}\t{row.jobs}\t{row.note}"
        )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from batchgen.engine.batchrun import cancel_all
    from batchgen.store.open import open_state

    key = key_from_env()
    if key is None:
        raise UsageError("no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)")
    base = args.base_url or os.environ.get("GEMINI_BASE_URL") or RunConfig.base_url
    base = check_base_url(base, allow_insecure=args.allow_insecure_http)
    config = RunConfig(out=args.out, api_key=key, base_url=base, mode=RunMode.BATCH)
    with open_state(args.out, args.state) as store:
        lines = asyncio.run(cancel_all(store, config))
    print("\n".join(lines) if lines else "no open batches in this folder")
    return EXIT_OK
