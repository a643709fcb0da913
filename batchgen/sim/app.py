"""The aiohttp application: one generateContent handler and its decisions.

A request goes through the same gates as at Google, in the same order:
overload (``max_concurrent``), key, method and model, body size, body
validity, quota; then a forced outcome (marker, script, random fault) or a
normal answer after the configured latency. Decisions come from the pure
functions in `faults`, `quota` and `parse`; bodies from `wire`; pictures from
`images`. This module only glues them to HTTP and records what happened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import IO, Any

from aiohttp import web

from batchgen.sim import images, wire
from batchgen.sim.config import SimConfig
from batchgen.sim.faults import (
    SpecError,
    delay_of,
    fault_draw,
    forced_kind,
    parse_markers,
    pick_fault,
    scripted_kind,
)
from batchgen.sim.parse import BadRequest, ParsedRequest, parse_request
from batchgen.sim.quota import QuotaBook
from batchgen.sim.stats import RequestRecord, SimStats
from batchgen.sim.transport import JSON_TYPE, drop_connection, truncate_answer

HTML_TYPE = "text/html; charset=UTF-8"
DEFAULT_TEXT = "Here is the image you asked for."
_DEFAULT_TEXT_TOKENS = wire.text_tokens(DEFAULT_TEXT)
BAD_BASE64 = "@@not*base64!!"

#: Kinds answered after the configured latency, as if the model had worked.
_SLOW_KINDS = frozenset(
    {"500", "502", "503", "504", "truncate", "nonjson", "text", "empty", "noimage", "block",
     "block-prohibited", "imagesafety", "multi", "jpeg", "huge", "badb64", "notimage", "slow"}
)  # fmt: skip


@lru_cache(maxsize=256)
def key_id(key: str | None) -> str:
    """A short, stable fingerprint so logs can tell keys apart without
    revealing them."""
    if not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(slots=True)
class _Exchange:
    """What is known about the request being handled, for stats and the log."""

    t: float
    started: float
    method: str
    path: str
    api_version: str = ""
    model: str = ""
    prompt: str = ""
    key_id: str = ""
    key_source: str = "none"
    aspect_ratio: str | None = None
    images_in: int = 0
    status: int | None = None
    outcome: str = "cancelled"
    bytes_in: int = 0


class SimState:
    """The simulator's mutable state: stats, quotas, counters, the log."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.stats = SimStats(cap=config.stats_cap, recent_cap=config.recent_cap)
        self._latency = config.latency_model
        self._rng = random.Random(config.seed)
        self._quota = QuotaBook(
            config.rpm, config.rpd, window=config.quota_window_s, day=config.quota_day_s
        )
        self._keys = config.accepted_keys
        self._models = frozenset(config.models)
        self._faults = dict(config.faults)
        self._script = {k: tuple(v) for k, v in (config.script or {}).items()}
        self._script_pos: dict[str, int] = {}
        self._ids = itertools.count(1)
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

    # -- handlers ------------------------------------------------------------

    async def handle_generate(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        ex = _Exchange(time.time(), time.monotonic(), request.method, request.path)
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
            return await self._generate(request, ex)
        finally:
            stats.in_flight -= 1
            self._record(ex)

    async def handle_other(self, request: web.Request) -> web.StreamResponse:
        """Any other path: the front end's 404 page, counted like the rest."""
        ex = _Exchange(time.time(), time.monotonic(), request.method, request.path)
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
        return web.Response(body=_dump(doc), content_type="application/json")

    async def _generate(self, request: web.Request, ex: _Exchange) -> web.StreamResponse:
        ex.api_version = request.match_info["version"]
        model, _, method = request.match_info["name"].partition(":")
        ex.model = model
        key, ex.key_source = _extract_key(request)
        ex.key_id = key_id(key)
        self.stats.by_key[key or ""] += 1
        if ex.key_source == "url":
            self.stats.key_in_url += 1
        if self._keys and key not in self._keys:
            return self._error(ex, "badkey", wire.key_invalid())
        if method != "generateContent":
            return self._error(ex, "not_found", wire.error(404, "NOT_FOUND", "Method not found."))
        if model not in self._models:
            return self._error(ex, "unknown_model", wire.model_not_found(model, ex.api_version))
        body = await self._read_body(request)
        if body is None:
            return self._html(ex, 413, "too_large", wire.TOO_LARGE_PAGE)
        ex.bytes_in = len(body)
        try:
            parsed = parse_request(body)
        except BadRequest as exc:
            return self._error(ex, "bad_request", wire.error(400, "INVALID_ARGUMENT", str(exc)))
        ex.prompt = parsed.prompt
        ex.aspect_ratio = parsed.aspect_ratio
        ex.images_in = len(parsed.images)
        occurrence = self.stats.count_prompt(parsed.prompt, fallback=self.stats.total)
        scope = "project" if self.config.quota_scope == "project" else (key or "")
        denial = self._quota.admit(scope)
        if denial is not None:
            daily = denial.quota_id.startswith("GenerateRequestsPerDay")
            doc = wire.quota_exceeded(
                model, daily=daily, limit=denial.limit, retry_delay=denial.retry_after
            )
            return self._error(ex, "rpd" if daily else "rpm", doc)
        try:
            kind = self._decide(parsed.prompt, occurrence)
        except SpecError as exc:
            return self._error(ex, "bad_request", wire.error(400, "INVALID_ARGUMENT", str(exc)))
        if kind is None or kind in _SLOW_KINDS or kind == "ok":
            delay = self._latency.sample(self._rng)
            deadline = _server_timeout(request)
            if deadline is not None and delay > deadline:
                # The SDK's X-Server-Timeout: Google gives up at the deadline.
                await asyncio.sleep(deadline)
                return self._error(ex, "deadline", wire.error(*wire.SIMPLE_ERRORS["504"]))
            if delay > 0:
                await asyncio.sleep(delay)
        if kind is None or kind == "ok":
            return self._body(ex, 200, "ok", self._success(parsed, model))
        return await self._forced(request, ex, kind, parsed, model)

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

    # -- bodies --------------------------------------------------------------

    def _image(
        self, parsed: ParsedRequest, model: str, variant: int = 0
    ) -> tuple[str, tuple[int, int]]:
        """Standard base64 of a deterministic PNG for this request, and its size."""
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{model}\x00{parsed.aspect_ratio}\x00{variant}\x00{parsed.prompt}".encode())
        for _, data in parsed.images:
            h.update(data)
        digest = h.digest()
        colours = images.colours_from(digest)
        refs = [r for r in (images.inspect_reference(d) for _, d in parsed.images[:2]) if r]
        ratio = parsed.aspect_ratio
        if ratio is None:
            ratio = images.closest_ratio(*refs[0][1]) if refs else "1:1"
        if refs:  # the edit's output carries its references' colours
            colours = (colours[0], refs[0][0], refs[1][0] if len(refs) > 1 else colours[2])
        width, height = images.scaled_size(ratio, self.config.scale)
        if self.config.noise:
            seed = int.from_bytes(digest[9:17], "big")
            png = images.make_png(width, height, colours, seed)
            return base64.b64encode(png).decode("ascii"), (width, height)
        return images.png_base64(width, height, colours), (width, height)

    def _response_id(self) -> str:
        return f"sim-{self.config.seed:x}-{next(self._ids):08x}"

    def _success(self, parsed: ParsedRequest, model: str, count: int = 1) -> bytes:
        """The bytes of a normal answer with `count` images."""
        text = DEFAULT_TEXT if self.config.text_part and "TEXT" in parsed.modalities else None
        pictures = [("image/png", self._image(parsed, model, v)[0]) for v in range(count)]
        usage = wire.usage_json(
            wire.text_tokens(parsed.prompt),
            len(parsed.images),
            count,
            _DEFAULT_TEXT_TOKENS if text else 0,
        )
        return wire.fast_answer(
            text, pictures, model=model, response_id=self._response_id(), usage=usage
        )

    def _with_image(self, parsed: ParsedRequest, model: str, mime: str, data: str) -> wire.Json:
        usage = wire.usage(parsed.prompt, len(parsed.images), 1)
        parts = [wire.image_part(mime, data)]
        return wire.answer(parts, model=model, response_id=self._response_id(), usage_meta=usage)

    async def _forced(
        self,
        request: web.Request,
        ex: _Exchange,
        kind: str,
        parsed: ParsedRequest,
        model: str,
    ) -> web.StreamResponse:
        config = self.config
        rid = self._response_id
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
            return truncate_answer(request, self._success(parsed, model))
        if kind == "slow":
            ex.status, ex.outcome = 200, kind
            return await self._slow(request, self._success(parsed, model))
        usage_text = prompt_usage
        if kind == "text":
            usage_text = wire.usage(parsed.prompt, len(parsed.images), 0, wire.TEXT_ANSWER)
        imageless = wire.imageless_answer(
            kind, model=model, response_id=rid(), usage_meta=usage_text
        )
        if imageless is not None:
            return self._json(ex, 200, kind, imageless)
        pictures: dict[str, Any] = {
            "multi": lambda: json.loads(self._success(parsed, model, count=2)),
            "jpeg": lambda: self._with_image(
                parsed, model, "image/jpeg", self._jpeg(parsed, model)
            ),
            "huge": lambda: self._with_image(
                parsed, model, "image/png", images.huge_base64(config.huge_size)
            ),
            "badb64": lambda: self._with_image(parsed, model, "image/png", BAD_BASE64),
            "notimage": lambda: self._with_image(
                parsed, model, "image/png", images.NOT_AN_IMAGE.decode("ascii")
            ),
        }
        return self._json(ex, 200, kind, pictures[kind]())

    def _jpeg(self, parsed: ParsedRequest, model: str) -> str:
        width, height = self._image(parsed, model)[1]
        r, g, b = hashlib.blake2b(parsed.prompt.encode(), digest_size=3).digest()
        return images.jpeg_base64(width, height, (r, g, b))

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

    def _json(self, ex: _Exchange, status: int, outcome: str, doc: wire.Json) -> web.Response:
        return self._body(ex, status, outcome, _dump(doc))

    def _body(self, ex: _Exchange, status: int, outcome: str, body: bytes) -> web.Response:
        ex.status, ex.outcome = status, outcome
        return web.Response(status=status, body=body, headers={"Content-Type": JSON_TYPE})

    def _error(self, ex: _Exchange, outcome: str, doc: wire.Json) -> web.Response:
        return self._json(ex, int(doc["error"]["code"]), outcome, doc)

    def _html(self, ex: _Exchange, status: int, outcome: str, page: str) -> web.Response:
        ex.status, ex.outcome = status, outcome
        return web.Response(status=status, body=page.encode(), headers={"Content-Type": HTML_TYPE})

    def _record(self, ex: _Exchange) -> None:
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


def _server_timeout(request: web.Request) -> float | None:
    value = request.headers.get("X-Server-Timeout")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _extract_key(request: web.Request) -> tuple[str | None, str]:
    key = request.headers.get("x-goog-api-key")
    if key is not None:
        return key, "header"
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), "bearer"
    key = request.query.get("key")
    if key is not None:
        return key, "url"
    return None, "none"


SIM_KEY = web.AppKey("batchgen_sim", SimState)


def make_app(config: SimConfig | None = None) -> web.Application:
    """The simulator as an aiohttp application (state under `SIM_KEY`)."""
    config = config or SimConfig()
    state = SimState(config)
    # 1 MB of slack over the limit so that `_read_body` decides, not aiohttp.
    app = web.Application(client_max_size=config.max_body_bytes + (1 << 20))
    app[SIM_KEY] = state
    app.router.add_post(r"/{version:v1beta|v1}/models/{name:[^/]+}", state.handle_generate)
    app.router.add_get("/_sim/stats", state.handle_stats)
    app.router.add_route("*", "/{tail:.*}", state.handle_other)
    app.on_startup.append(state.on_startup)
    app.on_shutdown.append(state.on_shutdown)
    app.on_cleanup.append(state.on_cleanup)
    return app
