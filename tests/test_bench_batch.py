"""scripts/bench_batch.py keeps working: its quick size runs in seconds and its
ratios hold (cost half of live, every image valid, the expected batches, a
peak RSS that does not grow with the results file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_bench_batch_quick_ratios_hold() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_batch.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    for line in (
        "| cost batch / live | 0.50 | 0.50 |",
        "| images valid / jobs | 1.00 | 1.00 |",
        "| batches made / expected | 1.00 | 1.00 |",
    ):
        assert line in proc.stdout
    assert "peak RSS 4M / M" in proc.stdout
