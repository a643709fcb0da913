"""connection: a PostgreSQL connection that the tables' shared SQL runs on.

In: a libpq URL. Out: a `PgConnection` with the few members of a DB-API
connection the tables use (`dialect.Connection`): `execute(sql, args)` with
SQLite's ``?`` placeholders (turned into psycopg's ``%s`` once per statement
text), `in_transaction`, `rollback`, `close`; and `copy` for planning.

The connection is in autocommit mode and the store opens its own units of
work with ``BEGIN`` … ``COMMIT``, exactly as it does on SQLite, so
`Database.transaction()` serves both. Every error leaves here with the URL's
password removed (`config.redact_url`): a driver message may quote the URL.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import pq

from batchgen.config import redact_url
from batchgen.errors import AbortError, StateError
from batchgen.models import StopKind

#: SQL texts already turned into psycopg's placeholders (a handful, reused per job).
_TRANSLATED: dict[str, str] = {}


def translate(sql: str) -> str:
    """``?`` placeholders to ``%s`` (and a literal ``%`` to ``%%``). The tables'
    SQL puts no ``?`` inside a string literal, and PostgreSQL's jsonb ``?``
    operator is not used."""
    done = _TRANSLATED.get(sql)
    if done is None:
        done = sql.replace("%", "%%").replace("?", "%s")
        if done.startswith("BEGIN IMMEDIATE"):
            done = "BEGIN"
        _TRANSLATED[sql] = done
    return done


def unreachable(url: str, exc: BaseException) -> StateError:
    return StateError(
        f"cannot open the state {redact_url(url)}: {redact_url(url, str(exc)).strip()}"
    )


def connect(url: str, *, readonly: bool) -> PgConnection:
    """Connect or raise `StateError` (a wrong password, an unreachable host: the
    message says which, without the password)."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except (psycopg.Error, ValueError) as exc:
        raise unreachable(url, exc) from None
    if readonly:
        conn.execute("SET default_transaction_read_only = on")
    return PgConnection(conn, url)


class PgConnection:
    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self.raw = conn
        self.url = url

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        try:
            return self.raw.execute(translate(sql), parameters)
        except psycopg.OperationalError as exc:
            if self.raw.closed or self.raw.broken:
                raise AbortError(
                    f"lost the connection to the state {redact_url(self.url)} "
                    f"({redact_url(self.url, str(exc)).strip()}); run the same command "
                    "again when it is back (finished images are kept)",
                    kind=StopKind.ERROR,
                ) from None
            raise StateError(f"{redact_url(self.url)}: {redact_url(self.url, str(exc))}") from None

    def executemany(self, sql: str, parameters: Any, /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), parameters)

    def rollback(self) -> None:
        if self.in_transaction and not self.raw.broken:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()
