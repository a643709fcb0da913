"""cli export: `batchgen export OUT (--approved | --all-done) --to DIR|FILE.zip [--sizes A,B]`.

Apart from `cli/main.py` so that building the parser imports nothing of the
export (`report/export.py` does the work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchgen.cli.state import add_state_option
from batchgen.errors import EXIT_OK, UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``export`` to the main CLI."""
    exp = subparsers.add_parser(
        "export",
        help="copy approved (or all done) images and a manifest CSV to a folder or a zip",
        description="Copy the chosen jobs' images, and the platform sizes asked for, with "
        "manifest.csv (id, tags, size, file, width, height, bytes, sha256) for a catalogue "
        "upload. A folder export can be run again (it updates the folder); a zip is written "
        "whole or not at all. A chosen job without a size asked for is an error naming it.",
    )
    exp.add_argument("out", help="an output folder or URL (the --out of a run)")
    add_state_option(exp)
    which = exp.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--approved", action="store_true", help="the images approved in batchgen review"
    )
    which.add_argument("--all-done", action="store_true", help="every done job's images")
    exp.add_argument(
        "--to", type=Path, required=True, metavar="DIR|FILE.zip", help="where to export"
    )
    exp.add_argument(
        "--sizes",
        default="",
        metavar="A,B",
        help="platform sizes to include beside each image (names under OUT/sizes/: amazon,shopify)",
    )
    exp.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from batchgen.report.export import export
    from batchgen.report.folder import report_store

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if "/" in s or s in (".", "..")]
    if bad:
        raise UsageError(f"--sizes takes size names (amazon, shopify), not {', '.join(bad)}")
    from batchgen.output.storage import RemoteOutput, split_out

    out, url = split_out(args.out)
    to: Path = args.to
    inside = url is None and (
        to.resolve() == out.resolve() or out.resolve() in to.resolve().parents
    )
    if inside and to.suffix.lower() != ".zip":
        # A folder export inside OUT would mix with the run's own files.
        raise UsageError(f"--to {to} is inside the output folder; export elsewhere")
    output = None if url is None else RemoteOutput(url)
    with report_store(out, args.state) as store:
        done = export(store, to, approved=args.approved, sizes=sizes, output=output)
    removed = f"; removed {done.removed} no longer chosen" if done.removed else ""
    if args.approved and not done.jobs:
        removed += f" (no image is approved yet: batchgen review {out})"
    print(
        f"exported {done.files} files of {done.jobs} jobs ({done.bytes:,} bytes) to {to}{removed}",
        file=sys.stderr,
    )
    return EXIT_OK
