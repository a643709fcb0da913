"""scripts/bench.py keeps working: its quick size runs in seconds and prints the table.

No timed assertions: the figures depend on the machine; only the shape is checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_quick_prints_the_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "| scenario | figure | value | limit | ratio | result |" in out
    for scenario in (
        "1 latency-bound",
        "2 overhead",
        "3 unknown quota",
        "3 --rpm",
        "4 memory",
        "5 resume",
        "6 layout",
        "7 real-size answers",
        "8 platform sizes",
        "9 report of a finished",
        "gallery: open",
    ):
        assert scenario in out
    assert "batchgen / baseline" in out
