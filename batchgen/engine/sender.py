"""sender: a model and a request body in, the answer's `Outcome` out.

The pool sends through a `Sender`, so that it can be driven without HTTP (its
tests script the outcomes). `http_sender` is the real one: one aiohttp POST
per call, the key in a header, the answer classified by the client.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import aiohttp

from batchgen.config import RunConfig
from batchgen.models import Outcome
from batchgen.output import client, spool
from batchgen.output.spool import Spooled
from batchgen.store import STATE_DIR

#: Under OUT/.batchgen: large answers' bodies while they are read (`output/spool.py`).
SPOOL_DIR = "spool"


class Sender(Protocol):
    """Sends one request; never raises for trouble on the way (it is an outcome).
    A large answer may come back `Spooled`: the pool parses it (`client.parse_spooled`)."""

    def __call__(self, model: str, body: bytes, /) -> Awaitable[Outcome | Spooled]: ...


def http_sender(session: aiohttp.ClientSession, config: RunConfig) -> Sender:
    """Requests to `config`'s endpoint over `session`. What a killed run left in
    the spool folder is removed here, before the first request."""
    headers = {
        "Content-Type": "application/json",
        **config.extra_headers,
        **config.auth_headers(),
    }
    folder = config.out / STATE_DIR / SPOOL_DIR
    spool.clear(folder)

    def send(model: str, body: bytes, /) -> Awaitable[Outcome | Spooled]:
        # Returns the client's coroutine itself: no extra frame per request.
        return client.send(
            session,
            config.endpoint(model),
            body,
            headers,
            timeout_s=config.request_timeout,
            max_bytes=config.max_response_bytes,
            spool_to=folder,
        )

    return send
