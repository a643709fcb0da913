"""gallery_data: the job rows in, the gallery's data files out.

`OUT/report-data.js` is what the page loads (`window.BATCHGEN_DATA`): the
filters' choices, the first chunk of rows, and — for more jobs than one
chunk — where the other chunks are and a **filter index**. The page never
holds a million rows: it loads a chunk file when a page of cards needs it.

- Chunks: rows in file order, `CHUNK_ROWS` per file, each
  `report-data/<generation>/<k>.js` calling `BATCHGEN_CHUNK(k, [rows])`: a
  `<script src>` loads from `file://`, where `fetch()` of a file is refused.
  A report writes a new generation folder and then replaces `report-data.js`,
  so a page never mixes one report's head with another's chunks; older
  generations are removed after.
- The index: per chunk, how many of its rows have each status, tag (the
  `TAG_CHOICES` most common, which the tag filter offers), error kind and
  retried kind. A page of a filtered view loads only chunks that hold
  matches, and the count of a one-filter view is exact without loading any.
- Sorted views ("Highest cost", "Most attempts"): for more than one chunk,
  the `TOP_ROWS` first rows of each order, written as their own files.

Rows come as JSON text from `Store.report_rows()` (SQLite builds them); a
row's preview, when the image is not its own, and its reference images are
added here. `data_row` builds the same row from a `JobRecord` (for callers
holding records, and as the reference a test holds the SQL to).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from batchgen.models import JobRecord
from batchgen.output.storage import Output, as_output
from batchgen.output.thumbs import ThumbMaker
from batchgen.report.search_index import SearchIndex
from batchgen.store.rows import TEXT_LIMIT, ReportRow

__all__ = [
    "CHUNK_ROWS",
    "DATA_DIR",
    "DATA_NAME",
    "FIELDS",
    "TEXT_LIMIT",
    "ChunkWriter",
    "data_row",
    "write_data",
]

DATA_NAME = "report-data.js"
#: Folder of the chunk files, one generation per report.
DATA_DIR = "report-data"
#: Rows per chunk file (~1 MB of JavaScript at typical prompts).
CHUNK_ROWS = 5_000
#: Rows of each sorted view when there is more than one chunk.
TOP_ROWS = 5_000
#: Tags the tag filter offers (most jobs first) and the index counts.
TAG_CHOICES = 500
#: The search's trigram index, `report-data/<generation>/search.js` (`search_index.py`).
SEARCH_NAME = "search"

#: Column order of a row in the data (the page reads it from `fields`).
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
    "refs",
)
_THUMB = FIELDS.index("thumb")


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _js(value: Any) -> str:
    """JSON is valid JavaScript; `<` is escaped so no `</script>` can ever close
    a tag, should the data one day be inlined into a page."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


class Refs:
    """A job's reference images as links relative to OUT: a file elsewhere by a
    relative path (works offline while the two folders keep their places), a
    chained job's input by that job's first image. An OUT on an object store
    (`out` None) links no local file: the page is not beside them."""

    def __init__(
        self, out: Path | None, first_file: Callable[[str], str | None] | None = None
    ) -> None:
        self.out = None if out is None else os.path.abspath(out)
        self.first_file = first_file
        self._seen: dict[str, str | None] = {}

    def links(self, refs: Iterable[str]) -> list[str]:
        found = []
        for ref in refs:
            link = self._seen.get(ref, "")
            if link == "":
                link = self._link(ref)
                if len(self._seen) > 10_000:  # bounded: refs may all differ
                    self._seen.clear()
                self._seen[ref] = link
            if link is not None:
                found.append(link)
        return found

    def _link(self, ref: str) -> str | None:
        if ref.startswith("@"):
            return self.first_file(ref[1:]) if self.first_file else None
        if self.out is None:
            return None
        return Path(os.path.relpath(ref, self.out)).as_posix()


def data_row(rec: JobRecord, thumbs: ThumbMaker | None, refs: Refs | None = None) -> list[Any]:
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
        refs.links(rec.images) if refs is not None else list(rec.images),
    ]


