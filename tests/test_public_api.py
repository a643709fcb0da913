"""The public surface is small and pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import gc
from pathlib import Path

import batchgen


def test_all_is_pinned() -> None:
    assert batchgen.__all__ == [
        "AbortError",
        "BatchgenError",
        "InputError",
        "Job",
        "RunConfig",
        "RunResult",
        "Secret",
        "StateError",
        "Status",
        "UsageError",
        "__version__",
        "arun",
        "run",
    ]
    for name in batchgen.__all__:
        assert getattr(batchgen, name) is not None


def test_run_leaves_the_callers_garbage_collector_alone(tmp_path: Path) -> None:
    """The CLI tunes the collector for its own process; the library must not."""
    before = (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled())
    result = batchgen.run([{"id": "a", "prompt": "a cube"}], out=tmp_path / "out", sim=True)
    assert result.exit_code == 0
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before
