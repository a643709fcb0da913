"""export: the store's chosen jobs in, their images and a manifest out, for a catalogue upload.

`batchgen export OUT --approved --to DIR|FILE.zip [--sizes amazon,shopify]`:
the images of the jobs a reviewer approved (`--all-done`: of every done job),
each with the platform sizes asked for, and ``manifest.csv``, one row per file::

    id, tags (";"-joined), size ("original" or the size's name), file (relative to
    the export's root, as under OUT), width, height, bytes, sha256

Two passes over the store. The first checks that every chosen job has every
file asked for on disk: a missing size (the job never asked for it, or the file
was deleted) is an `ExportError` naming the jobs, and nothing is written. The
second copies, hashing as it copies (each file read once, in chunks: no image
is ever whole in memory), and streams the manifest.

A DIR export is re-runnable: each file lands by `output/atomic.py` (whole or
absent), leftover temporaries of a killed export are removed first, the
manifest is placed last (it is the mark of a whole export), and files the
previous manifest named that are no longer chosen (a rejected image) are
removed; no other file of DIR is touched. A zip is written to a temporary name
and renamed into place when whole; its entries are stored (images do not
compress) with each job's end time, so the same folder exports the same bytes.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batchgen.errors import EXIT_USAGE, BatchgenError
from batchgen.models import JobRecord, Status
from batchgen.output.atomic import TEMP_PREFIX, write_stream, write_text
from batchgen.output.storage import Output, StoredFile
from batchgen.store import Store
from batchgen.store.reviews import Decision

__all__ = ["COLUMNS", "MANIFEST", "ExportError", "Exported", "export"]

MANIFEST = "manifest.csv"
COLUMNS = ("id", "tags", "size", "file", "width", "height", "bytes", "sha256")
ORIGINAL = "original"
#: Jobs named in an error message; the rest are counted.
SHOWN = 20
_CHUNK = 1 << 20


class ExportError(BatchgenError):
    """The export cannot be made as asked; nothing was written."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class Item:
    """One file to export: whose it is, which size, where it is under OUT."""

    job: JobRecord
    size: str
    rel: str


@dataclass(frozen=True, slots=True)
class Exported:
    jobs: int
    files: int
    bytes: int
    removed: int = 0


class _Tally:
    """Jobs, files and bytes exported; a job's files come one after another."""

    def __init__(self) -> None:
        self.jobs = self.files = self.bytes = 0
        self._last = ""

    def add(self, item: Item, n: int) -> None:
        if item.job.id != self._last:
            self.jobs, self._last = self.jobs + 1, item.job.id
        self.files, self.bytes = self.files + 1, self.bytes + n


def export(
    store: Store,
    to: Path,
    *,
    approved: bool,
    sizes: Sequence[str] = (),
    output: Output | None = None,
) -> Exported:
    """Export the chosen jobs (`approved`, else every done job) to DIR or FILE.zip.
    `output`: where OUT's files are, when not the store's folder (an object store)."""
    out: Path | Output = store.out if output is None or output.root is not None else output

    def chosen() -> Iterator[JobRecord]:
        return _approved(store) if approved else store.records([Status.DONE])

    _check(chosen(), out, sizes)
    items = (item for rec in chosen() for item in _items(rec, sizes))
    if to.suffix.lower() == ".zip":
        return _to_zip(items, out, to)
    return _to_dir(items, out, to)


def _approved(store: Store) -> Iterator[JobRecord]:
    """The approved jobs' records, in file order: the standing decisions
    (`store/reviews.py`: on each job's current image) merged with the records,
    both in file order, so no set of ids is held in memory."""
    records = store.records()
    for review in store.reviews(decision=Decision.APPROVED):
        for rec in records:
            if rec.id == review.job_id:
                yield rec
                break


def _items(rec: JobRecord, sizes: Sequence[str]) -> Iterator[Item]:
    for rel in rec.files:
        if not rel.startswith("sizes/"):
            yield Item(rec, ORIGINAL, rel)
    for size in sizes:
        rel = next((f for f in rec.files if f.startswith(f"sizes/{size}/")), "")
        yield Item(rec, size, rel)


def _source(out: Path | Output, rel: str) -> Path | StoredFile:
    return out / rel if isinstance(out, Path) else StoredFile(out, rel)


