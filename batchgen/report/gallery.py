"""gallery: the store and the report summary in, `OUT/report.html` out.

The page opens from disk with no server and no internet, and stays fast at
100,000 jobs. Three choices make that work:

- The job rows are not in the page. They stream from `Store.records()` into
  `OUT/report-data.js`, one compact array per job (`window.BATCHGEN_DATA`):
  a `<script src>` loads from `file://` where `fetch()` of a JSON file is
  refused. Nothing holds every row in Python memory.
- The browser renders one page of cards at a time (`PAGE` in gallery.js,
  100 cards); filters and search run over the plain arrays.
- Cards show small JPEG previews (`thumbs.py`), made once in a thread pool
  while the rows stream, never the full images nor base64 in the page.

The summary (counts, spend, tags, error kinds) is rendered here, in HTML, so
it reads even with JavaScript off; every value has a `data-testid` whose
text is the bare number, for tests and scrapers. User text (prompts, tags,
error messages, model text) is escaped here and set with `textContent` in
the browser: a prompt is data, never markup.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import re
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from batchgen.models import JobRecord, Status
from batchgen.output.atomic import TEMP_PREFIX, write_text
from batchgen.output.thumbs import ThumbMaker
from batchgen.store import Store

log = logging.getLogger(__name__)

PAGE_NAME = "report.html"
DATA_NAME = "report-data.js"
#: Cards show this much of a prompt, an error message or the model's text;
#: report.json keeps the full text.
TEXT_LIMIT = 300
#: Rows of the spend-by-tag table in the page; the full table is in report.json.
TAG_ROWS = 50

#: Column order of a row in report-data.js (the page reads it from `fields`).
FIELDS = (
    "id",
    "status",
    "prompt",
    "tags",
    "attempts",
    "cost",
    "kind",
    "http",
    "message",
    "text",
    "image",
    "thumb",
    "files",
    "retried",
    "pixels",
    "mismatch",
)

_STATUS_ORDER = (Status.DONE, Status.BLOCKED, Status.FAILED, Status.SKIPPED, Status.PENDING)


def write_gallery(
    store: Store,
    summary: dict[str, Any],
    *,
    thumb_budget_s: float | None = None,
    workers: int | None = None,
    records: Iterable[JobRecord] | None = None,
) -> Path:
    """Write `report-data.js`, the previews and `report.html`; return the page's path.

    The data file is replaced before the page so that a reader never sees a
    new page over old data with missing columns; both appear atomically.
    `thumb_budget_s` caps the time spent on new previews (see `ThumbMaker`);
    by default every image gets one. `records` are the rows (default: every
    job of the store), so a caller can write other files in the same pass.
    """
    out = store.out
    started = time.perf_counter()
    if not store.readonly:
        _clean_own_temporaries(out)
    with (
        write_text(out / DATA_NAME) as fh,
        ThumbMaker(out, workers=workers, budget_s=thumb_budget_s) as thumbs,
    ):
        rows = write_data(fh, store.records() if records is None else records, summary, thumbs)
    page = out / PAGE_NAME
    with write_text(page) as fh:
        fh.write(render_page(summary))
    log.info(
        "gallery: %d jobs, %d previews made, %d reused, %d failed, %d deferred, in %.1fs",
        rows,
        thumbs.stats.made,
        thumbs.stats.fresh,
        thumbs.stats.failed,
        thumbs.stats.deferred,
        time.perf_counter() - started,
    )
    return page


# -- the data file --------------------------------------------------------------


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _js(value: Any) -> str:
    """JSON is valid JavaScript; `<` is escaped so no `</script>` can ever close
    a tag, should the data one day be inlined into a page."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def data_row(rec: JobRecord, thumbs: ThumbMaker | None) -> list[Any]:
    """One job as the page needs it, in `FIELDS` order (compact: a list, not a dict)."""
    image = rec.files[0].split("#", 1)[0] if rec.files else None
    if image is not None and rec.preview == image:
        thumb: str | None = image  # small enough to be its own preview
    else:
        thumb = thumbs.submit(image) if thumbs is not None and image else None
    err = rec.error
    return [
        rec.id,
        rec.status.value,
        _clip(rec.prompt),
        rec.tags,
        rec.attempts,
        round(rec.cost_usd, 6),
        err.kind if err else None,
        err.http_status if err else None,
        _clip(err.message) if err else None,
        _clip(rec.text),
        image,
        thumb,
        [f + "#upscaled" if f in rec.upscaled else f for f in rec.files[1:]],
        rec.retried,
        rec.pixels,
        # The size the request should have given, only where the image is not it.
        rec.expected_pixels if rec.size_mismatch else None,
    ]


