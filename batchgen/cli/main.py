"""cli: argv in, an exit code out. Thin: it builds a `RunConfig` and calls the pipeline.

Errors become one clear message and an exit code, never a traceback (unless
`--debug`). Heavy modules (aiohttp, pyarrow, Pillow) are imported inside commands so
that `batchgen --help` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from batchgen import __version__
from batchgen.catalogue import IMAGE_SIZES, load_catalogue
from batchgen.cli.ci import CI_FLAGS, verdict
from batchgen.cli.inputs import JOBS_EPILOG, JOBS_HELP, KEY_EPILOG, add_input_options, read_options
from batchgen.cli.state import STATE_HELP, add_state_option
from batchgen.config import (
    ENGINES,
    MODES,
    Flag,
    RunConfig,
    add_flags,
    check_base_url,
    flag_values,
    key_from_env,
)
from batchgen.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    BatchgenError,
    InputError,
    UsageError,
)

#: `batchgen run` flags that set one `RunConfig` field each; defaults are RunConfig's.
RUN_FLAGS: tuple[Flag, ...] = (
    Flag(
        "--auth",
        "auth",
        "send the key as x-goog-api-key (header) or Authorization: Bearer",
        choices=("header", "bearer"),
    ),
    # Before --model: help lines are found by prefix, and "--model" starts with "--mode".
    Flag(
        "--mode",
        "mode",
        "live: answers in seconds at the standard price; flex: half price, minutes of "
        "latency (models with flex in batchgen models); batch: half price through "
        "Batch Mode, results within 24 h (docs/batch-mode.md)",
        choices=tuple(MODES),
    ),
    Flag(
        "--model",
        "model",
        "model for jobs that name none; the default is the catalogue's recommended one "
        "(batchgen models)",
    ),
    Flag(
        "--image-size",
        "image_size",
        "output size for jobs that name none (imageSize; models differ: batchgen models)",
        choices=IMAGE_SIZES,
    ),
    Flag(
        "--models",
        "models_file",
        "a model catalogue file (TOML) merged over the built-in one",
        type=Path,
        metavar="FILE",
    ),
    Flag("--concurrency", "concurrency", "requests in flight at most", type=int),
    Flag(
        "--rpm", "rpm", "never more than N requests in any 60 s window, evenly spread", type=float
    ),
    Flag("--max-attempts", "max_attempts", "attempts per job for retryable outcomes", type=int),
    Flag("--timeout", "timeout", "seconds per request (180; 1200 in --mode flex)", type=float),
    Flag("--limit", "limit", "only the first N pending jobs", type=int),
    Flag("--retry-failed", "retry_failed", "run failed jobs again", action="store_true"),
    Flag("--retry-blocked", "retry_blocked", "run blocked jobs again", action="store_true"),
    Flag(
        "--redo",
        "redo",
        "make the images rejected in `batchgen review` again, keeping the old ones as "
        "<name>.vN.<ext> (docs/review.md)",
        choices=("rejected",),
    ),
    Flag(
        "--dry-run",
        "dry_run",
        "validate, count and estimate cost; send nothing",
        action="store_true",
    ),
    Flag("--budget", "budget", "never spend more than USD in this output folder", type=float),
    Flag("--prices", "prices_file", "JSON file of negotiated prices per model", type=Path),
    Flag(
        "--max-retry-delay",
        "max_retry_delay",
        "a server asking to wait longer than this many seconds stops the run",
        type=float,
    ),
    Flag(
        "--cache",
        "cache_dir",
        "answer cache shared across output folders (pays once per request)",
        type=Path,
        metavar="DIR",
    ),
    Flag("--state", "state", STATE_HELP, metavar="PATH|URL"),
    Flag(
        "--engine",
        "engine",
        "inline: this process; ray: worker actors on a Ray cluster, one quota and budget "
        "for all (extra batchgen[ray]; needs a postgresql:// --state; docs/scale-out.md)",
        choices=ENGINES,
    ),
    Flag("--workers", "workers", "with --engine ray: worker actors, each --concurrency", type=int),
    Flag(
        "--ray-address",
        "ray_address",
        "with --engine ray: the cluster to join (auto, ray://HOST:10001); default: a local one",
        metavar="ADDRESS",
    ),
    Flag("--seed", "seed", "seed for retry jitter", type=int),
    Flag(
        "--max-outage",
        "max_outage",
        "seconds to wait for an endpoint that answered and went away, then stop (exit 3)",
        type=float,
        metavar="SECONDS",
    ),
    Flag(
        "--report-every",
        "report_every",
        "refresh report.json and the gallery every SECONDS during the run (0: at the end only)",
        type=float,
        metavar="SECONDS",
    ),
    Flag(
        "--poll-interval",
        "poll_interval",
        "batch: seconds between polls of the batches (jittered; a failed poll backs off)",
        type=float,
        metavar="SECONDS",
    ),
    Flag(
        "--no-wait",
        "no_wait",
        "batch: submit, collect what has finished, and exit (0 on the run that submits; "
        "later runs of the same command exit 4 while batches are pending or running)",
        action="store_true",
    ),
    Flag(
        "--batch-size",
        "batch_size",
        "batch: jobs per batch (the per-model enqueued-token caps hold ~1,000-2,500 "
        "images in the queue at once)",
        type=int,
        metavar="N",
    ),
    # Advanced (tests): how long an endpoint that never answered is tried.
    Flag("--unreachable-after", "unreachable_after", "", type=float, hidden=True),
    # Advanced (tests and chaos runs shrink the retry delays): base and cap of the backoff.
    Flag("--backoff-base", "backoff_base", "", type=float, hidden=True),
    Flag("--backoff-cap", "backoff_cap", "", type=float, hidden=True),
    Flag("--no-progress", "progress", "no progress display", action="store_false"),
    *CI_FLAGS,
)


#: `batchgen validate` checks each job against its model as `run` would.
VALIDATE_FLAGS = tuple(
    f for f in RUN_FLAGS if f.field in ("model", "image_size", "models_file", "mode")
)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("jobs", nargs="+", type=Path, help=JOBS_HELP)
    add_input_options(p)
    p.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR|URL",
        help="output folder, or an object store (s3://bucket/prefix, gs://…; pip install "
        "'batchgen[s3]'; needs --state)",
    )
    p.add_argument(
        "--sim",
        action="store_true",
        help="use the built-in simulator on a free loopback port (no key needed)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help=f"API root (default $GEMINI_BASE_URL or {RunConfig.base_url})",
    )
    p.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL to a non-loopback host",
    )
    add_flags(p, RunConfig, RUN_FLAGS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchgen",
        description="Generate thousands of images with Gemini from job files: "
        "resumable, rate-limited, reported.",
    )
    parser.add_argument("--version", action="version", version=f"batchgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run job files into an output folder (resumable)",
        epilog=JOBS_EPILOG + KEY_EPILOG,
    )
    _add_run_options(run)
    run.set_defaults(func=cmd_run)

    val = sub.add_parser(
        "validate",
        help="check job files; exit 2 on any problem",
        epilog=JOBS_EPILOG + " No API key is needed (GEMINI_API_KEY is read by run).",
    )
    val.add_argument("jobs", nargs="+", type=Path, help=JOBS_HELP)
    add_input_options(val)
    add_flags(val, RunConfig, VALIDATE_FLAGS)
    val.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON document on stdout with every problem and the counts "
        "(docs/ci.md); the exit code is the same",
    )
    val.set_defaults(func=cmd_validate)

    rep = sub.add_parser(
        "report",
        help="rebuild report.json, failed.jsonl and the gallery",
        description="Rebuild OUT/report.json, OUT/failed.jsonl and OUT/report.html from the "
        "folder's state. Works while a run holds the folder (it reads the state read-only; "
        "the files are replaced atomically).",
    )
    rep.add_argument("out", help="an output folder or URL (the --out of a run)")
    rep.add_argument(
        "--by",
        choices=("tag",),
        default=None,
        help="also print a roll-up: jobs, done, failed, blocked and spend per tag",
    )
    rep.add_argument(
        "--format",
        choices=("json", "csv", "parquet"),
        default="json",
        help="json, csv: format of the --by roll-up on stdout (default: json); parquet: also "
        "write OUT/report.parquet, one row per job (pandas.read_parquet)",
    )
    rep.add_argument(
        "--junit", type=Path, metavar="FILE", help="also write every job as JUnit XML to FILE"
    )
    rep.add_argument(
        "--local",
        type=Path,
        metavar="DIR",
        help="also copy the gallery (page, data, previews) to DIR, to open from disk "
        "(for an OUT on an object store; the full images stay there)",
    )
    add_state_option(rep)
    rep.set_defaults(func=cmd_report)

    st = sub.add_parser("status", help="print the counts of an output folder")
    st.add_argument("out", help="an output folder or URL (works while a run holds it)")
    add_state_option(st)
    st.set_defaults(func=cmd_status)

    from batchgen.sim.cli import register as register_sim

    register_sim(sub)
    from batchgen.cli.expand import register as register_expand

    register_expand(sub)
    from batchgen.cli.models import register as register_models

    register_models(sub)
    from batchgen.cli.check import register as register_check

    register_check(sub)
    from batchgen.cli.review import register as register_review

    register_review(sub)
    from batchgen.cli.export import register as register_export

    register_export(sub)
    from batchgen.cli.batches import register as register_batches

    register_batches(sub)
    return parser


def _config(args: argparse.Namespace) -> RunConfig:
    key = key_from_env()
    base = args.base_url or os.environ.get("GEMINI_BASE_URL") or RunConfig.base_url
    if not args.sim:
        base = check_base_url(base, allow_insecure=args.allow_insecure_http)
    out, out_url = _out(args)
    return RunConfig(
        out=out, out_url=out_url, api_key=key, base_url=base, **flag_values(args, RUN_FLAGS)
    )


def _out(args: argparse.Namespace) -> tuple[Path, str | None]:
    """OUT as (a folder, None) or, on an object store, (a local folder, its URL):
    a remote OUT needs an explicit --state (a resumable run says where its state is)."""
    from batchgen.output.storage import redact, split_out

    out, url = split_out(args.out)
    if url is not None and getattr(args, "state", None) is None:
        raise UsageError(
            f"--out {redact(url)} is an object store: give --state PATH|URL too (where "
            "the run's state lives; docs/scale-out.md)"
        )
    return out, url


def _tune_gc() -> None:
    """A run allocates and frees JSON, HTTP and image objects in bursts: at
    CPython's default threshold (700) that was ~300 collections per 10,000 jobs
    (0.25 s of CPU) and two full ones of ~20 ms, each a stall of the event loop
    that delays every answer waiting behind it; at 10,000 there were 6. What
    is loaded by now lives for the whole run, so full collections skip it.
    Only the `batchgen` command does this: `batchgen.run` leaves its caller's
    process alone."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def cmd_run(args: argparse.Namespace) -> int:
    from batchgen.cli.dryrun import print_dry_run
    from batchgen.engine import eventloop
    from batchgen.engine.runner import arun_sources, describe, sources_for

    config = _config(args)
    sources = sources_for(args.jobs, read_options(args))
    _tune_gc()
    result = eventloop.run(arun_sources(sources, config, sim=args.sim))
    if config.dry_run:
        print_dry_run(config, result)
        return EXIT_OK
    print(describe(result), file=sys.stderr)
    judged = verdict(config.fail_under, result.report, result.exit_code)
    if judged:
        print(judged, file=sys.stderr)
    where = _where(config.out, config.out_url)
    print(f"report: {where}/report.json; gallery: {where}/report.html", file=sys.stderr)
    return result.exit_code


