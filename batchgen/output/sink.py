"""sink: generated image bytes in, files under `OUT/images/` out.

Every file is written through `batchgen.output.storage` (for a folder,
`batchgen.output.atomic`: a temporary name in its final folder, renamed into
place; for an object store, one whole PUT), so a crash of the process leaves either the
whole file or nothing under a final name (images are not fsynced: a power
loss is a different promise, see `atomic`). Leftover temporaries of a killed
run start with `.part-` and are removed at the next start.

Layout: `images/<id>.<ext>` for folders planned below `SHARD_THRESHOLD` jobs;
above it `images/<xy>/<id>.<ext>` with `xy` the first two hex digits of the
id's SHA-1: 256 folders keep a million images at ~4,000 per folder, which file
browsers, `ls` and sync tools handle well. The layout is decided once per
output folder (kept in the state) so an id's path never moves, and every path
is recorded per job in the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from batchgen.models import GeneratedImage
from batchgen.output.atomic import TEMP_PREFIX
from batchgen.output.mime import extension_for
from batchgen.output.storage import DiskFullError, LocalOutput, Output, as_output, is_disk_full

__all__ = [
    "SHARD_THRESHOLD",
    "TEMP_PREFIX",
    "DiskFullError",
    "clean_temporaries",
    "image_dir",
    "image_paths",
    "is_disk_full",
    "write_atomic",
    "write_images",
    "write_sizes",
]

SHARD_THRESHOLD = 10_000


def image_prefix(job_id: str, *, sharded: bool) -> str:
    """The folder of a job's images, relative to OUT: `images` or `images/<xy>`."""
    if sharded:
        return "images/" + hashlib.sha1(job_id.encode()).hexdigest()[:2]
    return "images"


def image_dir(out: Path, job_id: str, *, sharded: bool) -> Path:
    return out / image_prefix(job_id, sharded=sharded)


def write_atomic(path: Path, data: bytes) -> None:
    """Write one file of a local folder (`atomic.write_bytes`: whole or absent after
    a crash, not fsynced, see there); a full disk becomes `DiskFullError`."""
    LocalOutput(path.parent).write_bytes(path.name, data)


def image_paths(job_id: str, images: tuple[GeneratedImage, ...], *, sharded: bool) -> list[str]:
    """Where a job's images go, relative to OUT. Extra images of one answer
    become `<id>-2.<ext>`, `<id>-3.<ext>`, …"""
    prefix = image_prefix(job_id, sharded=sharded)
    return [
        f"{prefix}/{job_id}{'' if n == 1 else f'-{n}'}.{extension_for(image.mime_type)}"
        for n, image in enumerate(images, start=1)
    ]


def write_images(
    out: Path | Output, job_id: str, images: tuple[GeneratedImage, ...], *, sharded: bool
) -> list[str]:
    """Write a job's images (through `storage`); return their paths relative to `out`."""
    output = as_output(out)
    paths = image_paths(job_id, images, sharded=sharded)
    for rel, image in zip(paths, images, strict=True):
        output.write_bytes(rel, image.data)
    return paths


def write_sizes(
    out: Path | Output, job_id: str, data: bytes, sizes: tuple[str, ...]
) -> list[tuple[str, bool]]:
    """Local platform resizes of the first image, `sizes/<name>/<id>.<ext>`.
    Returns (path relative to `out`, upscaled?) for each."""
    from batchgen.output.sizes import parse_size, resize_all

    output = as_output(out)
    specs = [parse_size(spec_text) for spec_text in sizes]
    written: list[tuple[str, bool]] = []
    for spec, (resized, mime, upscaled) in zip(specs, resize_all(data, specs), strict=True):
        rel = f"sizes/{spec.name}/{job_id}.{extension_for(mime)}"
        output.write_bytes(rel, resized)
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