def write_data(
    fh: TextIO,
    records: Iterable[JobRecord],
    summary: dict[str, Any],
    thumbs: ThumbMaker | None = None,
) -> int:
    """Stream `window.BATCHGEN_DATA = {...}` to `fh`; returns the number of rows."""
    tags = sorted(
        ((tag, entry["jobs"]) for tag, entry in summary.get("by_tag", {}).items()),
        key=lambda item: (-item[1], item[0]),
    )
    kinds = sorted(summary.get("errors", {}).items(), key=lambda item: (-item[1], item[0]))
    retried = sorted(summary.get("retried", {}).items(), key=lambda item: (-item[1], item[0]))
    fh.write("window.BATCHGEN_DATA = {")
    fh.write(f'"schema":1,"generated_at":{_js(summary.get("generated_at", ""))},')
    fh.write(f'"fields":{_js(FIELDS)},"tags":{_js(tags)},"kinds":{_js(kinds)},')
    fh.write(f'"retried":{_js(retried)},\n"rows":[\n')
    n = 0
    for rec in records:
        if n:
            fh.write(",\n")
        fh.write(_js(data_row(rec, thumbs)))
        n += 1
    fh.write("\n]};\n")
    return n


# -- the page -------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("batchgen.report") / "assets" / name).read_text(encoding="utf-8")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s"


def _money(value: float) -> str:
    """Cents for big sums, four places for typical ones, six for fractions of a cent."""
    if value >= 100:
        return f"{value:.2f}"
    return f"{value:.4f}" if value >= 0.01 or value == 0 else f"{value:.6f}"


def _stat(
    label: str, testid: str, value: str, *, cls: str = "", unit: str = "", pre: str = ""
) -> str:
    dot = '<span class="dot"></span>' if cls else ""
    if cls and value == "0":
        cls += " zero"
    before = f'<span class="unit">{_e(pre)}</span>' if pre else ""
    after = f' <span class="unit">{_e(unit)}</span>' if unit else ""
    return (
        f'<div class="stat {cls}"><div class="label">{dot}{_e(label)}</div>'
        f'<div class="value">{before}<span data-testid="{testid}" id="{testid}">{_e(value)}</span>'
        f"{after}</div></div>"
    )


def render_summary(summary: dict[str, Any]) -> str:
    """The top of the page: stat cards, a status bar, spend by tag, error kinds."""
    total = int(summary.get("total", 0))
    parts = ['<section class="summary" aria-label="Summary">', '<div class="stats">']
    parts.append(_stat("Total jobs", "count-total", str(total)))
    for status in _STATUS_ORDER:
        parts.append(
            _stat(status.value, f"count-{status.value}", str(summary.get(status.value, 0)),
                  cls=f"s-{status.value}")
        )  # fmt: skip
    rate = float(summary.get("success_rate", 0.0)) * 100
    parts += [
        _stat("Success rate", "success-rate", f"{rate:.1f}", unit="%"),
        _stat("Requests", "count-requests", str(summary.get("requests", 0))),
        _stat("Retries", "count-retries", str(summary.get("retries", 0))),
        _stat("Elapsed", "elapsed", _duration(float(summary.get("elapsed_s", 0.0)))),
        _stat("Images / min", "images-per-minute", f"{summary.get('images_per_minute', 0.0):g}"),
        _stat("Spend", "count-cost", _money(float(summary.get("cost_usd", 0.0))), pre="$"),
        _stat(
            "Size mismatches",
            "size-mismatches",
            str(summary.get("size_mismatches", 0)),
            cls="s-failed" if summary.get("size_mismatches") else "",
        ),
        "</div>",
    ]
    if total:
        parts.append('<div class="bar" role="img" aria-label="Jobs by status">')
        for status in _STATUS_ORDER:
            n = int(summary.get(status.value, 0))
            if n:
                parts.append(
                    f'<span class="s-{status.value}" style="width:{n * 100 / total:.3f}%" '
                    f'title="{n} {status.value}"></span>'
                )
        parts.append("</div>")
    parts.append('<div class="tables">')
    parts.append(
        _model_table(summary.get("spend", {}).get("by_model_size", []), summary.get("by_mode", {}))
    )
    parts.append(_tag_table(summary.get("by_tag", {})))
    parts.append(_error_table(summary.get("errors", {})))
    parts.append(_retried_table(summary.get("retried", {})))
    parts.append("</div></section>")
    return "\n".join(parts)


def _tag_table(by_tag: dict[str, dict[str, Any]]) -> str:
    rows = sorted(by_tag.items(), key=lambda item: (-item[1]["cost_usd"], item[0]))
    out = ['<div class="panel"><h2>Spend by tag</h2>']
    if not rows:
        out.append('<p class="note">No tags in these jobs.</p></div>')
        return "".join(out)
    out.append(
        '<div class="scroll"><table data-testid="by-tag"><thead><tr><th>Tag</th><th>Jobs</th>'
        "<th>Done</th><th>Failed</th><th>Blocked</th><th>Spend</th></tr></thead><tbody>"
    )
    for tag, e in rows[:TAG_ROWS]:
        out.append(
            f'<tr><td><button type="button" class="linkish" data-set-tag="{_e(tag)}">{_e(tag)}'
            f"</button></td><td>{e['jobs']}</td><td>{e['done']}</td><td>{e['failed']}</td>"
            f"<td>{e['blocked']}</td><td>${_money(float(e['cost_usd']))}</td></tr>"
        )
    out.append("</tbody></table></div>")
    if len(rows) > TAG_ROWS:
        out.append(
            f'<p class="note">The {TAG_ROWS} costliest of {len(rows)} tags; '
            "report.json and <code>batchgen report --by tag</code> list them all.</p>"
        )
    out.append("</div>")
    return "".join(out)


