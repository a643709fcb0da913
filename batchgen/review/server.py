"""server: an output folder in, a local review app out (`batchgen review OUT`).

A person approves, rejects and notes each image; every decision is written
to the folder's state at once (`store/reviews.py`), beside a run that may be
going on in the same folder: the app opens the store without the folder's
lock and writes one short transaction per decision, so the run is never
blocked; a decision the run's writer holds off is answered 503 and the page
sends it again, so nothing is lost.

Only its own user reaches it: bound to 127.0.0.1, and every route (the page,
its scripts, the API, each image) answers 403 unless the request carries the
token the command printed (`?token=`, compared in constant time). The page
takes no inline script (a Content-Security-Policy of `'self'` only) and sets
every user text with `textContent`: a prompt is data, never markup. Files are
served only from the folder's `images/`, `sizes/` and `thumbs/` (resolved,
symlinks included), and a job's reference images by job id and index, never
by a path the request names.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from batchgen.output.history import history
from batchgen.output.mime import sniff_mime
from batchgen.store import Store
from batchgen.store.open import open_state
from batchgen.store.reviews import VIEWS, ReviewFilter, ReviewItem, StaleImage

T = TypeVar("T")

HOST = "127.0.0.1"
TOKEN_PARAM = "token"
#: Top folders of OUT whose files the app serves.
SERVED = ("images", "sizes", "thumbs")
#: Jobs per page of the API, at most.
MAX_PAGE = 200
ASSETS = {
    "review.js": "text/javascript",
    "review.css": "text/css",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class Reviewer:
    """The store, held by one thread: SQLite calls (a page of a million rows, a
    write waiting on the run) never stall the event loop, and the connection
    is used by one thread at a time."""

    def __init__(self, out: Path, state: str | None = None) -> None:
        self.out = out
        self.root = out.resolve()
        self.store: Store = open_state(out, state, lock=False)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-store")

    def open(self) -> None:
        self.store.open()

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.store.close()


REVIEWER = web.AppKey("reviewer", Reviewer)
TOKEN = web.AppKey("token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token on every route, and the page's security headers on every answer."""
    given = request.query.get(TOKEN_PARAM, "")
    if not hmac.compare_digest(given.encode(), request.app[TOKEN].encode()):
        raise web.HTTPForbidden(text="forbidden: open the URL `batchgen review` printed\n")
    response = await handler(request)
    response.headers.update(HEADERS)
    return response


def _asset(name: str) -> bytes:
    return resources.files("batchgen.review").joinpath("assets", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    """The page, its script and style linked with the token (URL-safe characters only)."""
    page = _asset("review.html").replace(b"@TOKEN@", request.app[TOKEN].encode())
    return web.Response(body=page, content_type="text/html", charset="utf-8")


async def favicon(request: web.Request) -> web.Response:
    """None (asked for with the token, so the browser does not ask without it)."""
    return web.Response(status=204)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(body=_asset(name), content_type=ASSETS[name], charset="utf-8")


async def facets(request: web.Request) -> web.Response:
    reviewer = request.app[REVIEWER]
    found = await reviewer.call(reviewer.store.review_facets)
    return web.json_response(asdict(found))


def _item(out: Path, item: ReviewItem) -> dict[str, Any]:
    d = asdict(item)
    d["history"] = history(out, item.files[0]) if item.files else []
    return d


async def jobs(request: web.Request) -> web.Response:
    """A page of jobs in file order; `after` is the last `seq` of the page before."""
    q = request.query
    if q.get("view", "") not in VIEWS:
        raise web.HTTPBadRequest(text="unknown view")
    try:
        after = int(q.get("after", "0"))
        limit = max(1, min(int(q.get("limit", "60")), MAX_PAGE))
    except ValueError:
        raise web.HTTPBadRequest(text="after and limit are numbers") from None
    f = ReviewFilter(
        view=q.get("view", ""),
        status=q.get("status", ""),
        tag=q.get("tag", ""),
        model=q.get("model", ""),
    )
    reviewer = request.app[REVIEWER]

    def page() -> list[dict[str, Any]]:
        return [_item(reviewer.out, i) for i in reviewer.store.review_page(f, after, limit)]

    items = await reviewer.call(page)
    more = len(items) == limit
    return web.json_response({"items": items, "next": items[-1]["seq"] if more else None})


async def decide(request: web.Request) -> web.Response:
    """Approve, reject (decision) or clear (decision null) one job's image."""
    try:
        body = await request.json()
        job_id, decision = str(body["id"]), body.get("decision")
        note, version = str(body.get("note", "")), body.get("version")
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="expected {id, decision, note, version}") from None
    store = request.app[REVIEWER].store

    def write() -> dict[str, Any]:
        with store.transaction():
            if decision is None:
                store.clear_review([job_id])
                return {"id": job_id, "decision": None, "note": ""}
            review = store.set_review(job_id, decision, note, version=version)
        return {"id": job_id, "decision": review.decision.value, "note": review.note}

    try:
        return web.json_response(await request.app[REVIEWER].call(write))
    except KeyError:
        raise web.HTTPNotFound(text="no such job") from None
    except ValueError as exc:  # not a decision, or a job with no image yet
        raise web.HTTPBadRequest(text=str(exc)) from None
    except StaleImage:
        raise web.HTTPConflict(text="the image changed since the page showed it") from None
    except sqlite3.OperationalError:
        # The run's writer holds the state (its planning pass): the page retries.
        raise web.HTTPServiceUnavailable(text="the state is busy; retrying") from None


