"""batch_api: Batch Mode's calls in, a typed `BatchInfo` out.

``batchGenerateContent`` (create), ``batches.get``, ``batches.list`` (every
page) and ``batches.cancel``. `parse_operation` is pure: it reads an
Operation as either spelling of the state names (``BATCH_STATE_*`` on the
wire, ``JOB_STATE_*`` from the SDK) and `batchStats`, whose counts are int64
strings with zero fields left out. Create is **not idempotent**: the engine
records its intent before calling it and looks the batch up by its display
name (`find`) before ever calling it again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from batchgen.output.files_api import Api, WireError, call

PENDING, RUNNING, SUCCEEDED = "PENDING", "RUNNING", "SUCCEEDED"
FAILED, CANCELLED, EXPIRED = "FAILED", "CANCELLED", "EXPIRED"
#: States after which a batch changes no more.
ENDED = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
#: The SDK's names for the same states.
_ALIASES = {"QUEUED": PENDING, "CANCELLING": RUNNING, "PAUSED": RUNNING}


def state_name(raw: Any) -> str:
    """``BATCH_STATE_RUNNING`` or ``JOB_STATE_RUNNING`` -> ``RUNNING``."""
    text = str(raw or "").upper()
    for prefix in ("BATCH_STATE_", "JOB_STATE_"):
        text = text.removeprefix(prefix)
    return _ALIASES.get(text, text or PENDING)


def batch_stats(raw: Any) -> dict[str, int]:
    """``batchStats`` as ints, every count present (zero fields are left out on the wire)."""
    stats = raw if isinstance(raw, dict) else {}
    out = {}
    for name in ("requestCount", "pendingRequestCount", "successfulRequestCount"):
        out[name] = _count(stats.get(name))
    out["failedRequestCount"] = _count(stats.get("failedRequestCount"))
    return out


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """One batch as the API shows it."""

    name: str
    display_name: str
    state: str
    stats: Mapping[str, int] = field(default_factory=dict)
    responses_file: str | None = None
    message: str = ""

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def parse_operation(doc: Mapping[str, Any]) -> BatchInfo:
    """An Operation (or a bare batch resource) as a `BatchInfo`."""
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, dict) else dict(doc)
    output = meta.get("output") or doc.get("response") or {}
    responses = output.get("responsesFile") if isinstance(output, dict) else None
    error = doc.get("error")
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    return BatchInfo(
        name=str(doc.get("name") or meta.get("name") or ""),
        display_name=str(meta.get("displayName") or ""),
        state=state_name(meta.get("state")),
        stats=batch_stats(meta.get("batchStats")),
        responses_file=str(responses) if responses else None,
        message=message,
    )


async def create(
    session: aiohttp.ClientSession, api: Api, model: str, display_name: str, file_name: str
) -> BatchInfo:
    body = {"batch": {"displayName": display_name, "inputConfig": {"fileName": file_name}}}
    answer = await call(
        session,
        api,
        "POST",
        api.url(f"v1beta/models/{quote(model, safe='-._')}:batchGenerateContent"),
        what="batch create",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    info = parse_operation(answer.json())
    if not info.name:
        raise WireError("batch create: the answer named no batch")
    return info


async def get(session: aiohttp.ClientSession, api: Api, name: str) -> BatchInfo:
    answer = await call(session, api, "GET", api.url(f"v1beta/{name}"), what="batch poll")
    return parse_operation(answer.json())


async def list_all(
    session: aiohttp.ClientSession, api: Api, page_size: int = 1000
) -> AsyncIterator[BatchInfo]:
    """Every batch of the project, page after page."""
    token = ""
    while True:
        query = f"pageSize={page_size}" + (f"&pageToken={quote(token)}" if token else "")
        answer = await call(
            session, api, "GET", api.url(f"v1beta/batches?{query}"), what="batch list"
        )
        doc = answer.json()
        for op in doc.get("operations") or doc.get("batches") or []:
            if isinstance(op, dict):
                yield parse_operation(op)
        token = str(doc.get("nextPageToken") or "")
        if not token:
            return


async def find(session: aiohttp.ClientSession, api: Api, names: set[str]) -> dict[str, BatchInfo]:
    """The batches whose display names are in `names` (all pages are read)."""
    found: dict[str, BatchInfo] = {}
    async for info in list_all(session, api):
        if info.display_name in names and info.display_name not in found:
            found[info.display_name] = info
    return found


async def cancel(session: aiohttp.ClientSession, api: Api, name: str) -> None:
    await call(session, api, "POST", api.url(f"v1beta/{name}:cancel"), what="batch cancel")
