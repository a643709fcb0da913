"""local: a gallery on an object store in, a copy that opens from disk out.

`batchgen report OUT --local DIR`: a browser cannot open `report.html` from a
bucket the way it opens a file, so the page, its data (the head and the
current generation's chunks), and every preview the page shows are copied to
DIR under the same relative paths. The full images stay in the store (a
million of them would not fit a laptop, and the gallery never loads them:
cards show previews). Each file lands whole (`storage`), so copying again
into the same DIR refreshes it.
"""

from __future__ import annotations

from pathlib import Path

from batchgen.output.storage import LocalOutput, Output
from batchgen.output.thumbs import THUMBS_DIR, thumb_rel
from batchgen.report.gallery import DATA_NAME, PAGE_NAME
from batchgen.report.gallery_data import DATA_DIR
from batchgen.store import Store


def gallery_files(store: Store, output: Output) -> list[str]:
    """The files the page of `output` reads, relative to OUT: the page, its data
    head, the chunk files, and each job's preview (or its image, where the image
    is its own preview)."""
    head = output.read_bytes(DATA_NAME).decode("utf-8")
    files = [PAGE_NAME, DATA_NAME]
    files += [rel for rel in output.files(DATA_DIR) if _generation(rel) in head]
    stored = set(output.files(THUMBS_DIR))
    for rec in store.records():
        image = rec.files[0].split("#", 1)[0] if rec.files else None
        if image is None:
            continue
        if rec.preview == image:
            files.append(image)
            continue
        rel = thumb_rel(image)
        if rel is not None and rel in stored:
            files.append(rel)
    return files


def _generation(rel: str) -> str:
    """`report-data/<generation>/3.js` -> `report-data/<generation>` (the head names it)."""
    return "/".join(rel.split("/")[:2])


def copy_gallery(store: Store, output: Output, dest: Path) -> int:
    """Copy the gallery of `output` to the folder `dest`; how many files."""
    local = LocalOutput(dest)
    files = gallery_files(store, output)
    for rel in files:
        local.write_bytes(rel, output.read_bytes(rel))
    return len(files)
