"""Batch Mode on HTTP, and the registration of every slow endpoint.

``POST /{v}/models/{model}:batchGenerateContent`` with ``{"batch":
{"displayName", "inputConfig": {"fileName"} | {"requests": {"requests":
[{"request", "metadata": {"key"}}]}}}}`` makes a batch and answers its
Operation. It is **not idempotent**, as the real API is not: the same request
twice makes two batches (`SimStats.by_outcome["batch_created"]` counts them).
At most `SimConfig.batch_max_concurrent` batches pending or running at once
(deleted ones still count while they run); an input file over
`SimConfig.batch_max_input_bytes` is refused. ``GET /{v}/batches/{id}``,
``GET /{v}/batches`` (``pageSize``, ``pageToken``), ``POST
/{v}/batches/{id}:cancel`` and ``DELETE /{v}/batches/{id}`` (the record goes,
the work does not stop) complete it. `register` puts these, the Files API
(`uploads`) and ``POST /_sim/clock`` (advance the scaled clock) on the app.
"""

from __future__ import annotations

import asyncio
import json
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from batchgen.sim import wire
from batchgen.sim.batchrun import Batch, BatchRunner, input_file_path, operation
from batchgen.sim.batchwork import LineAnswerer, index_lines
from batchgen.sim.endpoint import Endpoint, page_bounds
from batchgen.sim.exchange import Exchange
from batchgen.sim.files import FileStore, not_found
from batchgen.sim.uploads import FilesApi

if TYPE_CHECKING:
    from batchgen.sim.app import SimState

#: In a display name: how the batch must end.
ENDING_MARKERS = {"[[sim:failed]]": "failed", "[[sim:expired]]": "expired"}
_NOT_FOUND = "Requested entity was not found."


