"""dialect: what the two state backends (SQLite, PostgreSQL) say differently.

The tables' modules (`runs.py`, `jobs.py`, `queries.py`, `reviews.py`) hold
one SQL text per statement and run it on either backend: their SQL is the
part both engines accept (``?`` placeholders, which the PostgreSQL
connection turns into its own; upserts as ``INSERT … ON CONFLICT … DO
UPDATE``; ``CASE`` sums instead of SQLite's boolean sums; ``ORDER BY`` on every
grouped read, so both give rows in one order). What cannot be said one way
is here, whole statements or expressions, one attribute per difference: the
JSON functions the report and the review app read the stored job with
(SQLite's ``json_each`` / ``json_extract`` on a TEXT column, PostgreSQL's
``jsonb`` functions on the same column cast), and SQLite's ``IS`` for a
comparison that holds between two NULLs.

Why a dialect object and not a second copy of each table class: each
method's Python (binding, rows into records) stays written once, and a new
query that needs JSON adds one attribute to both dialects side by side here,
where a reviewer sees that the PostgreSQL form exists. The connection-level
differences (transactions, locks, migrations) are the backends' own
`Database` classes (`db.py`, `pg/database.py`).

`Connection` and `Cursor` are the part of a DB-API connection the tables use:
`sqlite3.Connection` has it, and so has the PostgreSQL adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    #: ``a <same> b``: true when both are equal or both NULL.
    same: str
    #: The ids skipped jobs name as ``@parent``.
    skipped_parents: str
    #: One more answer of kind ``?`` retried, for job ``?`` (args: kind, kind, id).
    bump_retried: str
    #: Retried answers by kind over every job, ordered by kind.
    retried_totals: str
    #: Jobs per tag (tag, jobs, done, failed, blocked, cost), ordered by tag.
    tag_totals: str
    #: Every tag of any job, ordered.
    all_tags: str
    #: A condition on job row ``j``: it carries tag ``?``.
    has_tag: str
    #: Job row ``j``'s model: its last request's, else the one its file named.
    model: str
    #: How many answers of one kind a job's `retried` counts (NULL: none), by kind.
    retried_kind: str

    def retried_of(self, kind: str) -> str:
        """`retried_kind` for `kind` (a name of `OutcomeKind`, never user text)."""
        assert kind.isidentifier(), kind
        return self.retried_kind.format(kind=kind)


_SUMS = """count(*), sum(CASE WHEN status = 'done' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'blocked' THEN 1 ELSE 0 END), coalesce(sum(cost_usd), 0.0)"""

SQLITE = Dialect(
    name="sqlite",
    same="IS",
    skipped_parents=(
        "SELECT DISTINCT substr(i.value, 2) FROM jobs, json_each(jobs.job, '$.images') AS i "
        "WHERE jobs.status = 'skipped' AND i.value LIKE '@%'"
    ),
    bump_retried=(
        "UPDATE jobs SET retried=json_set(retried, '$.\"' || ? || '\"', "
        "coalesce(json_extract(retried, '$.\"' || ? || '\"'), 0) + 1) WHERE id=?"
    ),
    retried_totals=(
        "SELECT k.key, sum(k.value) FROM jobs, json_each(jobs.retried) AS k "
        "WHERE jobs.retried != '{}' GROUP BY k.key ORDER BY k.key"
    ),
    tag_totals=(
        f"SELECT t.value, {_SUMS} FROM jobs, json_each(jobs.job, '$.tags') AS t "
        "GROUP BY t.value ORDER BY t.value"
    ),
    all_tags="SELECT DISTINCT t.value FROM jobs, json_each(jobs.job, '$.tags') AS t ORDER BY 1",
    has_tag="EXISTS (SELECT 1 FROM json_each(j.job, '$.tags') AS t WHERE t.value = ?)",
    model="coalesce(j.model, json_extract(j.job, '$.model'))",
    retried_kind="json_extract(retried, '$.{kind}')",
)

# Text columns are COLLATE "C" in the PostgreSQL schema (bytewise, as SQLite
# orders); values taken out of JSON get it here.
POSTGRES = Dialect(
    name="postgresql",
    same="IS NOT DISTINCT FROM",
    skipped_parents=(
        "SELECT DISTINCT substr(i.value, 2) FROM jobs, "
        "jsonb_array_elements_text(jobs.job::jsonb -> 'images') AS i(value) "
        "WHERE jobs.status = 'skipped' AND i.value LIKE '@%'"
    ),
    bump_retried=(
        "UPDATE jobs SET retried=jsonb_set(retried::jsonb, ARRAY[?::text], "
        "to_jsonb(coalesce((retried::jsonb ->> ?::text)::bigint, 0) + 1))::text WHERE id=?"
    ),
    retried_totals=(
        "SELECT k.key, sum(k.value::bigint) FROM jobs, "
        "jsonb_each_text(jobs.retried::jsonb) AS k(key, value) "
        "WHERE jobs.retried != '{}' GROUP BY k.key ORDER BY k.key COLLATE \"C\""
    ),
    tag_totals=(
        f"SELECT t.value, {_SUMS} FROM jobs, "
        "jsonb_array_elements_text(jobs.job::jsonb -> 'tags') AS t(value) "
        'GROUP BY t.value ORDER BY t.value COLLATE "C"'
    ),
    all_tags=(
        'SELECT DISTINCT t.value COLLATE "C" FROM jobs, '
        "jsonb_array_elements_text(jobs.job::jsonb -> 'tags') AS t(value) ORDER BY 1"
    ),
    has_tag=(
        "EXISTS (SELECT 1 FROM jsonb_array_elements_text(j.job::jsonb -> 'tags') AS t(value) "
        "WHERE t.value = ?)"
    ),
    model="coalesce(j.model, (j.job::jsonb ->> 'model') COLLATE \"C\")",
    retried_kind="(retried::jsonb ->> '{kind}')::bigint",
)
