"""batchgen: thousands of Gemini images from a job file, resumable and reported.

The public names are imported lazily so that `batchgen --help` does not pay
for aiohttp and pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AbortError": "batchgen.errors",
    "BatchgenError": "batchgen.errors",
    "InputError": "batchgen.errors",
    "Job": "batchgen.models",
    "RunConfig": "batchgen.config",
    "RunResult": "batchgen.engine.runner",
    "Secret": "batchgen.config",
    "StateError": "batchgen.errors",
    "Status": "batchgen.models",
    "UsageError": "batchgen.errors",
    "arun": "batchgen.api",
    "run": "batchgen.api",
}

__all__ = [
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

if TYPE_CHECKING:
    from batchgen.api import arun, run
    from batchgen.config import RunConfig, Secret
    from batchgen.engine.runner import RunResult
    from batchgen.errors import AbortError, BatchgenError, InputError, StateError, UsageError
    from batchgen.models import Job, Status


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