def _model_table(rows: list[dict[str, Any]], by_mode: dict[str, dict[str, Any]]) -> str:
    """Spend per model and output size; a model without a price shows "unknown".
    Under it, spend per run mode, with what live would have cost (flex saves half)."""
    out = ['<div class="panel"><h2>Spend by model and size</h2>']
    if not rows:
        out.append('<p class="note">No requests yet.</p></div>')
        return "".join(out)
    out.append(
        '<div class="scroll"><table data-testid="by-model"><thead><tr><th>Model</th>'
        "<th>Size</th><th>Jobs</th><th>Done</th><th>Spend</th></tr></thead><tbody>"
    )
    for r in rows:
        spend = f"${_money(float(r['cost_usd']))}"
        if r.get("unpriced"):
            spend += f" + {r['unpriced']} unknown"
        out.append(
            f"<tr><td>{_e(r['model'])}</td><td>{_e(r['size'] or '-')}</td><td>{r['jobs']}</td>"
            f"<td>{r['done']}</td><td>{_e(spend)}</td></tr>"
        )
    out.append("</tbody></table></div>")
    modes = [
        f"{_e(m)}: {e['jobs']} jobs, ${_money(float(e['cost_usd']))} "
        f"(live: ${_money(float(e['live_cost_usd']))})"
        for m, e in by_mode.items()
    ]
    if modes:
        out.append(f'<p class="note" data-testid="by-mode">By mode: {"; ".join(modes)}</p>')
    out.append("</div>")
    return "".join(out)


def _error_table(errors: dict[str, int]) -> str:
    out = ['<div class="panel"><h2>Error kinds</h2>']
    if not errors:
        out.append('<p class="note">No errors.</p></div>')
        return "".join(out)
    out.append(
        '<div class="scroll"><table data-testid="errors"><thead><tr><th>Kind</th><th>Jobs</th>'
        "</tr></thead><tbody>"
    )
    for kind, n in sorted(errors.items(), key=lambda item: (-item[1], item[0])):
        out.append(
            f'<tr><td><button type="button" class="linkish" data-set-kind="{_e(kind)}">'
            f'{_e(kind)}</button></td><td data-testid="error-{_e(kind)}">{n}</td></tr>'
        )
    out.append("</tbody></table></div></div>")
    return "".join(out)


def _retried_table(retried: dict[str, int]) -> str:
    """Answers that were retried, by kind: the 429s and 503s behind a clean run,
    which the final error kinds alone would hide."""
    out = ['<div class="panel"><h2>Retried answers</h2>']
    if not retried:
        out.append('<p class="note">No answer was retried.</p></div>')
        return "".join(out)
    out.append(
        '<div class="scroll"><table data-testid="retried"><thead><tr><th>Kind</th>'
        "<th>Answers</th></tr></thead><tbody>"
    )
    for kind, n in sorted(retried.items(), key=lambda item: (-item[1], item[0])):
        out.append(
            f'<tr><td><button type="button" class="linkish" data-set-retried="{_e(kind)}">'
            f'{_e(kind)}</button></td><td data-testid="retried-{_e(kind)}">{n}</td></tr>'
        )
    out.append("</tbody></table></div></div>")
    return "".join(out)


_SLOT = re.compile(r"@(TITLE|SUBTITLE|SUMMARY|FOOTER|DATA|CSS|JS)@")


def render_page(summary: dict[str, Any]) -> str:
    """The whole page: the template with the summary, the CSS and the JS inlined.

    Slots are filled in one pass so text put into one slot (a tag named
    `@JS@`, say) is never expanded again.
    """
    out = str(summary.get("out", ""))
    generated = str(summary.get("generated_at", ""))
    slots = {
        "TITLE": _e(f"batchgen report — {Path(out).name or out}"),
        "SUBTITLE": f"{_e(out)} &middot; generated {_e(generated)}",
        "SUMMARY": render_summary(summary),
        "FOOTER": (
            f"Data: {DATA_NAME} &middot; full rows: report.json &middot; failed, blocked "
            "and skipped jobs to fix and re-run: failed.jsonl"
        ),
        "DATA": DATA_NAME,
        "CSS": _asset("gallery.css"),
        "JS": _asset("gallery.js"),
    }
    return _SLOT.sub(lambda m: slots[m.group(1)], _asset("gallery.html"))


# -- files ----------------------------------------------------------------------


def _clean_own_temporaries(out: Path) -> None:
    """Temporaries of the page or data file that a killed run left in OUT.
    Safe: a writable store holds the folder's lock, so no other writer is live."""
    for name in (PAGE_NAME, DATA_NAME):
        for leftover in out.glob(f"{TEMP_PREFIX}*-{name}"):
            with contextlib.suppress(OSError):
                leftover.unlink()
