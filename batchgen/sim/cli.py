"""``batchgen sim serve``: the simulator as a standalone process.

Prints exactly one line, ``batchgen simulator serving at http://HOST:PORT``,
once the port is bound, so that a script or a benchmark can start it with
``--port 0`` and read the URL. SIGINT and SIGTERM stop it cleanly (exit 0),
with one line on stderr of what it served (requests by outcome).
Errors in the options are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchgen.config import Flag, add_flags, flag_values
from batchgen.errors import EXIT_OK, EXIT_USAGE
from batchgen.sim.config import SimConfig
from batchgen.sim.faults import SpecError, parse_faults, spread_fault_rate

#: `sim serve` flags that set one `SimConfig` field each; defaults are SimConfig's.
SIM_FLAGS: tuple[Flag, ...] = (
    Flag("--host", "host", "address to bind"),
    Flag("--port", "port", "port; 0 picks a free one", type=int),
    Flag("--latency", "latency", "seconds, uniform:LOW:HIGH or lognormal:MEDIAN:SIGMA"),
    Flag("--rpm", "rpm", "requests per minute (sliding window)", type=int),
    Flag("--rpd", "rpd", "requests per day (fixed window)", type=int),
    Flag("--quota-window", "quota_window_s", "length of the RPM window in seconds", type=float),
    Flag("--quota-scope", "quota_scope", "who shares a quota", choices=("project", "key")),
    Flag("--max-concurrent", "max_concurrent", "answer 503 beyond this many in flight", type=int),
    Flag("--seed", "seed", "seed for faults and latency", type=int),
    Flag("--noise", "noise", "noisy ~1 MB images, like real ones", action="store_true"),
    Flag(
        "--rgb-noise",
        "rgb_noise",
        "incompressible RGB noise, 3 bytes a pixel (12.6 MB at 2048 px)",
        action="store_true",
    ),
    Flag(
        "--noise-pool",
        "noise_pool",
        "serve one of N pre-built noisy images per size, not a new one per request",
        type=int,
    ),
    Flag("--size-scale", "size_scale", "multiply the model's pixel sizes (2: 2048 px)", type=float),
    Flag(
        "--small-images",
        "small_images",
        "tiny images (1:1 is 16x16) for benchmarks",
        action="store_true",
    ),
    Flag("--hang-seconds", "hang_seconds", "how long a 'hang' lasts", type=float),
    Flag("--log", "log_path", "append one JSON line per request", metavar="FILE"),
)


def register(subparsers: Any) -> None:
    """Add ``sim serve`` to an argparse subparsers object."""
    sim = subparsers.add_parser("sim", help="run the built-in Gemini API simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", metavar="COMMAND")
    sim_sub.required = True
    serve = sim_sub.add_parser(
        "serve",
        help="serve the simulated API until Ctrl-C",
        description="Serve a simulated Gemini image API on loopback. Prompts may force "
        "outcomes with [[sim:KIND]] or [[sim:KINDxN]] markers.",
    )
    add_flags(serve, SimConfig, SIM_FLAGS)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("BATCHGEN_SIM_KEY"),
        help="require this key (default: env BATCHGEN_SIM_KEY; none = accept any)",
    )
    always = ", ".join(SimConfig.models)
    serve.add_argument(
        "--model",
        action="append",
        default=[],
        help=f"serve this model id too (repeatable); {always} is always served",
    )
    serve.add_argument(
        "--fault-rate", type=float, help="overall random fault rate spread over a default mix"
    )
    serve.add_argument(
        "--faults", default="", help="per-kind rates, e.g. 429=0.02,500=0.01,reset=0.01,hang=0.005"
    )
    serve.add_argument(
        "--script",
        metavar="FILE",
        help='JSON object {"prompt substring": ["503", "text", ...]}: kinds answered in order',
    )
    serve.set_defaults(func=run_serve)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Build a validated `SimConfig` from parsed options (raises SpecError)."""
    faults: dict[str, float] = {}
    if args.fault_rate:
        faults.update(spread_fault_rate(args.fault_rate))
    if args.faults:
        faults.update(parse_faults(args.faults))
    models = (*SimConfig.models, *args.model)
    return SimConfig(
        api_key=args.api_key or None,
        models=tuple(dict.fromkeys(models)),
        faults=faults,
        script=_load_script(args.script) if args.script else None,
        **flag_values(args, SIM_FLAGS),
    )


def _load_script(path: str) -> dict[str, list[str]]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(f"cannot read script {path}: {exc}") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
        for k, v in doc.items()
    ):
        raise SpecError(f"script {path} must map prompt substrings to lists of kinds")
    return doc


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except SpecError as exc:
        print(f"batchgen sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_OK
    except OSError as exc:
        print(f"batchgen sim: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def served_summary(total: int, by_outcome: Mapping[str, int]) -> str:
    """What a stopped simulator served, by outcome, most frequent first."""
    noun = "request" if total == 1 else "requests"
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(by_outcome.items(), key=lambda e: -e[1]))
    return f"batchgen simulator stopped: served {total} {noun}" + (f" ({parts})" if parts else "")


async def serve(config: SimConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        from batchgen.sim.server import Simulator

        async with Simulator(config) as sim:
            print(f"batchgen simulator serving at {sim.base_url}", flush=True)
            await stop.wait()
            print(served_summary(sim.stats.total, sim.stats.by_outcome), file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
