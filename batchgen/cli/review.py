"""review_cli: the `review` command of the CLI.

Apart from the review app so that building the parser (and `--help`) does
not import aiohttp's server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from batchgen.cli.state import add_state_option
from batchgen.errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``review OUT [--port N] [--no-browser]`` to the main CLI."""
    p = subparsers.add_parser(
        "review",
        help="approve, reject and note the images in the browser",
        description="Serve a local review app over an output folder on 127.0.0.1: approve "
        "(a), reject (r) and note (n) each image; each decision is saved to the folder's "
        "state at once, also while a run is going on there. `batchgen run --redo rejected` "
        "makes the rejected ones again. See docs/review.md.",
    )
    p.add_argument("out", type=_local_folder, help="an output folder (the --out of a run)")
    add_state_option(p)
    p.add_argument(
        "--port", type=int, default=0, metavar="N", help="port on 127.0.0.1 (default: a free one)"
    )
    p.add_argument(
        "--no-browser", action="store_true", help="print the URL only; do not open a browser"
    )
    p.set_defaults(func=_cmd_review)


def _local_folder(value: str) -> Path:
    """The review app serves images from a folder: an object store's OUT is refused
    (`batchgen report OUT --local DIR` copies its gallery to look at)."""
    if "://" in value:
        raise argparse.ArgumentTypeError(
            "review serves a local output folder only; for an OUT on an object store, "
            "`batchgen report OUT --state … --local DIR` copies its gallery"
        )
    return Path(value)


def _cmd_review(args: argparse.Namespace) -> int:
    from batchgen.review.server import serve

    def ready(url: str) -> None:
        print(f"review: {url}", flush=True)
        print("the token in the URL is the key to this page; Ctrl-C stops", file=sys.stderr)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(url)

    asyncio.run(serve(args.out, port=args.port, on_ready=ready, state=args.state))
    return EXIT_OK
