"""report: the store in, `report.json` and `failed.jsonl` out (and the gallery).

The report is a pure function of the store, so a resumed run reports on every
job ever planned in the folder, not only on the last run. Files are written by
streaming rows from the store (the summary first, from aggregate queries and
one pass for the tag roll-up), never by holding every row, and atomically.

report.json schema (version 1)::

    {
      "schema": 1, "generated_at": ISO-8601, "out": str,
      "total", "done", "blocked", "failed", "skipped", "pending": int,
      "success_rate": float (done / finished, 0..1; 0 when nothing finished),
      "requests", "retries": int,
      "errors": {kind: count},            # final errors of failed/blocked/skipped jobs
      "retried": {kind: count},           # answers a job was sent again after (429s, 503s, …)
      "tokens": {"prompt": int, "output": int},
      "cost_usd": float, "cost_sources": {"usage"|"table"|"mixed": jobs},
      "elapsed_s": float, "images_per_minute": float,
      "cache": {"hits": int, "saved_usd": float},   # answers reused, money not spent
      "size_mismatches": int,   # done jobs whose image is not the catalogue's size
      "spend": {"by_model": {model: {"jobs", "cost_usd", "unpriced"}},
                "by_model_size": [{"model", "size", "jobs", "done", "cost_usd",
                                   "unpriced"}]},   # "unpriced": jobs of unknown cost
      "by_mode": {mode: {"jobs", "cost_usd", "live_cost_usd"}},  # live, flex: what
                                 # each cost, and what live would have (flex: twice)
      "by_tag": {tag: {"jobs", "done", "failed", "blocked", "cost_usd"}},
      "jobs": [{"id", "status", "attempts", "requests", "files": [str] (relative to OUT),
                "upscaled": [str] (size-preset files enlarged beyond the model's output),
                "error": {"kind", "http_status", "message"} | null,
                "retried": {kind: count} (answers it was sent again after),
                "text", "prompt", "tokens": {"prompt", "output", "thoughts"}, "cost_usd",
                "cost_source" ("usage"|"table"|"mixed"|"cache"|"unknown": a model
                without a price), "tags", "model", "image_size",
                "pixels": [w, h] | null (the first image's real size),
                "expected_pixels": [w, h] | null (the catalogue's), "size_mismatch",
                "mode": "live"|"flex"|null (the last request's; null: never sent),
                "live_cost_usd" (what its requests would have cost live)}]
    }
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from batchgen.models import ErrorInfo, JobRecord
from batchgen.output.storage import LocalOutput, Output
from batchgen.report import gallery
from batchgen.store import Store

SCHEMA_VERSION = 1
REPORT_NAME = "report.json"
FAILED_NAME = "failed.jsonl"


def _tag_rollup(store: Store) -> dict[str, dict[str, Any]]:
    """Per-tag totals, sorted by tag."""
    tags = {
        t.tag: {
            "jobs": t.jobs,
            "done": t.done,
            "failed": t.failed,
            "blocked": t.blocked,
            "cost_usd": round(t.cost_usd, 6),
        }
        for t in store.tag_totals()
    }
    return dict(sorted(tags.items()))


def _spend(store: Store) -> dict[str, Any]:
    """Spend per model, and per model and output size, costliest first."""
    rows = store.spend()
    by_model: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = by_model.setdefault(r.model, {"jobs": 0, "cost_usd": 0.0, "unpriced": 0})
        entry["jobs"] += r.jobs
        entry["cost_usd"] = round(entry["cost_usd"] + r.cost_usd, 6)
        entry["unpriced"] += r.unpriced
    sized = [
        {"model": r.model, "size": r.size, "jobs": r.jobs, "done": r.done,
         "cost_usd": round(r.cost_usd, 6), "unpriced": r.unpriced}
        for r in rows
    ]  # fmt: skip
    return {"by_model": by_model, "by_model_size": sized}


def _modes(store: Store) -> dict[str, Any]:
    """Spend per run mode, beside what live would have cost: what flex saved."""
    return {
        m.mode: {"jobs": m.jobs, "cost_usd": round(m.cost_usd, 6),
                 "live_cost_usd": round(m.live_cost_usd, 6)}
        for m in store.mode_spend()
    }  # fmt: skip


def summarize(store: Store, output: Output | None = None) -> dict[str, Any]:
    """Totals for the top of the report (everything but the job rows); `output`:
    where OUT's files are, when not the store's folder (an object store)."""
    t = store.totals()
    return {
        "schema": SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "out": str(store.out) if output is None else output.where,
        "total": t.jobs,
        "done": t.done,
        "blocked": t.blocked,
        "failed": t.failed,
        "skipped": t.skipped,
        "pending": t.pending,
        "success_rate": round(t.done / t.finished, 4) if t.finished else 0.0,
        "requests": t.requests,
        "retries": t.retries,
        "errors": {e.name: e.jobs for e in t.errors},
        "retried": {r.name: r.jobs for r in t.retried},
        "tokens": {"prompt": t.prompt_tokens, "output": t.output_tokens},
        "cost_usd": round(t.cost_usd, 6),
        "cost_sources": {c.name: c.jobs for c in t.cost_sources},
        "elapsed_s": round(t.elapsed_s, 3),
        "images_per_minute": round(t.done * 60 / t.elapsed_s, 2) if t.elapsed_s > 0 else 0.0,
        "cache": {"hits": t.cache_hits, "saved_usd": round(t.saved_usd, 6)},
        "size_mismatches": t.size_mismatches,
        "spend": _spend(store),
        "by_mode": _modes(store),
        "by_tag": _tag_rollup(store),
    }


def _error(err: ErrorInfo | None) -> dict[str, Any] | None:
    return (
        None
        if err is None
        else {"kind": err.kind, "http_status": err.http_status, "message": err.message}
    )


def job_row(rec: JobRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "status": rec.status.value,
        "attempts": rec.attempts,
        "requests": rec.requests,
        "files": rec.files,
        "upscaled": rec.upscaled,
        "error": _error(rec.error),
        "retried": rec.retried,
        "text": rec.text,
        "prompt": rec.prompt,
        "tokens": {
            "prompt": rec.prompt_tokens,
            "output": rec.output_tokens,
            "thoughts": rec.thoughts_tokens,
        },
        "cost_usd": round(rec.cost_usd, 6),
        "cost_source": rec.cost_source,
        "tags": rec.tags,
        "source": rec.source,
        "line": rec.line,
        "model": rec.model,
        "image_size": rec.image_size,
        "pixels": _wh(rec.pixels),
        "expected_pixels": _wh(rec.expected_pixels),
        "size_mismatch": rec.size_mismatch,
        "mode": rec.mode,
        "live_cost_usd": round(rec.live_cost_usd, 6),
    }


def _wh(pixels: str | None) -> list[int] | None:
    """ "2048x2048" as [2048, 2048]."""
    return None if not pixels else [int(n) for n in pixels.split("x")]


@contextlib.contextmanager
def _json_report(output: Output, summary: dict[str, Any]) -> Iterator[Callable[[str], None]]:
    """`report.json`, streamed: the summary, then each job row (JSON text) as it is given."""
    with output.write_text(REPORT_NAME) as fh:
        head = json.dumps(summary, indent=2, ensure_ascii=False)
        fh.write(head[:-2] + ',\n  "jobs": [')
        first = True

        def add(row: str) -> None:
            nonlocal first
            fh.write(("\n    " if first else ",\n    ") + row)  # one call: a million rows
            first = False

        yield add
        fh.write("\n  ]\n}\n" if not first else "]\n}\n")


def write_failed(store: Store, path: Path | None = None, *, output: Output | None = None) -> int:
    """Failed, blocked and skipped jobs in the input format plus their error (a skipped
    one's names the parent that stopped it): fix and feed back. Written to `path`,
    else to `failed.jsonl` of `output` (default: the store's folder)."""
    n = 0
    if path is not None:
        output, name = LocalOutput(path.parent), path.name
    else:
        output, name = output or LocalOutput(store.out), FAILED_NAME
    with output.write_text(name) as fh:
        for failed in store.failed_jobs():
            job = {**failed.job, "status": failed.status.value, "error": _error(failed.error)}
            fh.write(json.dumps(job, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_reports(
    store: Store, *, thumb_budget_s: float | None = None, output: Output | None = None
) -> dict[str, Any]:
    """Rebuild every report file of the folder; returns the summary, and the
    number of size-preset files that were upscaled (``upscaled``). Previews are
    made as images land; `thumb_budget_s` caps making any missing ones here (an
    interrupted run must exit within seconds, the next report makes the rest).

    One pass over the jobs feeds both `report.json` and the gallery's data;
    SQLite builds each row's JSON text (`store/rows.py`), so a million jobs
    stream through as strings, never as Python objects per field. `output`: where
    OUT's files are, when not the store's folder (an object store, `storage`)."""
    summary = summarize(store, output)
    output = output or LocalOutput(store.out)
    with (
        _json_report(output, summary) as add_json,
        gallery.gallery_writer(
            store, summary, thumb_budget_s=thumb_budget_s, output=output
        ) as add_data,
    ):
        for row in store.report_rows():
            add_json(row.report)
            add_data(row)
    write_failed(store, output=output)
    return {**summary, "upscaled": store.upscaled_total()}


def tag_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["tag", "jobs", "done", "failed", "blocked", "cost_usd"])
    for tag, e in summary["by_tag"].items():
        w.writerow([tag, e["jobs"], e["done"], e["failed"], e["blocked"], f"{e['cost_usd']:.6f}"])
    return buf.getvalue()


def status_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['total']} jobs: {summary['done']} done, {summary['blocked']} blocked, "
        f"{summary['failed']} failed, {summary['skipped']} skipped, {summary['pending']} pending; "
        f"{summary['requests']} requests, ${summary['cost_usd']:.4f}"
    )
