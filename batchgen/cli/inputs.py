"""cli inputs: the job-file flags `run` and `validate` share, and what they mean to the reader.

Kept apart from `cli/main.py` so the reader's options (delimiter, sheet, columns to
skip) read as one piece; nothing here imports the reader's machinery.
"""

from __future__ import annotations

import argparse
import sys

from batchgen.errors import UsageError
from batchgen.jobs.columns import ReadOptions

JOBS_HELP = "job files (.csv, .jsonl, .parquet, .xlsx) and recipes (.toml)"
JOBS_EPILOG = (
    "Job files: a header names the columns (id, prompt, images, aspect_ratio, tags, "
    "priority, model, variant, sizes), matched ignoring case, spaces and hyphens "
    "('Aspect Ratio' is aspect_ratio); a CSV's delimiter (, ; tab |) is read from its "
    "header line; an .xlsx is read from its first sheet unless --sheet says otherwise. "
    "Columns named _x or x-x are skipped. See docs/job-files.md."
)
KEY_EPILOG = (
    " The API key is read from the GEMINI_API_KEY (or GOOGLE_API_KEY) environment "
    "variable, never a flag; "
    "--sim and --dry-run need none."
)


def add_input_options(p: argparse.ArgumentParser) -> None:
    """The reader's flags, shared by `run` and `validate`."""
    g = p.add_argument_group("job files")
    g.add_argument(
        "--delimiter",
        default=None,
        metavar="CHAR",
        help="CSV delimiter: ',', ';', '|' or 'tab' (default: detected from the header line)",
    )
    g.add_argument(
        "--sheet",
        default=None,
        metavar="NAME|N",
        help=".xlsx sheet to read, by name or number from 1 (default: the first); "
        "also a recipe's product sheet, unless the recipe sets sheet_name",
    )
    g.add_argument(
        "--ignore-columns",
        default="",
        metavar="A,B",
        help="columns (or JSONL keys) to skip without a word, comma-separated",
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    """The reading options the flags ask for; notes about the files go to stderr."""
    delimiter = args.delimiter
    if delimiter is not None:
        delimiter = {"tab": "\t", "\\t": "\t", "\t": "\t"}.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise UsageError(f"--delimiter takes one character or 'tab', not {args.delimiter!r}")

    def notify(message: str) -> None:
        print(f"batchgen: {message}", file=sys.stderr)

    ignore = args.ignore_columns.split(",")
    return ReadOptions.make(delimiter=delimiter, sheet=args.sheet, ignore=ignore, notify=notify)
