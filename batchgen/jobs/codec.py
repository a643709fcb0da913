"""codec: a `Job` to and from JSON, in the input format and in the stored form.

Two forms, one mapping. The input form (`job_to_dict`) is a JSONL row that
the reader accepts again, which is what `failed.jsonl` and the Python API's
inline records need. The stored form (`job_to_json`) adds where the job came
from (`source`, `line`) so that a job read back from the state names its file
and line without the job file. Both live here rather than in the store
because the API writes the input form without touching the state, and the
reader's format is the one both forms must follow.
"""

from __future__ import annotations

import json
from typing import Any

from batchgen.models import Job

#: Keys of the stored form that the input form does not have.
ORIGIN_KEYS = ("source", "line")


def job_to_dict(job: Job) -> dict[str, Any]:
    """The job in the input format (what `failed.jsonl` feeds back): defaults are
    left out so a fixed row stays as short as the one the user wrote."""
    d: dict[str, Any] = {"id": job.id, "prompt": job.prompt}
    if job.images:
        d["images"] = list(job.images)
    if job.aspect_ratio:
        d["aspect_ratio"] = job.aspect_ratio
    if job.tags:
        d["tags"] = list(job.tags)
    if job.priority:
        d["priority"] = job.priority
    if job.model:
        d["model"] = job.model
    if job.variant is not None:
        d["variant"] = job.variant
    if job.sizes:
        d["sizes"] = list(job.sizes)
    if job.image_size:
        d["image_size"] = job.image_size
    if job.redo_note:
        d["redo_note"] = job.redo_note
    return d


def job_to_json(job: Job) -> str:
    """The stored form: the input form plus its origin, compact (a million of
    these are written while planning and read while running)."""
    d = job_to_dict(job)
    d["source"] = job.source
    d["line"] = job.line
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


def job_from_json(text: str, source: str = "", line: int = 0) -> Job:
    """A `Job` from either form; `source` and `line` are the origin when the
    text does not carry one (the input form)."""
    d = json.loads(text)
    return Job(
        id=d["id"],
        prompt=d["prompt"],
        images=tuple(d.get("images", ())),
        aspect_ratio=d.get("aspect_ratio"),
        tags=tuple(d.get("tags", ())),
        priority=int(d.get("priority", 0)),
        model=d.get("model"),
        variant=d.get("variant"),
        sizes=tuple(d.get("sizes", ())),
        image_size=d.get("image_size"),
        redo_note=d.get("redo_note"),
        source=d.get("source", source),
        line=int(d.get("line", line)),
    )


def input_form(stored: str) -> dict[str, Any]:
    """A stored job as a row of the input format: its origin dropped, the rest
    (and its key order) as stored."""
    d: dict[str, Any] = json.loads(stored)
    for key in ORIGIN_KEYS:
        d.pop(key, None)
    return d
