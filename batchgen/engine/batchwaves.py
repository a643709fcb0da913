"""batchwaves: pending jobs in, the next wave's batches (recorded) and their input files out.

A *wave* is what one round submits: the pending jobs no open batch holds,
cut into batches of ``--batch-size`` jobs per model, each input file kept
under `MAX_INPUT_BYTES`. A chained job joins a wave once its parents are
done (`chains.gate`; a parent that ended otherwise skips it); a job whose
identical request is answered already is finished from the answer cache,
and a second identical job waits for the next wave, where the cache serves
it. `--budget` reserves each job's worst case before it joins.

`build_input` streams a recorded batch's jobs from the store into its JSONL
file, one line per job, ``{"key": id, "request": <the live request body>}``
(`output.client.build_request`, the one home of the body), a reference image
used by more than one job of the batch uploaded once and named by
``fileData`` instead of inlined in every line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.engine.budget import Budget
from batchgen.engine.cache import request_key_of
from batchgen.engine.chains import RunNow, Skip, gate
from batchgen.engine.planner import file_digest, fingerprint
from batchgen.engine.pricing import PriceTable
from batchgen.models import Job
from batchgen.output import client
from batchgen.output.mime import sniff_mime
from batchgen.store import Store

#: An input file is at most 2 GB; estimates keep each batch under this.
MAX_INPUT_BYTES = 1_900_000_000
#: Batches pending or running at once, at most (the API's limit is 100).
MAX_OPEN_BATCHES = 100
#: An uploaded reference is used again while younger than this (files live 48 h).
UPLOAD_REUSE_S = 40 * 3600.0
#: Per-line overhead of the JSON around a job's prompt, and base64's growth.
_LINE_OVERHEAD = 600
_B64 = 1.37


def batch_name(folder: str, wave: int, number: int) -> str:
    """The deterministic display name a resumed run finds its batch by."""
    return f"batchgen-{folder}-w{wave}-b{number}"


@dataclass
class Draft:
    """One batch of a wave being formed."""

    model: str
    members: list[tuple[str, str, str]] = field(default_factory=list)
    estimate: int = 0
    reserved: float = 0.0


@dataclass
class WaveOutcome:
    """What forming a wave did besides its drafts."""

    drafts: list[Draft] = field(default_factory=list)
    #: Jobs finished from the answer cache, skipped, and held for a later wave.
    cached: int = 0
    skipped: int = 0
    held: int = 0
    #: The budget refused a job's worst case.
    refused: bool = False


class WaveForm:
    """Forms a wave of at most `open_room` batches from the store's unbatched jobs.

    `finish_cached(job, key)` finishes a job from an earlier answer (True) or
    says there is none; `skip(job, error)` ends a job skipped."""

    def __init__(
        self,
        store: Store,
        *,
        default_model: str,
        batch_size: int,
        prices: PriceTable,
        budget: Budget,
        finish_cached: Callable[[Job, str], Awaitable[bool]],
        skip: Callable[[Job, Skip], None],
    ) -> None:
        self.store = store
        self.default_model = default_model
        self.batch_size = batch_size
        self.prices = prices
        self.budget = budget
        self.finish_cached = finish_cached
        self.skip = skip

    async def form(self, run_id: int, open_room: int, limit: int | None) -> WaveOutcome:
        result = WaveOutcome()
        current: dict[str, Draft] = {}
        keys: set[str] = set()
        taken = 0
        for job in self.store.unbatched(run_id):
            if limit is not None and taken >= limit:
                break
            if job.chained:
                verdict = gate(job, self.store.lookup)
                if isinstance(verdict, Skip):
                    self.skip(job, verdict)
                    result.skipped += 1
                    continue
                if not isinstance(verdict, RunNow):
                    result.held += 1
                    continue
            model = job.model or self.default_model
            where = [self._locate(ref) for ref in job.images]
            digests = await asyncio.to_thread(_digests, where)
            key = request_key_of(job, model, digests)
            if await self.finish_cached(job, key):
                result.cached += 1
                continue
            if key in keys:
                result.held += 1  # the same request is in this wave: the cache serves it next
                continue
            worst = self.prices.worst_case(model, job.prompt, len(job.images), job.image_size)
            if not self.budget.reserve(worst):
                self.budget.refused = max(self.budget.refused, worst)
                result.refused = True
                break
            draft = self._draft(current, model, job, result, open_room)
            if draft is None:
                self.budget.settle(worst, 0.0)
                break
            draft.members.append((job.id, self._fingerprint(job, model, digests), key))
            draft.reserved += worst
            keys.add(key)
            taken += 1
        return result

    def _draft(
        self, current: dict[str, Draft], model: str, job: Job, result: WaveOutcome, room: int
    ) -> Draft | None:
        """The batch `job` joins: its model's current one, or a new one (None: no room)."""
        size = _LINE_OVERHEAD + len(job.prompt.encode()) + int(_B64 * self._ref_bytes(job))
        draft = current.get(model)
        full = draft is not None and (
            len(draft.members) >= self.batch_size or draft.estimate + size > MAX_INPUT_BYTES
        )
        if draft is None or full:
            if len(result.drafts) >= room:
                return None
            draft = current[model] = Draft(model)
            result.drafts.append(draft)
        draft.estimate += size
        return draft

    def _ref_bytes(self, job: Job) -> int:
        total = 0
        for ref in job.images:
            path = self._locate(ref)
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def _locate(self, ref: str) -> Path:
        if not ref.startswith("@"):
            return Path(ref)
        known = self.store.lookup(ref[1:])
        files = known.files if known is not None else ()
        return self.store.out / files[0] if files else Path(ref)

    def _fingerprint(self, job: Job, model: str, digests: list[str]) -> str:
        """The job's fingerprint; a chained job's made final from its parents' bytes."""
        known = self.store.lookup(job.id)
        if not job.chained:
            return known.fingerprint if known is not None else ""
        final = fingerprint(job, model, digests)
        with self.store.transaction():
            self.store.set_fingerprint(job.id, final)
        return final


