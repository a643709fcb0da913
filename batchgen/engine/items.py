"""items: a job in, the pool's unit of work and its request body out.

A `WorkItem` is one job on its way through the pool, across its retries. Its
request is prepared once, on its first turn: the reference images are read
(off the loop), the body built, the answer-cache key computed and, for a
chained job, the fingerprint made final from its parents' output bytes.
Between tries it waits in `Retries`, on a timer rather than in a worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from batchgen.engine.cache import request_key
from batchgen.engine.planner import fingerprint
from batchgen.engine.policy import FIRST_TRY, Tries
from batchgen.models import Counters, Job
from batchgen.output import client
from batchgen.output.mime import sniff_mime
from batchgen.output.storage import StoredFile


@dataclass(slots=True)
class WorkItem:
    job: Job
    body: bytes | None = None
    tries: Tries = FIRST_TRY
    model: str = ""
    #: The Pacer's ticket for the last request: when it was admitted.
    admitted_at: float | None = None
    cache_key: str = ""
    #: This item is the one request in flight for its cache key.
    claimed: bool = False
    last_cost: float = 0.0
    #: The pixel size ("WxH") the catalogue says the answer should have, if known.
    expected: str | None = None
    #: Its answer holds a request slot until it is on record (see the pool).
    holds_slot: bool = False
    #: Its (large, spooled) answer holds a place among those decoded at once.
    gated: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes
    cache_key: str
    #: A chained job's fingerprint, now that its parents' bytes are known; else None.
    fingerprint: str | None


async def prepare(
    job: Job,
    model: str,
    locate: Callable[[str], Path | StoredFile],
    service_tier: str | None = None,
) -> Request:
    """The request for `job`; `locate` says where each reference image is (it is
    called on the loop: it may read the store, which stays on the loop's thread).
    `service_tier` (flex) is in the body but not in the cache key: the image asked
    for is the same in any mode."""
    refs: list[tuple[str, bytes]] = []
    for ref in job.images:
        data = await asyncio.to_thread(locate(ref).read_bytes)
        refs.append((sniff_mime(data[:16]) or "image/png", data))
    final: str | None = None
    if job.chained:
        # The fingerprint covers the parents' output bytes, hashed from the bytes
        # just read (no second read of any file).
        final = fingerprint(job, model, [hashlib.sha256(data).hexdigest() for _m, data in refs])
    body = json.dumps(client.build_request(job, refs, service_tier=service_tier)).encode()
    return Request(body, request_key(job, model, [data for _m, data in refs]), final)


class Retries:
    """Items waiting out a retry delay on the loop's timers, holding no worker:
    each is put back on the queue when its delay ends, unless a stop cancels it
    first (it then stays pending, as `Counters.retrying` still shows)."""

    def __init__(self, queue: asyncio.Queue[WorkItem], counters: Counters) -> None:
        self._queue = queue
        self._counters = counters
        self._timers: set[asyncio.TimerHandle] = set()

    def add(self, item: WorkItem, delay: float) -> None:
        self._counters.retrying += 1

        def fire() -> None:
            self._timers.discard(timer)
            self._counters.retrying -= 1
            self._queue.put_nowait(item)

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
