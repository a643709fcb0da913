"""``python -m batchgen.sim serve ...``: the ``sim`` command without the main CLI."""

from __future__ import annotations

import argparse
import sys

from batchgen.sim.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchgen.sim")
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    # The same command line as `batchgen sim ...`, minus the word "sim".
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
