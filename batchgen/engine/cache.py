"""cache: identical requests are paid for once.

Two levels, both keyed by `request_key` (model, whitespace-normalised prompt,
aspect ratio, variant, and the bytes of the reference images):

* within an output folder, a table of the store maps a key to the files of
  the job that first got an answer; jobs in flight with the same key wait for
  it rather than sending a second request (`Coalescer`);
* across folders and colleagues, `SharedCache` (``--cache DIR``) is
  content-addressed: ``DIR/blobs/ab/<sha256>.<ext>`` written atomically (same
  bytes, same name, so two writers racing is harmless) plus an SQLite index in
  WAL mode with a busy timeout, safe for concurrent runs.

`AnswerCache` looks a key up in both, in that order, and returns the answer
or None: what to do with it (check and write it, or send) is the pool's.

Only whitespace is normalised: case and punctuation change the image (text
rendering). Jobs asking for distinct variants carry their variant number in
the key, so variants are never merged with each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchgen.models import GeneratedImage, Job
from batchgen.output.atomic import write_bytes
from batchgen.output.mime import extension_for, sniff_mime
from batchgen.output.storage import LocalOutput, Output
from batchgen.store import Store


def request_key(job: Job, model: str, references: Sequence[bytes]) -> str:
    return request_key_of(job, model, [hashlib.sha256(b).hexdigest() for b in references])


def request_key_of(job: Job, model: str, digests: Sequence[str]) -> str:
    """`request_key` from the references' SHA-256 hex digests (Batch Mode knows
    them without reading the bytes again)."""
    payload = {
        "model": model,
        "prompt": " ".join(job.prompt.split()),
        "aspect_ratio": job.aspect_ratio,
        "variant": job.variant,
        "images": list(digests),
    }
    if job.image_size:  # absent: the requests (and keys) made before sizes existed
        payload["image_size"] = job.image_size
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    images: tuple[GeneratedImage, ...]
    text: str
    cost_usd: float


class Coalescing(Protocol):
    """At most one request in flight per key: a `Coalescer` within a process, or the
    Ray engine's `RemoteCoalescer` across a cluster's workers.

    `recheck`: a claim can be granted just after another holder of the key ended
    (its answer committed after our lookup, its release before our claim): the
    caller must look the answer up once more before sending. Within a process a
    free key's claim does not wait, so nothing can end in between."""

    recheck: bool

    async def claim(self, key: str) -> bool: ...

    def release(self, key: str) -> None: ...


class Coalescer:
    """At most one request in flight per key; the others wait for its end."""

    recheck = False

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Event] = {}

    async def claim(self, key: str) -> bool:
        """True: the caller sends and must `release`. False: another request for
        this key just ended; look the answer up again."""
        event = self._inflight.get(key)
        if event is None:
            self._inflight[key] = asyncio.Event()
            return True
        await event.wait()
        return False

    def release(self, key: str) -> None:
        event = self._inflight.pop(key, None)
        if event is not None:
            event.set()


class SharedCache:
    """A content-addressed answer cache shared by output folders (``--cache DIR``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(
            root / "index.sqlite", isolation_level=None, check_same_thread=False, timeout=30
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, blobs TEXT NOT NULL, "
            "text TEXT NOT NULL, cost_usd REAL NOT NULL, created REAL NOT NULL)"
        )

    def close(self) -> None:
        self.db.close()

    def _blob_path(self, digest: str, mime: str) -> Path:
        return self.root / "blobs" / digest[:2] / f"{digest}.{extension_for(mime)}"

    def get(self, key: str) -> CachedAnswer | None:
        row = self.db.execute(
            "SELECT blobs, text, cost_usd FROM answers WHERE key=?", (key,)
        ).fetchone()
        if row is None:
            return None
        images = []
        for digest, mime in json.loads(row[0]):
            try:
                data = self._blob_path(digest, mime).read_bytes()
            except FileNotFoundError:
                return None  # pruned by hand: treat as a miss
            if hashlib.sha256(data).hexdigest() != digest:
                return None
            images.append(GeneratedImage(mime, data))
        return CachedAnswer(tuple(images), row[1], float(row[2]))

    def put(self, key: str, answer: CachedAnswer) -> None:
        blobs = []
        for image in answer.images:
            digest = hashlib.sha256(image.data).hexdigest()
            path = self._blob_path(digest, image.mime_type)
            if not path.exists():  # not durable: a torn blob fails its hash, a miss
                write_bytes(path, image.data)
            blobs.append((digest, image.mime_type))
        with contextlib.suppress(sqlite3.IntegrityError):
            self.db.execute(
                "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?)",
                (key, json.dumps(blobs), answer.text, answer.cost_usd, time.time()),
            )


class AnswerCache:
    """The earlier answer to a request, from this folder's store, else the shared cache."""

    def __init__(
        self, store: Store, shared: SharedCache | None, output: Output | None = None
    ) -> None:
        self._store = store
        self._shared = shared
        #: Where the folder's files are (an object store, or the store's folder).
        self._output = output or LocalOutput(store.out)

    async def lookup(self, key: str) -> CachedAnswer | None:
        """The answer, or None. A folder's answer whose files are gone or no longer
        images is a miss (the caller checks the images again before using them)."""
        local = self._store.cached_request(key)
        if local is not None:
            files, text, cost = local
            output = self._output
            try:
                datas = await asyncio.to_thread(lambda: [output.read_bytes(f) for f in files])
            except OSError:
                datas = []
            mimes = [sniff_mime(d[:16]) for d in datas]
            if datas and all(mimes):
                images = tuple(GeneratedImage(m, d) for m, d in zip(mimes, datas, strict=True) if m)
                return CachedAnswer(images, text, cost)
        if self._shared is not None:
            return await asyncio.to_thread(self._shared.get, key)
        return None

    async def share(self, key: str, answer: CachedAnswer) -> None:
        """Offer a new answer to the shared cache, if there is one (this folder's
        request cache is a store row: the pool's ledger writes it)."""
        if self._shared is not None:
            await asyncio.to_thread(self._shared.put, key, answer)
