"""One knob for the size of the scale-out tests: ``BATCHGEN_TEST_SIZE``.

``ci`` (the default) runs each scale-out test at the size CI can afford on its
2-core machine; ``full`` runs it at the size of the scale-out design's table of
tests (docs/scale-out.md, "Running the scale-out tests at full size"): 1,000
jobs for the equivalence and the chaos test, 10 worker and 3 driver kills, a
settled 100,000-job folder for the no-op resume. A test reads its size here,
and only here, so a full run is one variable away and CI never pays for it:

    BATCHGEN_TEST_SIZE=full .venv/bin/python -m pytest tests/test_ray_engine.py
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

SIZE_ENV = "BATCHGEN_TEST_SIZE"
SIZES = ("ci", "full")

SIZE = os.environ.get(SIZE_ENV, "ci").strip().lower() or "ci"
if SIZE not in SIZES:
    # A typo must not quietly run the CI size and be reported as a full run.
    raise ValueError(f"{SIZE_ENV}={SIZE!r}: expected one of {', '.join(SIZES)}")
FULL = SIZE == "full"


def sized(ci: T, full: T) -> T:
    """`ci` at CI size, `full` under ``BATCHGEN_TEST_SIZE=full``."""
    return full if FULL else ci
