"""The PostgreSQL state (`--state postgresql://…`, extra `batchgen[pg]`).

Imported only when a run names such a state (`store/open.py`): psycopg is
an optional dependency, and the default SQLite path never loads it.
"""

from __future__ import annotations

from batchgen.store.pg.store import PgStore

__all__ = ["PgStore"]