def _digests(paths: list[Path]) -> list[str]:
    """The references' SHA-256 digests (run off the loop: it reads every byte)."""
    return [file_digest(str(path), None) for path in paths]


Uploader = Callable[[Path, str], Awaitable[tuple[str, str]]]


async def build_input(store: Store, name: str, path: Path, upload_ref: Uploader) -> int:
    """Write batch `name`'s input JSONL to `path` (atomically), streaming its jobs
    from the store; a reference used by more than one of them is uploaded once
    (`upload_ref(path, mime)` -> ``(uri, mime)``). Returns the lines written."""
    uses: Counter[str] = Counter()
    for job in store.member_jobs(name):
        uses.update(str(_where(store, ref)) for ref in set(job.images))
    shared: dict[str, tuple[str, str]] = {}
    for ref, count in uses.items():
        if count > 1:
            shared[ref] = await _shared(store, Path(ref), upload_ref)
    part = path.with_name(path.name + ".part")
    lines = 0
    with part.open("wb") as sink:
        for job in store.member_jobs(name):
            where = [str(_where(store, ref)) for ref in job.images]
            body = await asyncio.to_thread(_request_body, job, where, shared)
            sink.write(json.dumps({"key": job.id, "request": body}).encode() + b"\n")
            lines += 1
    part.replace(path)
    return lines


def _where(store: Store, ref: str) -> Path:
    if not ref.startswith("@"):
        return Path(ref)
    known = store.lookup(ref[1:])
    return store.out / known.files[0] if known is not None and known.files else Path(ref)


async def _shared(store: Store, path: Path, upload_ref: Uploader) -> tuple[str, str]:
    data = await asyncio.to_thread(path.read_bytes)
    digest = hashlib.sha256(data).hexdigest()
    known = store.uploaded(digest, time.time() - UPLOAD_REUSE_S)
    if known is not None:
        return known
    mime = sniff_mime(data[:16]) or "image/png"
    uri, mime = await upload_ref(path, mime)
    with store.transaction():
        store.remember_upload(digest, uri.rpartition("/")[2], uri, mime)
    return uri, mime


def _request_body(job: Job, paths: list[str], shared: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """The live body of `job` (built by the live builder; `paths` are where its
    references are), each shared reference as ``fileData`` in its place."""
    refs: list[tuple[str, bytes]] = []
    swaps: dict[int, dict[str, Any]] = {}
    for i, where in enumerate(paths):
        if where in shared:
            uri, mime = shared[where]
            swaps[i + 1] = {"fileData": {"fileUri": uri, "mimeType": mime}}
            refs.append((mime, b""))
        else:
            data = Path(where).read_bytes()
            refs.append((sniff_mime(data[:16]) or "image/png", data))
    body = client.build_request(job, refs)
    parts = body["contents"][0]["parts"]
    for index, part in swaps.items():
        parts[index] = part
    return body


__all__ = ["MAX_OPEN_BATCHES", "Draft", "WaveForm", "batch_name", "build_input"]