def _tag_choices(summary: dict[str, Any]) -> list[tuple[str, int]]:
    """The tags the filter offers: the most common first, at most `TAG_CHOICES`."""
    return sorted(
        ((tag, entry["jobs"]) for tag, entry in summary.get("by_tag", {}).items()),
        key=lambda item: (-item[1], item[0]),
    )[:TAG_CHOICES]


def _head(summary: dict[str, Any]) -> str:
    """`window.BATCHGEN_DATA = {` and the filters' choices, up to the rows."""
    tags = _tag_choices(summary)
    kinds = sorted(summary.get("errors", {}).items(), key=lambda item: (-item[1], item[0]))
    retried = sorted(summary.get("retried", {}).items(), key=lambda item: (-item[1], item[0]))
    return (
        "window.BATCHGEN_DATA = {"
        f'"schema":1,"generated_at":{_js(summary.get("generated_at", ""))},'
        f'"fields":{_js(FIELDS)},"tags":{_js(tags)},"kinds":{_js(kinds)},'
        f'"retried":{_js(retried)},\n"rows":[\n'
    )


def write_data(
    fh: TextIO,
    records: Iterable[JobRecord],
    summary: dict[str, Any],
    thumbs: ThumbMaker | None = None,
    refs: Refs | None = None,
) -> int:
    """Stream every row of `records` into one `window.BATCHGEN_DATA = {...}` (no
    chunks: for callers holding records); returns the number of rows."""
    fh.write(_head(summary))
    n = 0
    for rec in records:
        if n:
            fh.write(",\n")
        fh.write(_js(data_row(rec, thumbs, refs)))
        n += 1
    fh.write(f'\n],"total":{n},"chunks":1}};\n')
    return n


