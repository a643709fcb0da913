"""thumbs: generated images in, small JPEG previews under `OUT/thumbs/` out.

The gallery must stay light at 100,000 jobs, so it never points the browser at
the full images (a megabyte each) nor inlines base64: each image gets a
preview of at most `MAX_SIDE` pixels, written once and reused while it is
newer than its image. The layout mirrors the image's path, so the name is a
pure function of the image path and never needs a lookup:
`images/ab/x.png` -> `thumbs/images/ab/x.jpg`.

Decoding and resizing run in a thread pool: Pillow releases the GIL while it
works, so the threads really run in parallel while the caller keeps streaming
rows. Previews are written like every other file of the folder
(`batchgen.output.atomic`, not fsynced: a lost preview is remade; on an object
store one PUT through `storage`); the run start removes leftover temporaries.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from batchgen.output.atomic import write_bytes
from batchgen.output.storage import Output, as_output

log = logging.getLogger(__name__)

THUMBS_DIR = "thumbs"
MAX_SIDE = 256
QUALITY = 70
#: Extensions Pillow decodes that the sink may write; anything else gets no preview.
PREVIEWABLE = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
#: Formats every browser shows: such an image no larger than a preview is its own.
SHOWN_AS_IS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
#: ... and no heavier than a few previews (one is ~10 KB).
OWN_PREVIEW_BYTES = 48 * 1024


def thumb_rel(image_rel: str) -> str | None:
    """The preview's path relative to OUT for an image path relative to OUT, or
    None when the path is not a previewable image inside the folder (an absolute
    or `..` path from a tampered state file must not make us read or write
    outside it)."""
    rel = PurePosixPath(image_rel.split("#", 1)[0])
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    if rel.suffix.lower() not in PREVIEWABLE:
        return None
    return (PurePosixPath(THUMBS_DIR) / rel.with_suffix(".jpg")).as_posix()


def is_fresh(src: Path, dst: Path) -> bool:
    """A preview is reused while it is at least as new as its image."""
    try:
        return dst.stat().st_mtime_ns >= src.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def make_thumb(src: Path, dst: Path, *, max_side: int = MAX_SIDE, quality: int = QUALITY) -> bool:
    """Write a JPEG preview of `src` to `dst` unless a fresh one exists.

    Returns True when a preview was written. An unreadable or missing image is
    logged and skipped (the page shows a placeholder): one bad file must not
    cost the whole report.
    """
    if is_fresh(src, dst):
        return False
    encoded = encode_thumb(src, str(src), max_side=max_side, quality=quality)
    if encoded is None:
        return False
    try:
        write_bytes(dst, encoded)
    except OSError as exc:
        log.warning("could not write preview %s: %s", dst, exc)
        return False
    return True


def encode_thumb(
    src: Path | io.BytesIO, name: str, *, max_side: int = MAX_SIDE, quality: int = QUALITY
) -> bytes | None:
    """The JPEG preview of an image (a file, or bytes in memory); None when it
    cannot be read (logged: one bad file must not cost the whole report)."""
    try:
        with Image.open(src) as im:
            # JPEG sources decode at a reduced scale directly: far cheaper than resizing.
            im.draft("RGB", (max_side, max_side))
            # reducing_gap: a cheap integer box reduction first, then a bicubic pass.
            im.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
            rgb = _flatten(im)
        encoded = io.BytesIO()
        rgb.save(encoded, "JPEG", quality=quality)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("no preview for %s: %s", name, exc)
        return None
    return encoded.getvalue()


def put_thumb(output: Output, image_rel: str, rel: str, data: bytes | None = None) -> bool:
    """Make and store the preview `rel` of `image_rel` in an object store (the
    image's bytes when the caller holds them, else read back); True when stored."""
    try:
        source = output.read_bytes(image_rel) if data is None else data
        encoded = encode_thumb(io.BytesIO(source), image_rel)
        if encoded is None:
            return False
        output.write_bytes(rel, encoded)
    except OSError as exc:
        log.warning("could not make preview %s: %s", rel, exc)
        return False
    return True


def is_own_preview(suffix: str, size: tuple[int, int], nbytes: int) -> bool:
    """Whether an image (file suffix, pixel size, bytes) needs no separate preview:
    small in pixels and in bytes (a page shows 100 cards), in a format browsers show."""
    return max(size) <= MAX_SIDE and nbytes <= OWN_PREVIEW_BYTES and suffix.lower() in SHOWN_AS_IS


def preview(
    out: Path | Output, image_rel: str, size: tuple[int, int], nbytes: int, data: bytes = b""
) -> str | None:
    """The preview of an image just written (path relative to OUT), made now.

    An image no larger than a preview is its own preview (`is_own_preview`):
    re-encoding it would cost ~0.4 ms of CPU, mostly under the GIL, for a file
    no smaller. Returns None when no preview could be made; the report tries
    again then. `data`: the image's bytes, so an object store is not read back.
    """
    if is_own_preview(os.path.splitext(image_rel)[1], size, nbytes):
        return image_rel
    rel = thumb_rel(image_rel)
    if rel is None:
        return None
    if isinstance(out, Output):
        # From the bytes in hand, not the file: reading a 4K image back cost
        # a third of the writer threads' CPU (the copy out of the page cache).
        if out.root is None or data:
            return rel if put_thumb(out, image_rel, rel, data or None) else None
        out = out.root
    make_thumb(out / image_rel, out / rel)
    return rel if (out / rel).exists() else None


def _flatten(im: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite transparent images on white, not black."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return im.convert("RGB")


@dataclass(slots=True)
class ThumbStats:
    """How many previews this pass wrote, found fresh, could not make, or left
    for a later pass because the time budget ran out."""

    made: int = 0
    fresh: int = 0
    failed: int = 0
    deferred: int = 0


class ThumbMaker:
    """A bounded thread pool making previews while the caller streams rows.

    At most `window` tasks are queued at once, so memory stays flat however
    many jobs the folder holds; `submit` blocks on the oldest task when full.
    Use as a context manager; leaving it waits for the remaining tasks.

    A first preview costs ~40 ms of CPU for a 1024-px PNG (decoding dominates),
    so 100,000 new images are most of an hour on two cores. `budget_s` bounds
    that for callers that must finish quickly (an interrupted run): past it,
    images without a fresh preview are deferred (`submit` returns None) and the
    next report picks them up, since existing previews are never redone.
    """

    def __init__(
        self,
        out: Path | Output,
        *,
        workers: int | None = None,
        window: int = 256,
        budget_s: float | None = None,
    ) -> None:
        self.output = as_output(out)
        #: A folder's previews are files; an object store's are found by one listing.
        self.out = self.output.root
        self._stored: set[str] | None = None
        self.stats = ThumbStats()
        self._deadline = None if budget_s is None else time.monotonic() + budget_s
        self._pool = ThreadPoolExecutor(
            max_workers=workers or min(8, (os.cpu_count() or 1) + 1),
            thread_name_prefix="thumbs",
        )
        self._window = window
        self._pending: deque[tuple[str, Future[bool]]] = deque()

    def __enter__(self) -> ThumbMaker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, image_rel: str) -> str | None:
        """Schedule the preview of one image; returns its path relative to OUT
        (None when the image gets no preview at all)."""
        rel = thumb_rel(image_rel)
        if rel is None:
            return None
        image = image_rel.split("#", 1)[0]
        if self._is_fresh(image, rel):  # the common case on a re-run: no task at all
            self.stats.fresh += 1
            return rel
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.stats.deferred += 1
            return None
        while len(self._pending) >= self._window:
            self._collect()
        if self.out is not None:
            task = self._pool.submit(make_thumb, self.out / image, self.out / rel)
        else:
            task = self._pool.submit(put_thumb, self.output, image, rel)
        self._pending.append((rel, task))
        return rel

    def _is_fresh(self, image: str, rel: str) -> bool:
        if self.out is not None:
            return is_fresh(self.out / image, self.out / rel)
        if self._stored is None:  # one listing instead of a request per image
            self._stored = set(self.output.files(THUMBS_DIR))
        return rel in self._stored

    def _collect(self) -> None:
        rel, future = self._pending.popleft()
        if future.result():
            self.stats.made += 1
        elif self.out is not None and (self.out / rel).exists():
            self.stats.fresh += 1
        else:
            self.stats.failed += 1

    def close(self) -> None:
        try:
            while self._pending:
                self._collect()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def make_thumbs(
    out: Path | Output,
    image_rels: Iterable[str],
    *,
    workers: int | None = None,
    budget_s: float | None = None,
) -> ThumbStats:
    """Previews for every image in `image_rels` (paths relative to `out`)."""
    with ThumbMaker(out, workers=workers, budget_s=budget_s) as maker:
        for rel in image_rels:
            maker.submit(rel)
    return maker.stats
