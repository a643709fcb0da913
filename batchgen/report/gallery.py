"""gallery: the store and the report summary in, `OUT/report.html` out.

The page opens from disk with no server and no internet, and stays fast at
a million jobs. Three choices make that work:

- The job rows are not in the page. They stream from `Store.report_rows()`
  into `OUT/report-data.js` and chunk files beside it, one compact array per
  job (`gallery_data.py`), with an index of each chunk's statuses, tags and
  error kinds. Nothing holds every row in Python memory.
- The browser renders one page of cards at a time (`PAGE` in gallery.js,
  100 cards) and loads only the chunks that page needs; filters run over the
  index first and over loaded chunks after.
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
import logging
import re
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from batchgen.models import Status
from batchgen.output.atomic import TEMP_PREFIX
from batchgen.output.storage import LocalOutput, Output
from batchgen.output.thumbs import ThumbMaker
from batchgen.report.gallery_data import (
    CHUNK_ROWS,
    DATA_NAME,
    FIELDS,
    TEXT_LIMIT,
    TOP_ROWS,
    ChunkWriter,
    Refs,
    data_row,
    remove_old_generations,
    write_data,
)
from batchgen.store import Store
from batchgen.store.rows import ReportRow

#: Re-exported: the data's names, for callers that knew them here.
__all__ = [
    "DATA_NAME",
    "FIELDS",
    "PAGE_NAME",
    "TEXT_LIMIT",
    "data_row",
    "gallery_writer",
    "render_page",
    "write_data",
    "write_gallery",
]

log = logging.getLogger(__name__)

PAGE_NAME = "report.html"
#: Rows of the spend-by-tag table in the page; the full table is in report.json.
TAG_ROWS = 50

_STATUS_ORDER = (Status.DONE, Status.BLOCKED, Status.FAILED, Status.SKIPPED, Status.PENDING)


@contextlib.contextmanager
def gallery_writer(
    store: Store,
    summary: dict[str, Any],
    *,
    thumb_budget_s: float | None = None,
    workers: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
    output: Output | None = None,
) -> Iterator[Callable[[ReportRow], None]]:
    """Yield `add(row)` for every `Store.report_rows()` row in file order; on a
    clean exit, write the sorted views, the index, and `report.html`.

    The data head is replaced before the page, so that a reader never sees a
    new page over old data; both appear atomically, and the chunk files of
    this report before the head that names them. `thumb_budget_s` caps the time
    spent on new previews (see `ThumbMaker`); by default every image gets one.
    `output`: where OUT's files are, when not the store's folder (`storage`).
    """
    out = output or LocalOutput(store.out)
    started = time.time()
    clock = time.perf_counter()
    if not store.readonly and out.root is not None:
        _clean_own_temporaries(out.root)
    refs = Refs(out.root, store.first_file)
    with (
        out.write_text(DATA_NAME) as fh,
        ThumbMaker(out, workers=workers, budget_s=thumb_budget_s) as thumbs,
    ):
        data = ChunkWriter(out, fh, summary, thumbs=thumbs, refs=refs, chunk_rows=chunk_rows)
        try:
            yield data.add
            tops = {o: store.report_rows(o, TOP_ROWS) for o in ("cost", "attempts")}
            data.finish(tops)
        except BaseException:
            data.abort()
            raise
    remove_old_generations(out, data.generation, started)
    with out.write_text(PAGE_NAME) as page:
        page.write(render_page(summary))
    log.info(
        "gallery: %d jobs, %d previews made, %d reused, %d failed, %d deferred, in %.1fs",
        data.rows,
        thumbs.stats.made,
        thumbs.stats.fresh,
        thumbs.stats.failed,
        thumbs.stats.deferred,
        time.perf_counter() - clock,
    )


def write_gallery(
    store: Store,
    summary: dict[str, Any],
    *,
    thumb_budget_s: float | None = None,
    workers: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Path:
    """Write the gallery's data, the previews and `report.html`; return the page's path."""
    with gallery_writer(
        store, summary, thumb_budget_s=thumb_budget_s, workers=workers, chunk_rows=chunk_rows
    ) as add:
        for row in store.report_rows():
            add(row)
    return store.out / PAGE_NAME


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
