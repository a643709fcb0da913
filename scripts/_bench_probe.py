#!/usr/bin/env python3
"""Helper of `scripts/bench.py`: run the batchgen CLI and count reference-image reads.

Wraps `python -m batchgen ...` and, at exit, prints on stderr how many times an
image file outside the output folder was read (``Path.read_bytes``, which is
how the planner hashes and the scheduler loads reference images). A resume of
a finished folder must print 0: hashes are reused by (path, size, mtime).
"""

from __future__ import annotations

import atexit
import pathlib
import sys
from typing import Any

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".heif"}
reads = 0
_original = pathlib.Path.read_bytes


def _counting_read_bytes(self: pathlib.Path, *args: Any, **kw: Any) -> bytes:
    global reads
    if self.suffix.lower() in IMAGE_SUFFIXES and "images" not in self.parts:
        reads += 1
    return _original(self, *args, **kw)


def _report() -> None:
    print(f"bench-probe reference reads: {reads}", file=sys.stderr)


if __name__ == "__main__":
    pathlib.Path.read_bytes = _counting_read_bytes  # type: ignore[method-assign]
    atexit.register(_report)
    from batchgen.cli.main import main

    sys.exit(main(sys.argv[1:]))
