"""The public surface is small and pinned: changing it is a decision, not an accident."""

from __future__ import annotations

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