def _image_response(path: Path) -> web.StreamResponse:
    """An image file as its bytes say it is; anything else is not served."""
    try:
        with path.open("rb") as fh:
            mime = sniff_mime(fh.read(16))
    except OSError:
        raise web.HTTPNotFound() from None
    if mime is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": mime})


async def file(request: web.Request) -> web.StreamResponse:
    """A file under OUT's `images/`, `sizes/` or `thumbs/`; nothing else, however named."""
    root = request.app[REVIEWER].root
    rel = request.match_info["path"]
    parts = rel.split("/")
    if parts[0] not in SERVED or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise web.HTTPNotFound()
    path = (root / rel).resolve()
    if not any(path.is_relative_to(root / top) for top in SERVED):
        raise web.HTTPNotFound()
    return _image_response(path)


async def reference(request: web.Request) -> web.StreamResponse:
    """Reference image `n` of a job, as its job file named it (an `@parent` is the
    parent's image): the request names a job and an index, never a path."""
    reviewer = request.app[REVIEWER]
    job_id = request.query.get("job", "")
    try:
        n = int(request.query.get("n", ""))
    except ValueError:
        raise web.HTTPNotFound() from None

    def where() -> Path | None:
        job = reviewer.store.job(job_id)
        if job is None or not 0 <= n < len(job.images):
            return None
        ref = job.images[n]
        if not ref.startswith("@"):
            return Path(ref)
        files = reviewer.store.parent_files(ref[1:])
        return reviewer.root / files[0] if files else None

    path = await reviewer.call(where)
    if path is None:
        raise web.HTTPNotFound()
    return _image_response(path)


def make_app(out: Path, token: str, state: str | None = None) -> web.Application:
    """The review app of `out` (its store opened on start-up, closed on clean-up)."""
    app = web.Application(middlewares=[guard])
    app[TOKEN] = token
    reviewer = Reviewer(out, state)
    reviewer.open()
    app[REVIEWER] = reviewer

    async def close(app: web.Application) -> None:
        reviewer.close()

    app.on_cleanup.append(close)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/assets/{name}", asset)
    app.router.add_get("/api/facets", facets)
    app.router.add_get("/api/jobs", jobs)
    app.router.add_post("/api/review", decide)
    app.router.add_get("/file/{path:.+}", file)
    app.router.add_get("/ref", reference)
    return app


def review_url(host: str, port: int, token: str) -> str:
    return f"http://{host}:{port}/?{TOKEN_PARAM}={token}"


async def serve(
    out: Path,
    *,
    port: int = 0,
    on_ready: Callable[[str], None] = print,
    state: str | None = None,
) -> None:
    """Serve the review app of `out` on 127.0.0.1 until cancelled (Ctrl-C) or
    SIGTERM; `on_ready` gets the URL with its token once the port is open."""
    token = secrets.token_urlsafe(24)
    runner = web.AppRunner(make_app(out, token, state), access_log=None)
    await runner.setup()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0][1]
        loop.add_signal_handler(signal.SIGTERM, stopped.set)
        on_ready(review_url(HOST, bound, token))
        await stopped.wait()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await runner.cleanup()
