"""One request as the simulator sees it: who sent it, with which key, and when.

Kept apart from the handlers (`app`) so that the bookkeeping every endpoint
shares (the key's fingerprint and where it was found, the ``X-Server-Timeout``
deadline, the record that feeds `SimStats` and the log) reads in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import web


@lru_cache(maxsize=256)
def key_id(key: str | None) -> str:
    """A short, stable fingerprint so logs can tell keys apart without
    revealing them."""
    if not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(slots=True)
class Exchange:
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


def server_timeout(request: web.Request) -> float | None:
    """The SDK's ``X-Server-Timeout`` in seconds, if it sent one."""
    value = request.headers.get("X-Server-Timeout")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def extract_key(request: web.Request) -> tuple[str | None, str]:
    """The API key and where it came from: ``header``, ``bearer``, ``url`` or ``none``."""
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
