"""check: ``batchgen check [--model M] [--base-url URL] [--sim] [--no-spend]``, a pre-flight.

Proves a set-up in seconds, one line per check, before a run of thousands:
the key is present; the API accepts it and serves the model
(``GET /v1beta/models/{id}``, which costs nothing); and the key has image
quota. That last one is the most common first-day failure (a free key
authenticates but answers every image call 429 with limit 0) and only a real
generate call shows it, so the command says what it will spend (at most one
image of the cheapest kind) before spending it; ``--no-spend`` skips it.
Exit 0 when every check passes, 3 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from batchgen.config import RunConfig, Secret, check_base_url, key_from_env
from batchgen.errors import EXIT_ABORTED, EXIT_OK

if TYPE_CHECKING:
    import aiohttp

    from batchgen.catalogue import Catalogue
    from batchgen.models import Outcome

#: The prompt of the one paid call: small, plain, unlikely to be refused.
PROBE_PROMPT = "A plain light grey square, nothing else."
#: The key the in-process simulator is given with --sim and no key in the environment.
SIM_KEY = "sim-check-key"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the main CLI."""
    p = subparsers.add_parser(
        "check",
        help="pre-flight: key, model and image quota, in seconds (exit 0 or 3)",
        description="Check a set-up before a run: the key is present and valid, the model is "
        "served, and the key has image quota (one real image of the cheapest kind, announced "
        "before it is spent; --no-spend skips it).",
    )
    p.add_argument("--model", default=RunConfig.model, help="model to check (default: %(default)s)")
    p.add_argument("--base-url", default=None, help=f"API root (default {RunConfig.base_url})")
    p.add_argument("--sim", action="store_true", help="check against the built-in simulator")
    p.add_argument("--no-spend", action="store_true", help="skip the one paid image call")
    p.add_argument("--auth", choices=("header", "bearer"), default=RunConfig.auth,
                   help="key as x-goog-api-key (header) or Authorization: Bearer")  # fmt: skip
    p.add_argument("--models", type=Path, default=None, metavar="FILE",
                   help="a model catalogue file merged over the built-in one")  # fmt: skip
    p.add_argument("--allow-insecure-http", action="store_true",
                   help="allow a plain http:// base URL to a non-loopback host")  # fmt: skip
    p.add_argument("--timeout", type=float, default=RunConfig.timeout, help="seconds per call")
    p.set_defaults(func=cmd_check)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def cmd_check(args: argparse.Namespace) -> int:
    from batchgen.catalogue import load_catalogue

    catalogue = load_catalogue(args.models)
    key = key_from_env()
    if key is None and args.sim:
        key = Secret(SIM_KEY)
    base = args.base_url or os.environ.get("GEMINI_BASE_URL") or RunConfig.base_url
    if not args.sim:
        base = check_base_url(base, allow_insecure=args.allow_insecure_http)
    config = RunConfig(
        out=Path("."), api_key=key, base_url=base, auth=args.auth, model=args.model,
        timeout=args.timeout, models_file=args.models,
    )  # fmt: skip
    passed = asyncio.run(_run(config, catalogue, sim=args.sim, spend=not args.no_spend))
    return EXIT_OK if passed else EXIT_ABORTED


def _say(result: Result) -> bool:
    print(result.line(), flush=True)
    return result.ok


async def _run(config: RunConfig, catalogue: Catalogue, *, sim: bool, spend: bool) -> bool:
    if not _say(_key_present(config)):
        return False
    import aiohttp

    async with (
        _endpoint(config, sim) as cfg,
        aiohttp.ClientSession(trust_env=False) as session,
    ):
        key_ok, model_ok = await _model_served(session, cfg, catalogue)
        if not (_say(key_ok) and _say(model_ok)):
            return False
        if not spend:
            return _say(Result("image quota", True, "skipped (--no-spend)"))
        print(_spend_notice(cfg, catalogue), flush=True)
        return _say(await _image_quota(session, cfg, catalogue))


