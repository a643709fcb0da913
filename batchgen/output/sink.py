"""sink: generated image bytes in, files under `OUT/images/` out.

Every file is written to a temporary name in its final folder and renamed
into place (`os.replace` is atomic on one filesystem), so a crash leaves
either the whole file or nothing under a final name. Leftover temporaries of a
killed run start with `.part-` and are removed at the next start.

Layout: `images/<id>.<ext>` for folders planned below `SHARD_THRESHOLD` jobs;
above it `images/<xy>/<id>.<ext>` with `xy` the first two hex digits of the
id's SHA-1: 256 folders keep a million images at ~4,000 per folder, which file
browsers, `ls` and sync tools handle well. The layout is decided once per
output folder (kept in the state) so an id's path never moves, and every path
is recorded per job in the report.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import secrets
from pathlib import Path

from batchgen.errors import AbortError
from batchgen.models import GeneratedImage, StopKind
from batchgen.output.mime import extension_for

SHARD_THRESHOLD = 10_000
TEMP_PREFIX = ".part-"


class DiskFullError(AbortError):
    """Raised when the disk is full: the run stops, nothing is marked done."""

    kind = StopKind.DISK


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means no space is left (the disk, or the user's quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def image_dir(out: Path, job_id: str, *, sharded: bool) -> Path:
    base = out / "images"
    if sharded:
        return base / hashlib.sha1(job_id.encode()).hexdigest()[:2]
    return base


#: Temporary names only need to be unique within this process: the state lock
#: keeps other runs out of the folder (a counter costs no syscall, unlike urandom).
_temp_ids = itertools.count()
_temp_tag = secrets.token_hex(2)


#: Plain `os.open`: the built-in `open` adds an fstat, an ioctl and an lseek per file.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file."""
    tmp = path.parent / f"{TEMP_PREFIX}{_temp_tag}{next(_temp_ids):x}-{path.name}"
    try:
        try:
            fd = os.open(tmp, _CREATE, 0o666)
        except FileNotFoundError:
            # The folder is created on first use only: a mkdir per image was a
            # syscall, an exception and a stat for every job.
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, _CREATE, 0o666)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(exc):
            raise DiskFullError(
                f"disk full while writing {path}; free some space and run the same "
                "command again (finished images are kept)"
            ) from exc
        raise


def write_images(
    out: Path, job_id: str, images: tuple[GeneratedImage, ...], *, sharded: bool
) -> list[str]:
    """Write a job's images; return their paths relative to `out`.
    Extra images of one answer become `<id>-2.<ext>`, `<id>-3.<ext>`, …"""
    folder = image_dir(out, job_id, sharded=sharded)
    prefix = folder.relative_to(out).as_posix()
    paths: list[str] = []
    for n, image in enumerate(images, start=1):
        suffix = "" if n == 1 else f"-{n}"
        name = f"{job_id}{suffix}.{extension_for(image.mime_type)}"
        write_atomic(folder / name, image.data)
        paths.append(f"{prefix}/{name}")
    return paths


def write_sizes(
    out: Path, job_id: str, data: bytes, sizes: tuple[str, ...]
) -> list[tuple[str, bool]]:
    """Local platform resizes of the first image, `sizes/<name>/<id>.<ext>`.
    Returns (path relative to `out`, upscaled?) for each."""
    from batchgen.output.sizes import parse_size, resize

    written: list[tuple[str, bool]] = []
    for spec_text in sizes:
        spec = parse_size(spec_text)
        resized, mime, upscaled = resize(data, spec)
        path = out / "sizes" / spec.name / f"{job_id}.{extension_for(mime)}"
        write_atomic(path, resized)
        rel = path.relative_to(out).as_posix()
        written.append((rel, upscaled))
    return written


def clean_temporaries(out: Path) -> int:
    """Remove `.part-` files a killed run left behind; returns how many.
    The report files (report.json, failed.jsonl, the gallery) are written the
    same way, directly in `out`."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(out):
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    for top in ("images", "sizes", "thumbs"):
        root = out / top
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
    return removed