class ChunkWriter:
    """Streams `ReportRow`s into `report-data.js` (the first chunk, then the index)
    and the chunk files of a new generation folder. Use `add` per row, then
    `finish` once (or `abort`)."""

    def __init__(
        self,
        out: Path | Output,
        head: TextIO,
        summary: dict[str, Any],
        *,
        thumbs: ThumbMaker | None,
        refs: Refs,
        chunk_rows: int = CHUNK_ROWS,
    ) -> None:
        self.output = as_output(out)
        self.generation = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        #: This report's chunk folder, relative to OUT.
        self.folder = f"{DATA_DIR}/{self.generation}"
        self._head = head
        self._thumbs = thumbs
        self._refs = refs
        self._chunk_rows = chunk_rows
        self._choices = {tag for tag, _ in _tag_choices(summary)}
        self._fh: TextIO = head
        self._file: contextlib.ExitStack | None = None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._combos: Counter[tuple[str, str | None, str, str]] = Counter()
        self._texts: list[str] = []
        self._search = SearchIndex()
        self._index: dict[tuple[str, str], list[int]] = {}
        self.rows = 0
        head.write(_head(summary))

    def row_text(self, row: ReportRow) -> str:
        """The row's gallery JSON with its preview and reference images."""
        text = row.data
        if row.needs_thumb and self._thumbs is not None and row.image:
            thumb = self._thumbs.submit(row.image)
            if thumb is not None:
                fields = json.loads(text)
                fields[_THUMB] = thumb
                text = _js(fields)
        links = "[]" if row.refs is None else _js(self._refs.links(json.loads(row.refs)))
        return f"{text[:-1]},{links}]"

    def add(self, row: ReportRow) -> None:
        k, at = divmod(self.rows, self._chunk_rows)
        if at == 0 and k:
            self._next_chunk(k)
        self._fh.write(",\n" + self.row_text(row) if at else self.row_text(row))
        self.rows += 1
        # One count per row by what the index needs of it; tags and retried kinds
        # are parsed per distinct value at the chunk's end, not per row.
        self._combos[row.status, row.error_kind, row.tags, row.retried] += 1
        self._texts.append(row.search)

    def _count(self) -> None:
        """The chunk's rows by status, error kind, tag and retried kind."""
        counts = self._counts
        for (status, kind, tags, retried), n in self._combos.items():
            counts["status", status] += n
            if kind:
                counts["kind", kind] += n
            if tags != "[]":
                for tag in set(json.loads(tags)):
                    if tag in self._choices:
                        counts["tag", tag] += n
            if retried != "{}":
                counts["retried", "*"] += n
                for rk in json.loads(retried):
                    counts["retried", rk] += n
        self._combos.clear()

    def _next_chunk(self, k: int) -> None:
        """Close chunk k-1 (its counts into the index) and open chunk k's file."""
        self._close_chunk(k - 1)
        self._file = contextlib.ExitStack()
        self._fh = self._file.enter_context(self.output.write_text(f"{self.folder}/{k}.js"))
        self._fh.write(f"BATCHGEN_CHUNK({k},[\n")

    def _close_chunk(self, k: int) -> None:
        self._count()
        self._search.add_chunk(k, self._texts)
        self._texts.clear()
        if k == 0:
            self._head.write("\n]")
        else:
            self._fh.write("\n]);\n")
            assert self._file is not None
            self._file.close()
            self._file = None
        for key, n in self._counts.items():
            counts = self._index.setdefault(key, [])
            counts.extend([0] * (k - len(counts)))  # chunks without this value
            counts.append(n)
        self._counts.clear()

    def finish(self, top: Mapping[str, Iterable[ReportRow]]) -> None:
        """Close the last chunk and write the index; `top` (for more than one
        chunk) are the rows of each sorted view, written as their own files."""
        chunks = max(1, -(-self.rows // self._chunk_rows))
        if self.rows:
            self._close_chunk(chunks - 1)
        else:
            self._head.write("\n]")
        index: dict[str, dict[str, list[int]]] = {}
        for (dim, value), counts in self._index.items():
            index.setdefault(dim, {})[value] = counts + [0] * (chunks - len(counts))
        tops = {}
        if chunks > 1:
            for name, rows in top.items():
                with self.output.write_text(f"{self.folder}/top-{name}.js") as fh:
                    fh.write(f"BATCHGEN_CHUNK({_js(name)},[\n")
                    fh.write(",\n".join(self.row_text(r) for r in rows))
                    fh.write("\n]);\n")
                tops[name] = f"top-{name}"
            with self.output.write_text(f"{self.folder}/{SEARCH_NAME}.js") as fh:
                self._search.write(fh, SEARCH_NAME)
        search = f',"search":{_js(SEARCH_NAME)}' if chunks > 1 else ""
        self._head.write(
            f',"total":{self.rows},"chunk":{self._chunk_rows},"chunks":{chunks},'
            f'"dir":{_js(f"{DATA_DIR}/{self.generation}")},"index":{_js(index)},'
            f'"top":{_js(tops)}{search}}};\n'
        )

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.output.root is not None:
            shutil.rmtree(self.output.root / self.folder, ignore_errors=True)
            return
        with contextlib.suppress(OSError):
            for rel in list(self.output.files(self.folder)):
                self.output.delete(rel)


def remove_old_generations(out: Path | Output, keep: str, started: float) -> None:
    """Chunk folders of earlier reports (not `keep`, older than this report's
    start, so that a report running beside this one keeps its own)."""
    if isinstance(out, Output):
        if out.root is None:
            _remove_old_objects(out, keep, started)
            return
        out = out.root
    with contextlib.suppress(OSError):
        for folder in (out / DATA_DIR).iterdir():
            with contextlib.suppress(OSError):
                if folder.name != keep and folder.stat().st_mtime < started:
                    shutil.rmtree(folder, ignore_errors=True)


def _remove_old_objects(output: Output, keep: str, started: float) -> None:
    """`remove_old_generations` on an object store: a generation's age is in its
    name (its report's start), so one listing finds them, no request per file."""
    cutoff = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
    with contextlib.suppress(OSError):
        for rel in list(output.files(DATA_DIR)):
            generation = rel.split("/")[1] if rel.count("/") >= 2 else keep
            if generation != keep and generation.split("-", 1)[0] < cutoff:
                output.delete(rel)