def _where(out: Path, url: str | None) -> str:
    """OUT for people: the folder, or the URL without its secrets."""
    if url is None:
        return str(out)
    from batchgen.output.storage import redact

    return redact(url)


def cmd_validate(args: argparse.Namespace) -> int:
    if args.format == "json":
        from batchgen.cli.ci import as_json

        return as_json(lambda: _count_jobs(args))
    print(f"{_count_jobs(args)} jobs OK")
    return EXIT_OK


def _count_jobs(args: argparse.Namespace) -> int:
    """The valid jobs of `validate`'s files, or `InputError` with every problem."""
    from batchgen.engine.pricing import PriceTable
    from batchgen.engine.runner import model_rules, sources_for
    from batchgen.jobs import reader

    config = RunConfig(out=Path("."), **flag_values(args, VALIDATE_FLAGS))
    prices = PriceTable.load(None, load_catalogue(config.models_file), config.mode_spec.tier)
    rules = model_rules(config, prices)
    return reader.check(sources_for(args.jobs, read_options(args)), rules=rules)


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from batchgen.output.storage import open_output
    from batchgen.report.folder import report_store
    from batchgen.report.summary import tag_csv, write_reports

    out, url = _out(args)
    output = open_output(url or out)
    # A folder a run holds is read read-only; each file is replaced atomically.
    with report_store(out, args.state) as store:
        summary = write_reports(store, output=output)
        if args.junit is not None:
            from batchgen.report.junit import write_junit

            write_junit(store, args.junit)
        if args.format == "parquet":
            from batchgen.report.parquet import write_parquet

            print(f"wrote {write_parquet(store, output=output)}")
        if args.local is not None:
            from batchgen.report.local import copy_gallery

            copied = copy_gallery(store, output, args.local)
            print(f"copied the gallery ({copied} files) to {args.local / 'report.html'}")
    if args.by == "tag":
        if args.format == "csv":
            sys.stdout.write(tag_csv(summary))
        else:
            print(json.dumps(summary["by_tag"], indent=2))
    else:
        print(f"wrote {output}/report.json and {output}/report.html")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from batchgen.report.summary import status_line, summarize
    from batchgen.store.open import open_state

    out, _url = _out(args)
    with open_state(out, args.state, readonly=True) as store:
        print(status_line(summarize(store)))
    return EXIT_OK


def _default_sim_serve(argv: list[str]) -> list[str]:
    """`batchgen sim [options]` is `batchgen sim serve [options]` (the first
    simulator's command line, kept working)."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            continue
        if arg == "sim":
            rest = argv[i + 1 : i + 2]
            if not rest or rest[0] not in ("serve", "-h", "--help"):
                return [*argv[: i + 1], "serve", *argv[i + 1 :]]
        break
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_default_sim_serve(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except InputError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except BatchgenError as exc:
        if args.debug:
            raise
        print(f"batchgen: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("batchgen: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if args.debug:
            raise
        print(f"batchgen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