@asynccontextmanager
async def _endpoint(config: RunConfig, sim: bool) -> AsyncIterator[RunConfig]:
    if not sim:
        yield config
        return
    from batchgen.sim import SimConfig, Simulator

    async with Simulator(SimConfig(models_file=config.models_file)) as server:
        yield replace(config, base_url=server.base_url)


def _key_present(config: RunConfig) -> Result:
    if config.api_key is None:
        return Result("key", False, "no API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)")
    return Result("key", True, "present (GEMINI_API_KEY or GOOGLE_API_KEY)")


def _headers(config: RunConfig) -> dict[str, str]:
    return {"Content-Type": "application/json", **config.auth_headers()}


async def _model_served(
    session: aiohttp.ClientSession, config: RunConfig, catalogue: Catalogue
) -> tuple[Result, Result]:
    """The key's and the model's checks, from one ``GET models/{id}``."""
    import aiohttp

    from batchgen.jobs.models_check import gone_message
    from batchgen.output.client import classify

    url = f"{config.base_url}/v1beta/models/{config.model}"
    try:
        async with session.get(
            url,
            headers=_headers(config),
            timeout=aiohttp.ClientTimeout(total=config.request_timeout),
        ) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = f"cannot reach {config.base_url} ({type(exc).__name__})"
        return Result("key valid", False, detail), Result("model", False, "not checked")
    outcome = classify(status, {}, body)
    message = _message(config, outcome)
    if status == 404:
        gone = gone_message(catalogue, config.model)
        return Result("key valid", True, "accepted"), Result("model", False, f"HTTP 404: {gone}")
    if status != 200:  # 400 API_KEY_INVALID, 401, 403: the key (or its project)
        return Result("key valid", False, message), Result("model", False, "not checked")
    name = _display_name(body) or config.model
    return Result("key valid", True, "accepted"), Result(
        "model", True, f"{config.model} is served ({name})"
    )


def _display_name(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    name = doc.get("displayName") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


def _message(config: RunConfig, outcome: Outcome) -> str:
    text = f"HTTP {outcome.http_status} {outcome.reason or ''}".rstrip()
    detail = outcome.message
    if config.api_key is not None:
        detail = config.api_key.redact(detail)
    return f"{text}: {detail}" if detail else text


def _cheapest(config: RunConfig, catalogue: Catalogue) -> str | None:
    info = catalogue.get(config.model)
    if info is None or not info.sizes:
        return None
    return min(info.sizes, key=lambda s: info.image_price(s) or 0.0)


def _spend_notice(config: RunConfig, catalogue: Catalogue) -> str:
    size = _cheapest(config, catalogue)
    info = catalogue.get(config.model)
    price = info.image_price(size) if info is not None else None
    cost = (
        f"about ${price:.3f}"
        if price is not None
        else "at this model's price (not in the catalogue)"
    )
    kind = f"1:1 at image size {size}" if size else "1:1 at the model's one size"
    return (
        f"..    image quota: spending at most one image to prove it: one {config.model} "
        f"text-to-image request, {kind}, {cost} (--no-spend skips this)"
    )


async def _image_quota(
    session: aiohttp.ClientSession, config: RunConfig, catalogue: Catalogue
) -> Result:
    from batchgen.models import Job, OutcomeKind
    from batchgen.output import client

    job = Job(
        id="check", prompt=PROBE_PROMPT, aspect_ratio="1:1", image_size=_cheapest(config, catalogue)
    )
    body = json.dumps(client.build_request(job, [])).encode()
    outcome = await client.send(
        session, config.endpoint(config.model), body, _headers(config),
        timeout_s=config.request_timeout, max_bytes=config.max_response_bytes,
    )  # fmt: skip
    if outcome.kind is OutcomeKind.OK:
        return Result("image quota", True, f"an image came back ({len(outcome.images)} image)")
    if outcome.http_status == 429:
        if "limit: 0" in outcome.message:
            return Result(
                "image quota",
                False,
                "this key has no image quota (429, limit 0): a free-tier key cannot make "
                "images; enable billing on its project",
            )
        return Result("image quota", False, f"quota reached now ({outcome.quota_id or '429'})")
    return Result("image quota", False, _message(config, outcome))