def _check(records: Iterable[JobRecord], out: Path | Output, sizes: Sequence[str]) -> None:
    """Every chosen job has every file asked for, or `ExportError` naming the jobs."""
    problems: list[str] = []
    count = 0
    for rec in records:
        if rec.status is not Status.DONE:
            why = f"{rec.id}: approved, but {rec.status.value} (no image to export)"
        elif not rec.files:
            why = f"{rec.id}: no image on record"
        else:
            missing = [i for i in _items(rec, sizes) if not i.rel or not _exists(out, i.rel)]
            if not missing:
                continue
            what = ", ".join(i.size if not i.rel else f"{i.size} ({i.rel})" for i in missing)
            why = f"{rec.id}: missing {what}"
        count += 1
        if len(problems) < SHOWN:
            problems.append(why)
    if count:
        more = f"\n… and {count - SHOWN} more" if count > SHOWN else ""
        raise ExportError(
            f"{count} chosen job{'s' if count > 1 else ''} lack{'' if count > 1 else 's'} "
            "a file asked for; nothing was exported:\n"
            + "\n".join(problems)
            + more
            + "\n(a size is made when the job asks for it in its sizes column)"
        )


def _exists(out: Path | Output, rel: str) -> bool:
    return (out / rel).is_file() if isinstance(out, Path) else out.exists(rel)


def _copy(src: Path | StoredFile, dst: IO[bytes]) -> tuple[str, int]:
    """Copy in chunks, hashing as it goes: (sha256, bytes)."""
    digest = hashlib.sha256()
    n = 0
    with src.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            n += len(chunk)
    return digest.hexdigest(), n


def _pixels(path: Path | StoredFile) -> tuple[int, int] | tuple[str, str]:
    from PIL import Image, UnidentifiedImageError

    try:
        with path.open("rb") as fh, Image.open(fh) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return "", ""


def _row(item: Item, src: Path | StoredFile, sha: str, n: int) -> list[Any]:
    return [item.job.id, ";".join(item.job.tags), item.size, item.rel, *_pixels(src), n, sha]


def _to_dir(items: Iterable[Item], out: Path | Output, to: Path) -> Exported:
    to.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(to)
    manifest = to / MANIFEST
    before = _listed(manifest)
    now: set[str] = set()
    tally = _Tally()
    with write_text(manifest) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for item in items:
            src, dst = _source(out, item.rel), to / item.rel
            with write_stream(dst) as copy:
                sha, n = _copy(src, copy)
            writer.writerow(_row(item, src, sha, n))
            tally.add(item, n)
            if before:
                now.add(item.rel)
    removed = 0
    for rel in before - now:
        try:
            (to / rel).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return Exported(tally.jobs, tally.files, tally.bytes, removed)


def _listed(manifest: Path) -> set[str]:
    """The files an earlier export's manifest names (safe relative paths only)."""
    try:
        with open(manifest, encoding="utf-8", newline="") as fh:
            rows = csv.DictReader(fh)
            named = {row.get("file") or "" for row in rows}
    except FileNotFoundError:
        return set()
    return {rel for rel in named if rel and not rel.startswith("/") and ".." not in rel.split("/")}


def _remove_temporaries(to: Path) -> None:
    """`.part-` files an export killed mid-copy left behind."""
    for dirpath, _dirs, names in os.walk(to):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                Path(dirpath, name).unlink(missing_ok=True)


def _to_zip(items: Iterable[Item], out: Path | Output, to: Path) -> Exported:
    tally = _Tally()
    to.parent.mkdir(parents=True, exist_ok=True)
    with (
        write_stream(to) as fh,
        zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
        tempfile.TemporaryFile("w+", encoding="utf-8", newline="", dir=to.parent) as rows,
    ):
        writer = csv.writer(rows, lineterminator="\n")
        writer.writerow(COLUMNS)
        for item in items:
            src = _source(out, item.rel)
            with zf.open(_entry(item.rel, item.job.finished_at), "w", force_zip64=True) as dst:
                sha, n = _copy(src, dst)
            writer.writerow(_row(item, src, sha, n))
            tally.add(item, n)
        rows.seek(0)
        with zf.open(_entry(MANIFEST, None), "w", force_zip64=True) as dst:
            while chunk := rows.read(_CHUNK):
                dst.write(chunk.encode("utf-8"))
    return Exported(tally.jobs, tally.files, tally.bytes)


def _entry(name: str, when: float | None) -> zipfile.ZipInfo:
    """A stored entry dated by the job's end (fixed: the same folder, the same bytes)."""
    stamp = dt.datetime.fromtimestamp(when or 315532800, dt.UTC)
    info = zipfile.ZipInfo(name, date_time=stamp.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info
