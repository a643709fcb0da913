"""A batch's life on the scaled clock, and the Operation that shows it.

``BATCH_STATE_PENDING`` for `SimConfig.batch_pending_s` simulated seconds,
then ``RUNNING`` while its lines finish evenly over `batch_running_s`, then
``SUCCEEDED`` with a results file (or, for inline requests, inline
responses). ``CANCELLED`` when cancelled (results dropped); ``FAILED``
half-way through and ``EXPIRED`` (still pending 48 simulated hours after it
was created: no results) when `SimConfig.batch_outcome` or a
``[[sim:failed]]`` / ``[[sim:expired]]`` marker in the display name says so,
and ``EXPIRED`` too for any batch whose timeline runs past 48 hours.
`operation` renders the record as ``GET /v1beta/batches/{id}`` answers it:
counts as int64 strings, zero counts left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchgen.sim import wire
from batchgen.sim.batchwork import LineAnswerer, ResultWriter, parse_line, read_line
from batchgen.sim.clock import SimClock
from batchgen.sim.files import FILE_TTL_S, FileStore

PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
#: The google.rpc.Status of an operation that did not succeed.
_ERRORS = {
    FAILED: {"code": 13, "message": "The batch failed: an internal error occurred."},
    CANCELLED: {"code": 1, "message": "The batch was cancelled."},
    EXPIRED: {"code": 4, "message": "The batch expired: it did not finish within 48 hours."},
}
#: Lines answered between yields to the event loop, so other requests get served.
_YIELD_EVERY = 64


@dataclass(eq=False)
class Batch:
    """One batch: what it runs and how far it got."""

    id: str
    model: str
    display_name: str
    created: float
    #: Input: an uploaded file (its id, open bytes and line offsets) or inline requests.
    input_file: str | None
    source: Any
    offsets: array[int]
    inline: list[dict[str, Any]]
    answerer: LineAnswerer
    #: "failed" or "expired" when the batch is made to end so.
    ending: str | None = None
    state: str = PENDING
    updated: float = 0.0
    ended: float | None = None
    succeeded: int = 0
    failed: int = 0
    results_file: str | None = None
    inline_responses: list[wire.Json] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return len(self.inline) if self.input_file is None else len(self.offsets)

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


class BatchRunner:
    """Drives batches along their timeline."""

    def __init__(
        self, store: FileStore, clock: SimClock, pending_s: float, running_s: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.pending_s = pending_s
        self.running_s = running_s

    def finish(self, batch: Batch, state: str) -> None:
        batch.state = state
        batch.updated = batch.ended = self.clock.now()
        batch.close()

    async def run(self, batch: Batch) -> None:
        """The batch's life, from pending to its end (cancelling the task stops it)."""
        try:
            deadline = batch.created + FILE_TTL_S
            await self.clock.wait_until(batch.created + self.pending_s)
            if batch.ending == "expired" or batch.created + self.pending_s >= deadline:
                await self.clock.wait_until(deadline)
                self.finish(batch, EXPIRED)
                return
            batch.state, batch.updated = RUNNING, self.clock.now()
            await self._lines(batch, deadline)
        finally:
            batch.close()

    async def _lines(self, batch: Batch, deadline: float) -> None:
        # On the timeline, not from when this task woke: a jump of the clock
        # past the end finishes every line at once.
        start, count = batch.created + self.pending_s, batch.count
        order = list(range(count))
        random.Random(batch.id).shuffle(order)
        inline = batch.input_file is None
        writer = None if inline else ResultWriter(self.store.root / f"batch-{batch.id}.part")
        responses: list[wire.Json] = []
        try:
            for done, index in enumerate(order, 1):
                moment = start + self.running_s * done / count
                if moment >= deadline:
                    await self.clock.wait_until(deadline)
                    self.finish(batch, EXPIRED)
                    return
                await self.clock.wait_until(moment)
                if done % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                key, field_name, doc = await self._line(batch, index)
                batch.succeeded += field_name == "response"
                batch.failed += field_name == "error"
                if writer is not None:
                    writer.write(key, field_name, doc)
                else:
                    responses.append({field_name: doc, "metadata": key})
                if batch.ending == "failed" and done * 2 >= count:
                    self.finish(batch, FAILED)
                    return
            self._succeed(batch, writer, responses)
            writer = None
        finally:
            if writer is not None:
                writer.discard()

    def _succeed(
        self, batch: Batch, writer: ResultWriter | None, responses: list[wire.Json]
    ) -> None:
        if writer is None:
            batch.inline_responses = responses
        else:
            digest = writer.close()
            path = writer.path.with_suffix("")
            writer.path.replace(path)
            stored = self.store.add_generated(path.name, path, "application/jsonl", digest)
            batch.results_file = f"files/{stored.id}"
        self.finish(batch, SUCCEEDED)

    async def _line(self, batch: Batch, index: int) -> tuple[Any, str, wire.Json]:
        if batch.input_file is None:
            item = batch.inline[index]
            field_name, doc = await batch.answerer.answer(item.get("request"))
            return item.get("metadata"), field_name, doc
        raw = read_line(batch.source, int(batch.offsets[index]))
        parsed = parse_line(raw, index + 1)
        if isinstance(parsed, dict):
            return None, "error", parsed
        key, request = parsed
        field_name, doc = await batch.answerer.answer(request)
        return key, field_name, doc

    async def stop(self, batch: Batch) -> None:
        """Cancel the batch's task and wait for it to let go of its files."""
        task = batch.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def batch_stats(batch: Batch) -> dict[str, str]:
    """``batchStats``: int64 counts as strings, zero counts left out."""
    pending = 0 if batch.state in TERMINAL else batch.count - batch.succeeded - batch.failed
    counts = {
        "requestCount": batch.count,
        "pendingRequestCount": pending,
        "successfulRequestCount": batch.succeeded,
        "failedRequestCount": batch.failed,
    }
    return {name: str(n) for name, n in counts.items() if n}


def operation(batch: Batch, clock: SimClock) -> wire.Json:
    """The batch as an Operation, as ``batches.get`` and ``list`` answer it."""
    meta: wire.Json = {
        "@type": _TYPE + "GenerateContentBatch",
        "model": f"models/{batch.model}",
        "displayName": batch.display_name,
        "createTime": clock.timestamp(batch.created),
        "updateTime": clock.timestamp(batch.updated or batch.created),
        "batchStats": batch_stats(batch),
        "state": batch.state,
        "name": f"batches/{batch.id}",
    }
    if batch.input_file is not None:
        meta["inputConfig"] = {"fileName": f"files/{batch.input_file}"}
    doc: wire.Json = {"name": f"batches/{batch.id}", "metadata": meta}
    if batch.ended is not None:
        meta["endTime"] = clock.timestamp(batch.ended)
    if batch.state == SUCCEEDED:
        output: wire.Json = (
            {"responsesFile": batch.results_file}
            if batch.results_file is not None
            else {"inlinedResponses": {"inlinedResponses": batch.inline_responses or []}}
        )
        meta["output"] = output
        doc["response"] = {"@type": _TYPE + "GenerateContentBatchOutput", **output}
    elif batch.state in _ERRORS:
        doc["error"] = _ERRORS[batch.state]
    if batch.state in TERMINAL:
        doc["done"] = True
    return doc


def input_file_path(store: FileStore, file_id: str) -> Path | None:
    stored = store.get(file_id)
    return None if stored is None or stored.generated else stored.path
