"""`Endpoint`: the bookkeeping the Files and Batches endpoints share with the
model endpoints.

Every request, whatever it asks, is counted in `SimStats` and written to the
log the same way (tests use them as the witness that nothing was uploaded or
created twice), and its key is checked and fingerprinted by the same rule.
That bookkeeping lives in `batchgen.sim.app.SimState`; this base class only
wraps a handler's answer in it, so `uploads` and `batches` stay about their
own API.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from batchgen.sim import wire
from batchgen.sim.exchange import Exchange

if TYPE_CHECKING:
    from batchgen.sim.app import SimState

Answer = Callable[[web.Request, Exchange], Awaitable[web.StreamResponse]]


class Endpoint:
    """Handlers of one API over the simulator's shared state."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    async def serve(
        self, request: web.Request, answer: Answer, *, keyed: bool = True
    ) -> web.StreamResponse:
        """Count, check the key (unless the URL itself authorises, as an upload
        session's does), answer, and record what happened."""
        state = self.state
        ex = Exchange(time.time(), time.monotonic(), request.method, request.path)
        ex.api_version = api_version(request.path)
        state.stats.total += 1
        state.stats.timestamps.append(ex.started)
        try:
            if keyed:
                denied = state._check_key(request, ex)
                if denied is not None:
                    return denied
            return await answer(request, ex)
        finally:
            state._record(ex)

    def json(self, ex: Exchange, outcome: str, doc: wire.Json, status: int = 200) -> web.Response:
        return self.state._json(ex, status, outcome, doc)

    def error(
        self, ex: Exchange, outcome: str, code: int, status: str, message: str
    ) -> web.Response:
        return self.state._error(ex, outcome, wire.error(code, status, message))


def api_version(path: str) -> str:
    """``v1beta`` or ``v1``, wherever the path names it (``/upload/v1/files``)."""
    return next((p for p in path.split("/", 3)[1:3] if p in ("v1beta", "v1")), "")


def origin(request: web.Request) -> str:
    """``http://HOST:PORT`` as the client reached us, for URIs in answers."""
    return f"{request.scheme}://{request.host}"


def page_bounds(page_size: str | None, page_token: str | None, default: int, most: int) -> range:
    """The items of one page of a list (``pageSize``, an opaque ``pageToken``);
    `ValueError` for a token or size that is not one."""
    size = int(page_size) if page_size else default
    start = int(page_token, 16) if page_token else 0
    if start < 0 or size < 0:
        raise ValueError(page_token)
    size = min(most, size or default)
    return range(start, start + size)
