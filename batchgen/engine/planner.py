"""planner: validated jobs in, this run's work (pending rows in the store) out.

A job is identified by its id plus a fingerprint of everything that shapes its
request: model, prompt, aspect ratio, variant and the bytes of its reference
images. Reference files are hashed once and remembered by (path, size, mtime),
so resuming a million-job folder does not reread every photo. A chained job's
fingerprint includes its parents' output bytes, so it is only final once the
parents are done; until then it is planned as pending.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchgen.jobs.inputs import JobSource
from batchgen.models import Job, Status
from batchgen.store import Store


@dataclass
class Plan:
    """What a run will do, counted as the planner goes (nothing is held per job)."""

    total: int = 0
    new: int = 0
    changed: int = 0
    done: int = 0
    retry: int = 0
    pending: int = 0
    final_kept: dict[str, int] = field(default_factory=dict)
    expected_cost: float = 0.0

    @property
    def to_run(self) -> int:
        return self.new + self.changed + self.retry + self.pending


def fingerprint(job: Job, model: str, image_digests: Iterable[str]) -> str:
    """Stable across runs and machines: paths are not part of it, only bytes."""
    payload = {
        "model": model,
        "prompt": job.prompt,
        "aspect_ratio": job.aspect_ratio,
        "variant": job.variant,
        "images": list(image_digests),
    }
    if job.image_size:  # absent: the requests (and keys) made before sizes existed
        payload["image_size"] = job.image_size
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def file_digest(path: str, store: Store | None) -> str:
    st = os.stat(path)
    if store is not None:
        cached = store.cached_hash(path, st.st_size, st.st_mtime_ns)
        if cached is not None:
            return cached
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if store is not None:
        store.remember_hash(path, st.st_size, st.st_mtime_ns, digest)
    return digest


def parent_digest(out: Path, store: Store, ref: str) -> str | None:
    """The digest of a parent job's first output, or None when it is not done."""
    known = store.lookup(ref[1:])
    if known is None or known.status is not Status.DONE or not known.files:
        return None
    return file_digest(str(out / known.files[0]), store)


def job_fingerprint(job: Job, model: str, out: Path, store: Store) -> str | None:
    """None when a parent is not done yet (the fingerprint cannot be known)."""
    digests: list[str] = []
    for ref in job.images:
        if ref.startswith("@"):
            d = parent_digest(out, store, ref)
            if d is None:
                return None
            digests.append(d)
        else:
            digests.append(file_digest(ref, store))
    return fingerprint(job, model, digests)


def sources_digest(sources: Iterable[JobSource], model: str) -> str:
    """`inputs_digest` of the sources' files, or "" when they have none: a
    recipe or records (their bytes do not decide their jobs), or a lazy stream
    of sources (looking would consume it)."""
    if not isinstance(sources, Sequence):
        return ""
    paths = [s.path for s in sources if s.identified_by_bytes and s.path is not None]
    if len(paths) != len(sources):
        return ""
    with contextlib.suppress(OSError):  # an unreadable file is the reader's to report
        return inputs_digest(paths, model)
    return ""


def inputs_digest(paths: Iterable[Path], model: str) -> str:
    """The bytes of every job file and the default model: when they and every
    reference file are as they were at the end of a run that left nothing
    pending, planning again would find nothing to do (see `settled`)."""
    h = hashlib.sha256(f"v1\0{model}".encode())
    for path in paths:
        h.update(f"\0{path.resolve()}\0".encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def references_unchanged(store: Store) -> bool:
    """Every reference file hashed so far still has the size and mtime it had."""
    for path, size, mtime_ns in store.hashed_files():
        try:
            st = os.stat(path)
        except OSError:
            return False
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return False
    return True


def settled(store: Store, digest: str) -> bool:
    """True when this folder already finished these exact inputs: nothing pending,
    same job-file bytes and model, no reference file touched since."""
    return (
        store.meta(SETTLED_INPUTS) == digest
        and store.counts()[Status.PENDING.value] == 0
        and references_unchanged(store)
    )


#: Meta key: the `inputs_digest` of the last run that left nothing pending.
SETTLED_INPUTS = "settled_inputs"


def plan(
    jobs: Iterable[Job],
    store: Store | None,
    *,
    default_model: str,
    retry_failed: bool = False,
    retry_blocked: bool = False,
    write: bool = True,
    expected_cost: Callable[[Job], float] | None = None,
) -> Plan:
    """Decide each job's fate and (unless `write` is False, for a dry run) record
    it in the store. Jobs already done with the same fingerprint are not touched.
    No store (a dry run in a folder that has none yet): every job is new."""
    result = Plan()
    if store is None:
        for job in jobs:
            result.total += 1
            result.new += 1
            if expected_cost is not None:
                result.expected_cost += expected_cost(job)
        return result
    out = store.out
    with store.transaction() if write else contextlib.nullcontext():
        for job in jobs:
            result.total += 1
            model = job.model or default_model
            fp = job_fingerprint(job, model, out, store)
            known = store.lookup(job.id)
            reset = True
            if known is None:
                result.new += 1
            elif fp is not None and known.fingerprint == fp:
                if known.status is Status.DONE:
                    result.done += 1
                    continue
                if known.status is Status.FAILED and not retry_failed:
                    result.final_kept["failed"] = result.final_kept.get("failed", 0) + 1
                    continue
                if known.status is Status.BLOCKED and not retry_blocked:
                    result.final_kept["blocked"] = result.final_kept.get("blocked", 0) + 1
                    continue
                if known.status is Status.PENDING:
                    result.pending += 1
                    reset = False
                else:
                    result.retry += 1
            elif fp is None and known.status is Status.PENDING:
                result.pending += 1
                reset = False
            else:
                result.changed += 1
            if expected_cost is not None:
                result.expected_cost += expected_cost(job)
            if write:
                store.plan(job, fp or "", reset=reset)
    return result
