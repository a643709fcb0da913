"""state_cli: the `--state PATH|URL` option of every command that opens a folder's state.

One definition, so `run`, `status`, `report` and `review` say the same thing
and take the same values (`store/open.py` decides what a value means). The
value is kept as given: a path or a URL, opened only by the command.
"""

from __future__ import annotations

import argparse

STATE_HELP = (
    "where the folder's state is, when not OUT/.batchgen/state.sqlite: a SQLite file, "
    "or a postgresql:// URL that other machines reach (docs/scale-out.md)"
)


def add_state_option(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--state", default=None, metavar="PATH|URL", help=STATE_HELP)
