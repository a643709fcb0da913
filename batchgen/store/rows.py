"""rows: every job's report row and gallery row, built as JSON text by SQLite.

In: the jobs table. Out: `ReportRow` tuples, fetched in batches from one
cursor in `seq` order (or the costliest / most-attempted first, for the
gallery's sorted views), each carrying its `report.json` row and its gallery
row as finished JSON text, plus the few plain columns the gallery's filter
index and its previews need.

Why SQL builds the text: at a million jobs, parsing each job's JSON into
Python objects, building a dict and encoding it again took most of a
report's minute and a half; SQLite's JSON functions do the same in C, and
Python only moves strings. The rows are the ones `summary.job_row` and
`gallery.data_row` make from a `JobRecord` (a test holds the two equal), so
the documented fields of `report.json` do not change. The gallery row lacks
its last field, the reference images, which the report resolves relative to
the page (Python's job: paths); a preview that is not the image itself is
also the report's to find (`thumbs.py`).
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from batchgen.store.db import Database

#: Rows per `fetchmany`: big enough to amortise the call, small enough to hold.
BATCH = 2_000
#: Cards show this much of a prompt, an error message or the model's text.
TEXT_LIMIT = 300


class ReportRow(NamedTuple):
    """One job, as the report files need it."""

    #: The job's row of `report.json` (JSON text).
    report: str
    #: The job's row of the gallery data, all fields but the last ("refs"), `<` escaped.
    data: str
    status: str
    error_kind: str | None
    #: The job's tags as JSON text ("[]" for none).
    tags: str
    #: Retried answers by kind as JSON text ("{}" for none).
    retried: str
    #: The first image, relative to OUT (None: no image).
    image: str | None
    #: 1 when the gallery row's preview is still to be found (an image that is
    #: not its own preview), else 0.
    needs_thumb: int
    #: The job's reference images as JSON text (absolute paths or `@id`), or None.
    refs: str | None
    #: What the gallery's search reads: the id, a space, the clipped prompt.
    search: str


def _clip(col: str) -> str:
    """SQL for `gallery._clip`: at most TEXT_LIMIT characters, an ellipsis when cut."""
    n = TEXT_LIMIT
    return (
        f"CASE WHEN length({col}) <= {n} THEN {col} "
        f"ELSE rtrim(substr({col}, 1, {n - 1}), ' ' || char(9, 10, 13)) || '…' END"
    )


def _wh(col: str) -> str:
    """SQL for `summary._wh`: "2048x1536" as [2048,1536], NULL when unknown."""
    return (
        f"CASE WHEN coalesce({col}, '') = '' THEN NULL ELSE '[' || "
        f"CAST(substr({col}, 1, instr({col}, 'x') - 1) AS INTEGER) || ',' || "
        f"CAST(substr({col}, instr({col}, 'x') + 1) AS INTEGER) || ']' END"
    )


_MISMATCH = (
    "(coalesce(pixels, '') != '' AND coalesce(expected_pixels, '') != '' "
    "AND pixels != expected_pixels)"
)
_HAS_ERROR = "coalesce(error_kind, '') != ''"

#: The first image without its "#upscaled"-style suffix, and the rest of the files
#: with "#upscaled" where the file was enlarged; computed once per row below.
_INNER = f"""SELECT jobs.*, json_extract(job, '$.prompt') AS j_prompt,
    coalesce(json_extract(job, '$.tags'), '[]') AS j_tags,
    json_extract(job, '$.images') AS j_images,
    CASE WHEN f0 IS NULL THEN NULL WHEN instr(f0, '#') THEN substr(f0, 1, instr(f0, '#') - 1)
         ELSE f0 END AS image,
    {_MISMATCH} AS mismatch
    FROM (SELECT *, json_extract(files, '$[0]') AS f0 FROM jobs) AS jobs"""

_REST = """CASE WHEN json_array_length(files) < 2 THEN '[]' ELSE (
    SELECT json_group_array(CASE WHEN f.value IN (SELECT value FROM json_each(upscaled))
      THEN f.value || '#upscaled' ELSE f.value END)
    FROM json_each(files) AS f WHERE f.key > 0) END"""


def _q(expr: str) -> str:
    """SQL: `expr` as a JSON value (a string quoted and escaped, NULL as null)."""
    return f"json_quote({expr})"


def _printf(*parts: str) -> str:
    """SQL: one `printf()` of literal JSON text and SQL values, alternating
    (literal, value, literal, ..., literal). One call builds the row where a
    chain of `||` copied it once per piece (~30 % of the query's time)."""
    literals, values = parts[0::2], parts[1::2]
    fmt = "%s".join(lit.replace("%", "%%") for lit in literals).replace("'", "''")
    return f"printf('{fmt}', {', '.join(values)})"


# Built as text, not json_object(): the stored JSON columns (files, upscaled,
# retried, the job's tags) are already JSON text, and re-parsing them per row
# was most of the query's time. No value may be NULL here (printf would write
# nothing): nullable ones go through json_quote() or coalesce().
_ERROR = (
    f"CASE WHEN {_HAS_ERROR} THEN "
    + _printf(
        '{"kind":', _q("error_kind"), ',"http_status":', _q("http_status"),
        ',"message":', _q("coalesce(error_message, '')"), "}",
    )
    + " ELSE 'null' END"
)  # fmt: skip

_REPORT = _printf(
    '{"id":', _q("id"), ',"status":', _q("status"), ',"attempts":', "attempts",
    ',"requests":', "requests", ',"files":', "files", ',"upscaled":', "upscaled",
    ',"error":', _ERROR, ',"retried":', "retried", ',"text":', _q("text"),
    ',"prompt":', _q("j_prompt"), ',"tokens":{"prompt":', "prompt_tokens",
    ',"output":', "output_tokens", ',"thoughts":', "thoughts_tokens",
    '},"cost_usd":', _q("round(cost_usd, 6)"), ',"cost_source":', _q("cost_source"),
    ',"tags":', "j_tags", ',"source":', _q("coalesce(json_extract(job, '$.source'), '')"),
    ',"line":', "coalesce(json_extract(job, '$.line'), 0)", ',"model":', _q("model"),
    ',"image_size":', _q("image_size"), ',"pixels":', f"coalesce({_wh('pixels')}, 'null')",
    ',"expected_pixels":', f"coalesce({_wh('expected_pixels')}, 'null')",
    ',"size_mismatch":', "CASE WHEN mismatch THEN 'true' ELSE 'false' END",
    ',"mode":', _q("mode"), ',"live_cost_usd":', _q("round(live_cost_usd, 6)"), "}",
)  # fmt: skip

_DATA_ERROR = (
    f"CASE WHEN {_HAS_ERROR} THEN "
    + _printf(
        "", _q("error_kind"), ",", _q("http_status"), ",",
        _q(_clip("coalesce(error_message, '')")), "",
    )
    + " ELSE 'null,null,null' END"
)  # fmt: skip

_DATA = "replace(" + _printf(
    "[", _q("id"), ",", _q("status"), ",", _q(_clip("j_prompt")), ",", "j_tags",
    ",", "attempts", ",", _q("round(cost_usd, 6)"), ",", _DATA_ERROR, ",", _q(_clip("text")),
    ",", _q("image"), ",", _q("CASE WHEN preview = image THEN image END"), ",", _REST,
    ",", "retried", ",", _q("pixels"), ",", _q("CASE WHEN mismatch THEN expected_pixels END"),
    "]",
) + ", '<', '\\u003c')"  # fmt: skip

#: (name, SQL) of each plain column of a job, for tabular exports (parquet).
JOB_COLUMNS = (
    ("id", "id"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("requests", "requests"),
    ("files", "files"),
    ("upscaled", "upscaled"),
    ("error_kind", "CASE WHEN coalesce(error_kind, '') != '' THEN error_kind END"),
    ("http_status", "http_status"),
    ("error_message", "error_message"),
    ("retried", "retried"),
    ("text", "text"),
    ("prompt", "json_extract(job, '$.prompt')"),
    ("tags", "coalesce(json_extract(job, '$.tags'), '[]')"),
    ("images", "coalesce(json_extract(job, '$.images'), '[]')"),
    ("source", "coalesce(json_extract(job, '$.source'), '')"),
    ("line", "coalesce(json_extract(job, '$.line'), 0)"),
    ("prompt_tokens", "prompt_tokens"),
    ("output_tokens", "output_tokens"),
    ("thoughts_tokens", "thoughts_tokens"),
    ("cost_usd", "cost_usd"),
    ("cost_source", "cost_source"),
    ("live_cost_usd", "live_cost_usd"),
    ("cache_hit", "cache_hit"),
    ("model", "model"),
    ("image_size", "image_size"),
    ("mode", "mode"),
    ("pixels", "pixels"),
    ("expected_pixels", "expected_pixels"),
    ("started_at", "started_at"),
    ("finished_at", "finished_at"),
)

_ORDER = {
    "file": "seq",
    "cost": "cost_usd DESC, seq",
    "attempts": "attempts DESC, seq",
}


def _prefetched(db: sqlite3.Connection, sql: str, depth: int = 4) -> Iterator[list[Any]]:
    """The batches of `sql` on `db`, fetched by a thread up to `depth` ahead; `db`
    is closed when they end or the caller stops early."""
    batches: queue.Queue[list[Any] | BaseException] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fetch() -> None:
        try:
            cur = db.execute(sql)
            while not stop.is_set():
                batch = cur.fetchmany(BATCH)
                while not stop.is_set():
                    with contextlib.suppress(queue.Full):
                        batches.put(batch, timeout=0.1)
                        break
                if not batch:
                    return
        except BaseException as exc:  # handed to the caller, raised there
            batches.put(exc)
        finally:
            db.close()

    thread = threading.Thread(target=fetch, name="report-rows", daemon=True)
    thread.start()
    try:
        while True:
            item = batches.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class ReportRows(Database):
    def report_rows(self, order: str = "file", limit: int | None = None) -> Iterator[ReportRow]:
        """Every job's rows in file order, or the first `limit` by cost or attempts
        (`order`: "file", "cost", "attempts"), streamed in batches of `BATCH`.

        SQLite builds the batches on a thread of its own, with its own read-only
        connection, while the caller writes the previous ones: sqlite3 lets go
        of the GIL while a statement runs, so the query and the writing share
        two cores instead of taking turns (it sees what is committed)."""
        sql = f"""SELECT {_REPORT}, {_DATA}, status, error_kind, j_tags, retried, image,
            image IS NOT NULL AND preview IS NOT image, j_images,
            id || ' ' || coalesce({_clip("j_prompt")}, '')
            FROM ({_INNER}) ORDER BY {_ORDER[order]}"""
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        db = self._connect(f"file:{self.path}?mode=ro", uri=True)
        for batch in _prefetched(db, sql):
            for row in batch:
                yield ReportRow._make(row)

    def first_file(self, job_id: str) -> str | None:
        """A job's first output file (where a chained job's reference image is)."""
        row = self.db.execute(
            "SELECT json_extract(files, '$[0]') FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0]).split("#", 1)[0]

    def upscaled_total(self) -> int:
        """Size-preset files enlarged beyond the model's output, over every job."""
        row = self.db.execute("SELECT coalesce(sum(json_array_length(upscaled)), 0) FROM jobs")
        return int(row.fetchone()[0])

    def job_columns(self) -> Iterator[list[tuple[Any, ...]]]:
        """Every job's plain columns in file order, in batches of `BATCH` rows
        (`JOB_COLUMNS` order; lists and maps as JSON text): for tabular exports."""
        cur = self.db.execute(
            f"""SELECT {", ".join(sql for _, sql in JOB_COLUMNS)} FROM jobs ORDER BY seq"""
        )
        while batch := cur.fetchmany(BATCH):
            yield batch
