"""The state of one output folder (SQLite): plans, attempts, ends, the request cache.

`Store` is what callers hold; `state.py` says how it is put together.

Internal: not part of batchgen's public API (that is `batchgen.run`, `batchgen.arun`,
`RunConfig` and the names in `batchgen.__all__`); it may change in any release.
"""

from __future__ import annotations

from batchgen.store.db import DB_NAME, STATE_DIR
from batchgen.store.state import Store

__all__ = ["DB_NAME", "STATE_DIR", "Store"]