class BatchesApi(Endpoint):
    """The batch handlers; `batches` holds the visible records."""

    def __init__(self, state: SimState, store: FileStore) -> None:
        super().__init__(state)
        config = state.config
        self.store = store
        self.runner = BatchRunner(
            store, state.clock, config.batch_pending_s, config.batch_running_s
        )
        self.batches: dict[str, Batch] = {}
        #: Every batch whose task is alive, deleted or not (the concurrency limit's count).
        self.running: set[Batch] = set()

    async def handle_create(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._create)

    async def _create(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        state = self.state
        ex.model = request.path.rpartition("/")[2].partition(":")[0]
        info = state._book.get(ex.model)
        if info is None:
            return state._error(ex, "unknown_model", wire.model_not_found(ex.model, ex.api_version))
        body = await state._read_body(request)
        if body is None:
            return state._html(ex, 413, "too_large", wire.TOO_LARGE_PAGE)
        ex.bytes_in = len(body)
        try:
            spec = _batch_spec(body)
        except ValueError as exc:
            return state._error(ex, "bad_request", wire.invalid_argument(str(exc)))
        limit = state.config.batch_max_concurrent
        if sum(b.active for b in self.running) >= limit:
            return self.error(
                ex, "batch_limit", 429, "RESOURCE_EXHAUSTED",
                f"Too many concurrent batches: at most {limit} may be pending or running.",
            )  # fmt: skip
        batch = await self._new_batch(ex, spec, LineAnswerer(state, self.store, info))
        if isinstance(batch, web.Response):
            return batch
        self.batches[batch.id] = batch
        self.running.add(batch)
        batch.task = asyncio.create_task(self._run(batch), name=f"sim-batch-{batch.id}")
        return self.json(ex, "batch_created", operation(batch, state.clock))

    async def _new_batch(
        self, ex: Exchange, spec: dict[str, Any], answerer: LineAnswerer
    ) -> Batch | web.Response:
        name = str(spec.get("displayName", spec.get("display_name", "")))
        ending = self.state.config.batch_outcome or next(
            (e for marker, e in ENDING_MARKERS.items() if marker in name), None
        )
        source = spec["inputConfig"]
        batch_id = self.store.new_id(30)
        common = (batch_id, answerer.info.id, name, self.state.clock.now())
        if "requests" not in source:
            file_id = str(source["fileName"]).removeprefix("files/")
            path = input_file_path(self.store, file_id)
            if path is None:
                return self.error(ex, "file_refused", *_denied(file_id))
            cap = self.state.config.batch_max_input_bytes
            if path.stat().st_size > cap:
                return self.error(
                    ex, "batch_too_large", 400, "INVALID_ARGUMENT",
                    f"The input file is larger than the {cap} bytes a batch may take.",
                )  # fmt: skip
            offsets = await asyncio.to_thread(index_lines, path)
            return Batch(*common, file_id, path.open("rb"), offsets, [], answerer, ending)
        return Batch(*common, None, None, array("q"), source["requests"], answerer, ending)

    async def _run(self, batch: Batch) -> None:
        try:
            await self.runner.run(batch)
        finally:
            self.running.discard(batch)

    def _find(self, request: web.Request) -> Batch | None:
        return self.batches.get(request.match_info["id"])

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._get)

    async def _get(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        batch = self._find(request)
        if batch is None:
            return self.error(ex, "batch_unknown", 404, "NOT_FOUND", _NOT_FOUND)
        return self.json(ex, "batch", operation(batch, self.state.clock))

    async def handle_list(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._list)

    async def _list(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        query = request.query
        try:
            span = page_bounds(query.get("pageSize"), query.get("pageToken"), 50, 1000)
        except ValueError:
            return self.error(ex, "bad_request", 400, "INVALID_ARGUMENT", "Invalid page token.")
        newest = sorted(self.batches.values(), key=lambda b: (-b.created, b.id))
        doc: wire.Json = {}
        page = newest[span.start : span.stop]
        if page:
            doc["operations"] = [operation(b, self.state.clock) for b in page]
        if span.stop < len(newest):
            doc["nextPageToken"] = f"{span.stop:x}"
        return self.json(ex, "batches", doc)

    async def handle_cancel(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._cancel)

    async def _cancel(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        batch = self._find(request)
        if batch is None:
            return self.error(ex, "batch_unknown", 404, "NOT_FOUND", _NOT_FOUND)
        if batch.active:
            await self.runner.stop(batch)
        if not batch.active:
            return self.error(
                ex, "batch_done", 400, "FAILED_PRECONDITION",
                f"The batch has already ended ({batch.state}).",
            )  # fmt: skip
        self.runner.finish(batch, "BATCH_STATE_CANCELLED")
        return self.json(ex, "batch_cancelled", {})

    async def handle_delete(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._delete)

    async def _delete(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        if self.batches.pop(request.match_info["id"], None) is None:
            return self.error(ex, "batch_unknown", 404, "NOT_FOUND", _NOT_FOUND)
        return self.json(ex, "batch_deleted", {})

    async def handle_clock(self, request: web.Request) -> web.Response:
        """``POST /_sim/clock`` ``{"advance": SECONDS}``: jump the scaled clock."""
        try:
            seconds = float((await request.json()).get("advance", 0))
        except (ValueError, AttributeError):
            return web.json_response({"error": 'send {"advance": SECONDS}'}, status=400)
        return web.json_response({"now": self.state.clock.advance(seconds)})

    async def on_shutdown(self, app: web.Application) -> None:
        for batch in list(self.running):
            await self.runner.stop(batch)


def _denied(file_id: str) -> tuple[int, str, str]:
    exc = not_found(file_id)
    return exc.code, exc.status, str(exc)


def _batch_spec(body: bytes) -> dict[str, Any]:
    """The ``batch`` object of a create request, its input checked."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("Invalid JSON payload received.") from None
    spec = doc.get("batch") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        raise ValueError("* batch: required\n")
    source = spec.get("inputConfig", spec.get("input_config"))
    if not isinstance(source, dict):
        raise ValueError("* batch.input_config: required\n")
    requests = source.get("requests")
    if requests is not None:
        items = requests.get("requests") if isinstance(requests, dict) else None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise ValueError("* batch.input_config.requests.requests: a list of requests\n")
        return {**spec, "inputConfig": {"requests": items}}
    name = source.get("fileName", source.get("file_name"))
    if not isinstance(name, str) or not name:
        raise ValueError("* batch.input_config: file_name or requests is required\n")
    return {**spec, "inputConfig": {"fileName": name}}


BATCHES_KEY = web.AppKey("batchgen_sim_batches", BatchesApi)


def register(app: web.Application, state: SimState) -> None:
    """The Files and Batches routes, the clock's, and what stops them."""
    root = Path(state.config.files_dir) if state.config.files_dir is not None else None
    store = FileStore(root, state.clock, state.config.file_max_bytes, state.config.seed)
    files = FilesApi(state).bind(store)
    batches = BatchesApi(state, store)
    add = app.router.add_route
    # Literal paths: aiohttp indexes routes by their static prefix, so none of
    # these is tried on the hot generateContent path (a model's create path
    # is static too; an id not served falls through to the models' 404).
    for v in ("v1beta", "v1"):
        for model in state._book.models:
            add("POST", f"/{v}/models/{model}:batchGenerateContent", batches.handle_create)
        add("GET", f"/{v}/batches", batches.handle_list)
        add("GET", f"/{v}/batches/{{id:[^/:]+}}", batches.handle_get)
        add("DELETE", f"/{v}/batches/{{id:[^/:]+}}", batches.handle_delete)
        add("POST", f"/{v}/batches/{{id:[^/:]+}}:cancel", batches.handle_cancel)
        add("POST", f"/upload/{v}/files", files.handle_upload)
        add("GET", f"/{v}/files", files.handle_list)
        add("GET", f"/{v}/files/{{id:[^/:]+}}:download", files.handle_download)
        add("GET", f"/download/{v}/files/{{id:[^/:]+}}:download", files.handle_download)
        add("GET", f"/{v}/files/{{id:[^/:]+}}", files.handle_get)
        add("DELETE", f"/{v}/files/{{id:[^/:]+}}", files.handle_delete)
    add("POST", "/_sim/clock", batches.handle_clock)
    app[BATCHES_KEY] = batches
    app.on_shutdown.append(batches.on_shutdown)

    async def close_store(app: web.Application) -> None:
        store.close()

    app.on_cleanup.append(close_store)
