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
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from batchgen.jobs.inputs import JobSource
from batchgen.models import Job, Status
from batchgen.output.storage import Output
from batchgen.store import Store
from batchgen.store.jobs import Known


@dataclass
class Plan:
    """What a run will do, counted as the planner goes (nothing is held per job)."""

    total: int = 0
    new: int = 0
    changed: int = 0
    done: int = 0
    retry: int = 0
    #: Done (or ended) jobs a reviewer rejected, made again (`--redo rejected`).
    redo: int = 0
    pending: int = 0
    final_kept: dict[str, int] = field(default_factory=dict)
    expected_cost: float = 0.0

    @property
    def to_run(self) -> int:
        return self.new + self.changed + self.retry + self.redo + self.pending


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


def parent_digest(out: Path | Output, store: Store, ref: str) -> str | None:
    """The digest of a parent job's first output, or None when it is not done."""
    known = store.lookup(ref[1:])
    if known is None or known.status is not Status.DONE or not known.files:
        return None
    if isinstance(out, Output):
        if out.root is None:  # an object store: its bytes, read back
            return hashlib.sha256(out.read_bytes(known.files[0])).hexdigest()
        out = out.root
    return file_digest(str(out / known.files[0]), store)


def job_fingerprint(job: Job, model: str, out: Path | Output, store: Store) -> str | None:
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


#: Jobs read ahead and looked up together (`Store.prefetch`): one round trip
#: per this many on a server backend; a bounded amount of memory either way.
PREFETCH = 1000

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
    redo: Mapping[str, str] | None = None,
    output: Output | None = None,
) -> Plan:
    """Decide each job's fate and (unless `write` is False, for a dry run) record
    it in the store. Jobs already done with the same fingerprint are not touched,
    unless `redo` has them (rejected by a reviewer: id -> the reviewer's note).
    No store (a dry run in a folder that has none yet): every job is new."""
    result = Plan()
    if store is None:
        for job in jobs:
            result.total += 1
            result.new += 1
            if expected_cost is not None:
                result.expected_cost += expected_cost(job)
        return result
    planning = _Planning(
        store,
        result,
        default_model=default_model,
        retry=(retry_failed, retry_blocked),
        write=write,
        expected_cost=expected_cost,
        redo=redo or {},
        out=output or store.out,
    )
    with store.transaction() if write else contextlib.nullcontext():
        for chunk in _chunks(jobs, PREFETCH):
            store.prefetch(job.id for job in chunk)
            for job in chunk:
                planning.add(job)
        planning.finish()
    return result


def _chunks(jobs: Iterable[Job], size: int) -> Iterator[tuple[Job, ...]]:
    it = iter(jobs)
    while chunk := tuple(itertools.islice(it, size)):
        yield chunk


def _parents(job: Job) -> Iterator[str]:
    return (ref[1:] for ref in job.images if ref.startswith("@"))


class _Planning:
    """One planning pass over a store.

    A skipped job (a chained job whose parent ended blocked, failed or
    skipped) is not final like a failed one: it was never sent, and it runs
    again whenever a parent runs again (retried, changed or still pending),
    even when its own row is unchanged. Whether a parent runs is known only
    once the pass has met it, and a child may come before its parent in the
    files, so such children are held (`deferred`, only skipped rows: few) and
    decided when the pass ends, down whole chains of skipped jobs.
    """

    def __init__(
        self,
        store: Store,
        result: Plan,
        *,
        default_model: str,
        retry: tuple[bool, bool],
        write: bool,
        expected_cost: Callable[[Job], float] | None,
        redo: Mapping[str, str],
        out: Path | Output,
    ) -> None:
        self.store = store
        #: Where a done parent's image is read from (chained jobs' fingerprints).
        self.out = out
        self.redo = redo
        self.result = result
        self.default_model = default_model
        self.retry_failed, self.retry_blocked = retry
        self.write = write
        self.expected_cost = expected_cost
        #: Parents of the folder's skipped jobs, and those of them this run runs.
        self.watched = store.skipped_parents()
        self.running: set[str] = set()
        self.deferred: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        self.result.total += 1
        fp = job_fingerprint(job, job.model or self.default_model, self.out, self.store)
        known = self.store.lookup(job.id)
        if job.id in self.redo and known is not None and fp == known.fingerprint:
            self._redo(job, fp, known)
            return
        reset = self._decide(job, fp, known)
        if reset is not None:
            self._run(job, fp, reset=reset)

    def _redo(self, job: Job, fp: str, known: Known) -> None:
        """A rejected image made again: the job starts afresh with the reviewer's
        note in its prompt (`redo_note`); its files are to move to history. A
        redo a stopped run left pending runs on, with its note."""
        note = self.redo[job.id]
        if job.redo_note and note.strip():
            job = replace(job, prompt=f"{job.prompt}\n\n{job.redo_note.replace('{note}', note)}")
        if known.status is Status.PENDING:
            self.result.pending += 1
            self._run(job, fp, reset=False)
            return
        self.result.redo += 1
        self._run(job, fp, reset=True)
        if self.write:
            self.store.plan_redo(job.id, known.files)

    def _decide(self, job: Job, fp: str | None, known: Known | None) -> bool | None:
        """Whether the job runs afresh (True), runs on as it was (False, pending),
        or not at all (None: done, kept final, or a skipped job held for `finish`)."""
        result = self.result
        if known is None:
            result.new += 1
            return True
        status = known.status
        if fp is None and status is Status.SKIPPED:
            self.deferred[job.id] = job
            return None
        if fp is None or known.fingerprint != fp:
            if status is Status.PENDING and fp is None:
                result.pending += 1
                return False
            result.changed += 1
            return True
        if status is Status.DONE:
            result.done += 1
            return None
        if status is Status.PENDING:
            result.pending += 1
            return False
        if (status is Status.FAILED and not self.retry_failed) or (
            status is Status.BLOCKED and not self.retry_blocked
        ):
            self._keep(status)
            return None
        result.retry += 1
        return True

    def _keep(self, status: Status) -> None:
        kept = self.result.final_kept
        kept[status.value] = kept.get(status.value, 0) + 1

    def _run(self, job: Job, fp: str | None, *, reset: bool) -> None:
        if self.expected_cost is not None:
            self.result.expected_cost += self.expected_cost(job)
        if self.write:
            self.store.plan(job, fp or "", reset=reset)
        if job.id in self.watched:
            self.running.add(job.id)

    def finish(self) -> None:
        """Run again each held skipped job one of whose parents runs (and so on down
        its chain: a child run again is a parent that runs); keep the others."""
        children: dict[str, list[str]] = {}
        for job_id, job in self.deferred.items():
            for parent in _parents(job):
                children.setdefault(parent, []).append(job_id)
        ready = [parent for parent in children if parent in self.running]
        while ready:
            for job_id in children.pop(ready.pop(), []):
                if job_id in self.deferred:
                    self.result.retry += 1
                    self._run(self.deferred.pop(job_id), None, reset=True)
                    ready.append(job_id)
        for _ in self.deferred:
            self._keep(Status.SKIPPED)
