"""parquet: the store in, `OUT/report.parquet` out: one row per job, for notebooks.

`batchgen report OUT --format parquet` writes it beside `report.json`, whose
per-job rows it holds as typed columns, so that `pandas.read_parquet` (or
polars, DuckDB, Spark) reads a million-job run in a second instead of parsing
half a gigabyte of JSON. Written through pyarrow directly, a record batch per
`fetchmany` of the store's cursor: memory stays flat, and pandas is not needed
to write it. Lists (files, upscaled, tags, reference images) are list
columns; `retried` stays JSON text ({"rate_limited": 2}) because its keys
vary; times are UTC timestamps. The file appears atomically.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from batchgen.output.atomic import move, temp_path
from batchgen.output.storage import Output
from batchgen.store import Store
from batchgen.store.rows import JOB_COLUMNS

PARQUET_NAME = "report.parquet"

_LISTS = {"files", "upscaled", "tags", "images"}
_INTS = {"attempts", "requests", "line", "prompt_tokens", "output_tokens", "thoughts_tokens"}
_FLOATS = {"cost_usd", "live_cost_usd"}
_TIMES = {"started_at", "finished_at"}


def _schema() -> Any:
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name in _LISTS:
            return pa.list_(pa.string())
        if name in _INTS:
            return pa.int64()
        if name == "http_status":
            return pa.int32()
        if name in _FLOATS:
            return pa.float64()
        if name in _TIMES:
            return pa.timestamp("us", tz="UTC")
        if name == "cache_hit":
            return pa.bool_()
        return pa.string()

    return pa.schema([(name, kind(name)) for name, _ in JOB_COLUMNS])


def _convert(name: str) -> Callable[[Sequence[Any]], list[Any]]:
    if name in _LISTS:
        return lambda col: [[] if v in (None, "[]") else json.loads(v) for v in col]
    if name in _TIMES:
        return lambda col: [None if v is None else int(v * 1_000_000) for v in col]
    if name == "cache_hit":
        return lambda col: [bool(v) for v in col]
    return list


def write_parquet(
    store: Store, path: Path | None = None, *, output: Output | None = None
) -> Path | str:
    """Write every job's row to `path` (default `OUT/report.parquet`); return it.
    An object store's `output` gets the file written locally, then put whole."""
    if path is None and output is not None and output.root is None:
        with tempfile.TemporaryDirectory(prefix="batchgen-parquet-") as tmpdir:
            local = write_parquet(store, Path(tmpdir) / PARQUET_NAME)
            output.write_bytes(PARQUET_NAME, Path(local).read_bytes())
        return f"{output}/{PARQUET_NAME}"
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path is None:
        home = output.root if output is not None and output.root is not None else store.out
        path = home / PARQUET_NAME
    schema = _schema()
    converters = [_convert(name) for name, _ in JOB_COLUMNS]
    tmp = temp_path(path)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in store.job_columns():
                rows = zip(*batch, strict=True)  # the batch's columns
                columns = [conv(col) for conv, col in zip(converters, rows, strict=True)]
                writer.write_batch(pa.record_batch(columns, schema=schema))
        move(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path
