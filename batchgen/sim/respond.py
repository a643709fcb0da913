"""How the simulator answers and keeps count: bodies, pages, the record.

`Responder` is the half of the simulator's state that every endpoint shares:
the stats and the JSONL log (one record per request, the key only as a
fingerprint), JSON and HTML answers, reading a body under the size limit, a
slowloris answer, and the front end's own pages (unknown paths, the
``/_sim/stats`` counters). `batchgen.sim.app.SimState` adds the model API.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from typing import IO

from aiohttp import web

from batchgen.sim import wire
from batchgen.sim.answers import dump
from batchgen.sim.config import SimConfig
from batchgen.sim.exchange import Exchange, key_id
from batchgen.sim.stats import RequestRecord, SimStats
from batchgen.sim.transport import JSON_TYPE, drop_connection

HTML_TYPE = "text/html; charset=UTF-8"


class Responder:
    """Stats, the log and the shapes of an answer, for one simulator."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats(cap=config.stats_cap, recent_cap=config.recent_cap)
        self._stopping = asyncio.Event()
        self._log: IO[str] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        if self.config.log_path is not None:
            # Once per start, on a local file: not worth a thread hop.
            self._log = open(self.config.log_path, "a", encoding="utf-8")  # noqa: ASYNC230, SIM115

    async def on_shutdown(self, app: web.Application) -> None:
        # Wakes every `hang` and `slow` answer so that stopping is immediate.
        self._stopping.set()

    async def on_cleanup(self, app: web.Application) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _stopped_within(self, delay: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def handle_other(self, request: web.Request) -> web.StreamResponse:
        """Any other path: the front end's 404 page, counted like the rest."""
        ex = Exchange(time.time(), time.monotonic(), request.method, request.path)
        self.stats.total += 1
        self.stats.timestamps.append(ex.started)
        response = self._html(ex, 404, "not_found", wire.NOT_FOUND_PAGE)
        self._record(ex)
        return response

    async def handle_stats(self, request: web.Request) -> web.Response:
        """Counters as JSON, for simulators running in another process."""
        s = self.stats
        doc = {
            "total": s.total,
            "by_status": {str(k): v for k, v in s.by_status.items()},
            "by_outcome": dict(s.by_outcome),
            "by_key_id": {key_id(k): v for k, v in s.by_key.items()},
            "forced": dict(s.forced),
            "injected": dict(s.injected),
            "key_in_url": s.key_in_url,
            "in_flight": s.in_flight,
            "max_in_flight": s.max_in_flight,
        }
        return web.Response(body=dump(doc), content_type="application/json")

    async def _slow(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Send a valid answer one byte per `slow_interval_s` (a slowloris)."""
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
        response.content_length = len(body)
        try:
            await response.prepare(request)
            for i in range(len(body)):
                await response.write(body[i : i + 1])
                if await self._stopped_within(self.config.slow_interval_s):
                    return drop_connection(request)
            await response.write_eof()
        except ConnectionError:  # the client gave up: the usual end of a slowloris
            pass
        return response

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it exceeds `max_body_bytes`; an oversized
        body is still drained so the client reads our 413 instead of a
        broken pipe."""
        limit = self.config.max_body_bytes
        length = request.content_length
        if length is not None and length <= limit:
            return await request.read()
        chunks: list[bytes] = []
        size = 0
        too_big = length is not None
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            too_big = too_big or size > limit
            if not too_big:
                chunks.append(chunk)
        return None if too_big else b"".join(chunks)

    # -- answers and records -------------------------------------------------

    def _json(self, ex: Exchange, status: int, outcome: str, doc: wire.Json) -> web.Response:
        return self._body(ex, status, outcome, dump(doc))

    def _body(self, ex: Exchange, status: int, outcome: str, body: bytes) -> web.Response:
        ex.status, ex.outcome = status, outcome
        return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE})

    def _error(self, ex: Exchange, outcome: str, doc: wire.Json) -> web.Response:
        return self._json(ex, int(doc["error"]["code"]), outcome, doc)

    def _html(self, ex: Exchange, status: int, outcome: str, page: str) -> web.Response:
        ex.status, ex.outcome = status, outcome
        return web.Response(status=status, body=page.encode(), headers={"Content-Type": HTML_TYPE})

    def _record(self, ex: Exchange) -> None:
        stats = self.stats
        stats.by_status[ex.status] += 1
        stats.by_outcome[ex.outcome] += 1
        if self._log is None and not stats.recent.maxlen:
            return
        record = RequestRecord(
            t=ex.t,
            method=ex.method,
            path=ex.path,
            api_version=ex.api_version,
            model=ex.model,
            prompt=ex.prompt,
            key_id=ex.key_id,
            key_source=ex.key_source,
            aspect_ratio=ex.aspect_ratio,
            images_in=ex.images_in,
            status=ex.status,
            outcome=ex.outcome,
            elapsed_s=round(time.monotonic() - ex.started, 6),
            bytes_in=ex.bytes_in,
        )
        stats.recent.append(record)
        if self._log is not None:
            self._log.write(json.dumps(asdict(record)) + "\n")
            self._log.flush()
