"""The aiohttp application: the model endpoints and their decisions.

A generation request goes through the same gates as at Google, in the same
order: overload (``max_concurrent``), key, method and model (the catalogue's
served models; retired and unknown ids are 404), body size, body validity
(unknown fields, the model's ratios, sizes and reference limit), quota; then
a forced outcome (marker, script, random fault) or a normal answer after the
configured latency. ``streamGenerateContent`` sends the same answer in
pieces; ``countTokens`` and ``GET /v1beta/models[/{id}]`` answer at once.
Decisions come from the pure functions in `faults`, `quota`, `parse` and
`served`; bodies from `wire` and `answers`; pictures from `images`. This
module only glues them to HTTP and records what happened.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from batchgen.catalogue import ModelInfo
from batchgen.sim import batches, images, served, wire
from batchgen.sim.answers import Composer, encode_stream, stream_chunks
from batchgen.sim.clock import SimClock
from batchgen.sim.config import SimConfig
from batchgen.sim.exchange import Exchange, extract_key, key_id, server_timeout
from batchgen.sim.faults import (
    SpecError,
    delay_of,
    fault_draw,
    forced_kind,
    parse_markers,
    pick_fault,
    scripted_kind,
)
from batchgen.sim.flex import FlexTier
from batchgen.sim.parse import BadRequest, ParsedRequest, parse_count, parse_request
from batchgen.sim.quota import QuotaBook
from batchgen.sim.respond import Responder
from batchgen.sim.transport import JSON_TYPE, drop_connection, truncate_answer

HTML_TYPE = "text/html; charset=UTF-8"
SSE_TYPE = "text/event-stream"
BAD_BASE64 = "@@not*base64!!"
#: The methods of ``models/{id}:METHOD``; others are 404 "Method not found."
_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})

#: Kinds answered after the configured latency, as if the model had worked.
_SLOW_KINDS = frozenset(
    {"500", "502", "503", "504", "truncate", "nonjson", "text", "empty", "noimage", "block",
     "block-prohibited", "imagesafety", "multi", "jpeg", "jpeg-as-png", "huge", "badb64",
     "notimage", "slow"}
)  # fmt: skip


#: Answers are written a slice of at most this size at a time (`_send`).
_PIECE = 1 << 20


class SimState(Responder):
    """The simulator's mutable state: quotas, models, the marker schedule
    (stats, the log and the ways of answering come from `Responder`)."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self._latency = config.latency_model
        self._rng = random.Random(config.seed)
        self._quota = QuotaBook(
            config.rpm, config.rpd, window=config.quota_window_s, day=config.quota_day_s
        )
        self._keys = config.accepted_keys
        models_file = Path(config.models_file) if config.models_file is not None else None
        self._book = served.ModelBook(config.models, models_file)
        self._compose = Composer(config, self._book)
        self._faults = dict(config.faults)
        self._script = {k: tuple(v) for k, v in (config.script or {}).items()}
        self._script_pos: dict[str, int] = {}
        #: Simulated time for files, batches and flex; the flex tier's rules.
        self.clock = SimClock(config.time_scale)
        self.flex = FlexTier(config, self.clock)

    async def on_startup(self, app: web.Application) -> None:
        await super().on_startup(app)
        config = self.config
        if config.noise_pool and (config.noise or config.rgb_noise):
            # The pool of the square 1K answer at this scale, the size asked for
            # unless a request says otherwise, is made before the first request
            # (~0.15 s an image at 4096 px) instead of by the first requests.
            side = max(1, round(1024 * config.scale))
            for index in range(config.noise_pool):
                await asyncio.to_thread(images.pooled_base64, side, side, config.rgb_noise, index)

    # -- handlers ------------------------------------------------------------

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        ex = Exchange(time.time(), time.monotonic(), request.method, request.path)
        stats.total += 1
        stats.timestamps.append(ex.started)
        limit = self.config.max_concurrent
        if limit is not None and stats.in_flight >= limit:
            response = self._error(
                ex, "overloaded", wire.error(503, "UNAVAILABLE", wire.OVERLOADED_MESSAGE)
            )
            self._record(ex)
            return response
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            answer = await self._generate(request, ex)
            if isinstance(answer, web.StreamResponse):
                if request.match_info["name"].endswith(":streamGenerateContent"):
                    return await self._streamed(request, answer)
                return answer
        finally:
            stats.in_flight -= 1
            self._record(ex)
        return await answer.send(request)

    async def handle_models(self, request: web.Request) -> web.Response:
        """``GET /v1beta/models`` (a page of the served models) and
        ``GET /v1beta/models/{id}``: JSON, a 404 in JSON for an id not served."""
        ex = Exchange(time.time(), time.monotonic(), request.method, request.path)
        self.stats.total += 1
        self.stats.timestamps.append(ex.started)
        try:
            return self._models_answer(request, ex)
        finally:
            self._record(ex)

    def _models_answer(self, request: web.Request, ex: Exchange) -> web.Response:
        ex.api_version = request.match_info["version"]
        denied = self._check_key(request, ex)
        if denied is not None:
            return denied
        name = request.match_info.get("name")
        if name is None:
            query = request.query
            try:
                doc = served.models_page(
                    self._book.models, query.get("pageSize"), query.get("pageToken")
                )
            except BadRequest as exc:
                return self._error(ex, "bad_request", wire.invalid_argument(str(exc)))
            return self._json(ex, 200, "models", doc)
        ex.model = name
        info = self._book.get(name)
        if info is None:
            return self._error(ex, "unknown_model", wire.model_not_found(name, ex.api_version))
        return self._json(ex, 200, "model", served.model_resource(info))

    def _check_key(self, request: web.Request, ex: Exchange) -> web.Response | None:
        """Count the key (by where it was found); an error when it is not accepted."""
        key, ex.key_source = extract_key(request)
        ex.key_id = key_id(key)
        self.stats.by_key[key or ""] += 1
        if ex.key_source == "url":
            self.stats.key_in_url += 1
        if self._keys and key not in self._keys:
            return self._error(ex, "badkey", wire.key_invalid())
        return None

    async def _read_request(
        self, request: web.Request, ex: Exchange
    ) -> tuple[ModelInfo, ParsedRequest] | web.Response:
        """Key, method, model, size and body: the request, or the answer refusing it."""
        ex.api_version = request.match_info["version"]
        model, _, method = request.match_info["name"].partition(":")
        ex.model = model
        denied = self._check_key(request, ex)
        if denied is not None:
            return denied
        if method not in _METHODS:
            return self._error(ex, "not_found", wire.error(404, "NOT_FOUND", "Method not found."))
        info = self._book.get(model)
        if info is None:
            return self._error(ex, "unknown_model", wire.model_not_found(model, ex.api_version))
        body = await self._read_body(request)
        if body is None:
            return self._html(ex, 413, "too_large", wire.TOO_LARGE_PAGE)
        ex.bytes_in = len(body)
        try:
            parse = parse_count if method == "countTokens" else parse_request
            parsed = parse(body, self._book.ratios)
            served.check(parsed, info)
        except BadRequest as exc:
            doc = wire.invalid_argument(str(exc), exc.field, violation=exc.violation)
            return self._error(ex, "bad_request", doc)
        ex.prompt = parsed.prompt
        ex.aspect_ratio = parsed.aspect_ratio
        ex.images_in = len(parsed.images)
        return info, parsed

    async def _generate(self, request: web.Request, ex: Exchange) -> web.StreamResponse | _Pieces:
        read = await self._read_request(request, ex)
        if isinstance(read, web.Response):
            return read
        info, parsed = read
        if request.match_info["name"].endswith(":countTokens"):
            return self._json(ex, 200, "count_tokens", self._compose.count_tokens(parsed, info))
        occurrence = self.stats.count_prompt(parsed.prompt, fallback=self.stats.total)
        key = ex.key_id if self.config.quota_scope == "key" else "project"
        denial = self._quota.admit(key)
        if denial is not None:
            daily = denial.quota_id.startswith("GenerateRequestsPerDay")
            doc = wire.quota_exceeded(
                info.id, daily=daily, limit=denial.limit, retry_delay=denial.retry_after
            )
            return self._error(ex, "rpd" if daily else "rpm", doc)
        try:
            kind = self._decide(parsed.prompt, occurrence)
        except SpecError as exc:
            return self._error(ex, "bad_request", wire.error(400, "INVALID_ARGUMENT", str(exc)))
        flex = parsed.service_tier == "flex"
        if flex and kind is None:
            kind = self.flex.shed(parsed.prompt, occurrence, self.stats)
        if kind is None or kind in _SLOW_KINDS or kind == "ok":
            delay = self.flex.delay() if flex else self._latency.sample(self._rng)
            deadline = server_timeout(request)
            if deadline is not None and delay > deadline:
                # The SDK's X-Server-Timeout: Google gives up at the deadline.
                await asyncio.sleep(deadline)
                return self._error(ex, "deadline", wire.error(*wire.SIMPLE_ERRORS["504"]))
            if delay > 0:
                await asyncio.sleep(delay)
        if kind is None or kind == "ok":
            pieces = self._compose.success_pieces(parsed, info)
            # Only a large answer gains from slices. A small one stays a plain
            # `web.Response` (headers and body in one write): sent as a stream,
            # the 16-px answers of a zero-latency run cost the simulator
            # 0.143-0.148 ms a request, 0.127-0.138 this way.
            large = sum(len(piece) for piece in pieces) > _PIECE
            if large and request.match_info["name"].endswith(":generateContent"):
                ex.status, ex.outcome = 200, "ok"
                return _Pieces(pieces)
            return self._body(ex, 200, "ok", b"".join(pieces))
        return await self._forced(request, ex, kind, parsed, info)

    async def _streamed(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        """``streamGenerateContent``: a 200 JSON answer sent in pieces (SSE
        with ``alt=sse``, else a JSON array); anything else as it is."""
        if not (
            isinstance(response, web.Response)
            and response.status == 200
            and response.content_type == "application/json"
            and isinstance(response.body, bytes)
        ):
            return response
        sse = request.query.get("alt") == "sse"
        stream = web.StreamResponse(
            status=200, headers={"Content-Type": SSE_TYPE if sse else JSON_TYPE}
        )
        await stream.prepare(request)
        for piece in encode_stream(stream_chunks(json.loads(response.body)), sse=sse):
            await stream.write(piece)
        await stream.write_eof()
        return stream

    def _decide(self, prompt: str, occurrence: int) -> str | None:
        """Marker schedule first, then the script, then the fault table."""
        markers = parse_markers(prompt)
        if markers:
            kind = forced_kind(markers, occurrence)
            if kind is not None:
                self.stats.forced[kind] += 1
                return kind
        if self._script:
            hit = scripted_kind(self._script, prompt, self._script_pos)
            if hit is not None:
                entry, kind = hit
                self._script_pos[entry] = self._script_pos.get(entry, 0) + 1
                self.stats.forced[kind] += 1
                return kind
        if self._faults:
            kind = pick_fault(self._faults, fault_draw(self.config.seed, prompt, occurrence))
            if kind is not None:
                self.stats.injected[kind] += 1
                return kind
        return None

    # -- answers ------------------------------------------------------------

    async def _forced(
        self,
        request: web.Request,
        ex: Exchange,
        kind: str,
        parsed: ParsedRequest,
        info: ModelInfo,
    ) -> web.StreamResponse:
        config, compose, model = self.config, self._compose, info.id
        rid = compose.response_id
        prompt_usage = wire.usage(parsed.prompt, len(parsed.images), 0)
        delay = delay_of(kind)
        if kind in ("429", "429-nodelay") or delay is not None:
            if kind == "429":
                delay = config.retry_delay_s
            doc = wire.quota_exceeded(model, daily=False, limit=config.rpm or 10, retry_delay=delay)
            return self._error(ex, kind, doc)
        if kind == "daily":
            doc = wire.quota_exceeded(
                model, daily=True, limit=config.rpd or 250, retry_delay=config.daily_retry_delay_s
            )
            return self._error(ex, kind, doc)
        if kind in wire.SIMPLE_ERRORS:
            code, status, message = wire.SIMPLE_ERRORS[kind]
            return self._error(ex, kind, wire.error(code, status, message))
        if kind == "badkey":
            return self._error(ex, kind, wire.key_invalid())
        if kind == "404":
            return self._error(ex, kind, wire.model_not_found(model, ex.api_version))
        if kind == "413":
            return self._html(ex, 413, kind, wire.TOO_LARGE_PAGE)
        if kind == "502":
            return self._html(ex, 502, kind, wire.BAD_GATEWAY_PAGE)
        if kind == "nonjson":
            return self._html(ex, 200, kind, wire.NONJSON_PAGE)
        if kind == "redirect":
            ex.status, ex.outcome = 302, kind
            return web.Response(status=302, headers={"Location": config.redirect_url})
        if kind == "reset":
            ex.outcome = kind
            return drop_connection(request)
        if kind == "hang":
            ex.outcome = kind
            await self._stopped_within(config.hang_seconds)
            return drop_connection(request)
        if kind == "truncate":
            ex.status, ex.outcome = 200, kind
            return truncate_answer(request, compose.success(parsed, info))
        if kind == "slow":
            ex.status, ex.outcome = 200, kind
            return await self._slow(request, compose.success(parsed, info))
        usage_text = prompt_usage
        if kind == "text":
            usage_text = wire.usage(parsed.prompt, len(parsed.images), 0, wire.TEXT_ANSWER)
        imageless = wire.imageless_answer(
            kind, model=model, response_id=rid(), usage_meta=usage_text
        )
        if imageless is not None:
            return self._json(ex, 200, kind, imageless)
        pictures: dict[str, Any] = {
            "multi": lambda: json.loads(compose.success(parsed, info, count=2)),
            "jpeg": lambda: compose.with_image(
                parsed, info, "image/jpeg", compose.jpeg(parsed, info)
            ),
            "jpeg-as-png": lambda: compose.with_image(
                parsed, info, "image/png", compose.jpeg(parsed, info)
            ),
            "huge": lambda: compose.with_image(
                parsed, info, "image/png", images.huge_base64(config.huge_size)
            ),
            "badb64": lambda: compose.with_image(parsed, info, "image/png", BAD_BASE64),
            "notimage": lambda: compose.with_image(
                parsed, info, "image/png", images.NOT_AN_IMAGE.decode("ascii")
            ),
        }
        return self._json(ex, 200, kind, pictures[kind]())


SIM_KEY = web.AppKey("batchgen_sim", SimState)


def make_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application (state under `SIM_KEY`)."""
    config = config or SimConfig()
    state = SimState(config)
    # 1 MB of slack over the limit so that `_read_body` decides, not aiohttp.
    app = web.Application(client_max_size=config.max_body_bytes + (1 << 20))
    app[SIM_KEY] = state
    batches.register(app, state)  # the Files and Batches APIs
    app.router.add_post(r"/{version:v1beta|v1}/models/{name:[^/]+}", state.handle_generate)
    app.router.add_get(r"/{version:v1beta|v1}/models", state.handle_models)
    app.router.add_get(r"/{version:v1beta|v1}/models/{name:[^/:]+}", state.handle_models)
    app.router.add_get("/_sim/stats", state.handle_stats)
    app.router.add_route("*", "/{tail:.*}", state.handle_other)
    app.on_startup.append(state.on_startup)
    app.on_shutdown.append(state.on_shutdown)
    app.on_cleanup.append(state.on_cleanup)
    return app


@dataclass(frozen=True, slots=True)
class _Pieces:
    """A 200 JSON answer given as pieces (`Composer.success_pieces`), sent by
    `handle_generate` once the exchange is recorded, as aiohttp sends a
    `web.Response`: a client that has the answer finds it in the stats."""

    pieces: list[bytes]

    async def send(self, request: web.Request) -> web.StreamResponse:
        """Written a slice at a time (answers larger than one `_PIECE`).
        Joined and handed to aiohttp whole, a 4K answer's 22 MB was copied
        three times more on this one loop (the join, the headers joined to the
        body, the transport's buffer) while every other answer waited: 64
        answers due at once reached a client that only reads them 5.9-6.25 s
        after the request, with 4 s of latency; sent this way, 4.04-5.1 s, in
        the order they were made."""
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
        response.content_length = sum(len(piece) for piece in self.pieces)
        await response.prepare(request)
        for piece in self.pieces:
            with memoryview(piece) as view:
                for at in range(0, len(piece), _PIECE):
                    await response.write(view[at : at + _PIECE])
        await response.write_eof()
        return response
