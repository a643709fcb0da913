"""files_api: a local file in, an uploaded ``files/…`` out; a results file in, its lines out.

The Files API as Batch Mode needs it: the resumable upload protocol in
chunks (`upload`), ``files.delete``, and the streamed download of a batch's
results (`download_lines`), split into lines here with a bounded buffer so
that a 20 GB results file never sits in memory. Every aiohttp and network
error is mapped to `WireError` at this boundary (`call`); the key travels in
the ``x-goog-api-key`` header only, and the upload session URL, which
authorises its chunks by itself, is never logged, stored or put in a message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from batchgen.config import RunConfig, Secret
from batchgen.errors import AbortError

log = logging.getLogger(__name__)

#: Bytes per upload chunk (a multiple of the protocol's 256 KiB granularity).
CHUNK_BYTES = 8 * 1024 * 1024
#: Tries of one chunk (each failure queries the offset and resumes from there).
CHUNK_TRIES = 5
#: Bytes read from a download at a time.
READ_BYTES = 1 << 20


class WireError(AbortError):
    """A Files or Batches API call that did not succeed. `status` is the HTTP
    status (None: no answer); `retryable` when trying again later may work
    (no answer, 408, 429, 5xx)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retryable(self) -> bool:
        s = self.status
        return s is None or s in (408, 429) or s >= 500


@dataclass(frozen=True)
class Api:
    """Where the API is and how to authenticate: built from the run's config."""

    base_url: str
    headers: Mapping[str, str]
    timeout_s: float
    key: Secret | None = None

    @classmethod
    def of(cls, config: RunConfig) -> Api:
        headers = {**config.extra_headers, **config.auth_headers()}
        return cls(config.base_url, headers, config.request_timeout, config.api_key)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def clean(self, text: str) -> str:
        return text if self.key is None else self.key.redact(text)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}


def _error_message(answer: Answer) -> str:
    error = answer.json().get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return answer.body[:200].decode("utf-8", "replace") or f"HTTP {answer.status}"


async def call(
    session: aiohttp.ClientSession,
    api: Api,
    method: str,
    url: str,
    *,
    what: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    auth: bool = True,
) -> Answer:
    """One call; a `WireError` unless it answers 2xx. `what` names the call in
    messages (never the URL: an upload session's URL is a credential)."""
    sent = {**(api.headers if auth else {}), **(headers or {})}
    try:
        async with session.request(
            method,
            url,
            data=body,
            headers=sent,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=api.timeout_s),
        ) as resp:
            answer = Answer(resp.status, dict(resp.headers), await resp.read())
    except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise WireError(f"{what}: no answer ({type(exc).__name__})") from exc
    if not 200 <= answer.status < 300:
        message = api.clean(_error_message(answer))
        raise WireError(f"{what}: HTTP {answer.status}: {message}", status=answer.status)
    return answer


@dataclass(frozen=True, slots=True)
class UploadedFile:
    name: str
    uri: str
    mime_type: str


async def upload(
    session: aiohttp.ClientSession,
    api: Api,
    path: Path,
    *,
    display_name: str,
    mime_type: str,
    chunk_bytes: int = CHUNK_BYTES,
) -> UploadedFile:
    """Upload `path` with the resumable protocol, `chunk_bytes` at a time. A chunk
    that fails is followed by a ``query`` of the session's offset and the upload
    goes on from there; the file is finalized with its last chunk only, so the
    API never holds a partial file under a name (a run killed mid-upload leaves
    an unfinished session, which expires, and uploads again)."""
    size = (await asyncio.to_thread(os.stat, path)).st_size
    start = await call(
        session,
        api,
        "POST",
        api.url("upload/v1beta/files"),
        what="upload start",
        body=json.dumps({"file": {"displayName": display_name}}).encode(),
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "X-Goog-Upload-Header-Content-Type": mime_type,
            "Content-Type": "application/json",
        },
    )
    session_url = {k.lower(): v for k, v in start.headers.items()}.get("x-goog-upload-url")
    if not session_url:
        raise WireError("upload start: the answer named no upload session")
    offset = 0
    with path.open("rb") as source:
        while True:
            source.seek(offset)
            chunk = source.read(chunk_bytes)
            last = offset + len(chunk) >= size
            answer = await _send_chunk(session, api, session_url, chunk, offset, last)
            if answer is None:
                offset = await _query_offset(session, api, session_url)
                continue
            if last:
                return _uploaded(answer, mime_type)
            offset += len(chunk)


async def _send_chunk(
    session: aiohttp.ClientSession,
    api: Api,
    url: str,
    chunk: bytes,
    offset: int,
    last: bool,
    tries: int = CHUNK_TRIES,
) -> Answer | None:
    """The chunk sent (its answer), or None when it failed and the offset must be asked."""
    command = "upload, finalize" if last else "upload"
    for attempt in range(tries):
        try:
            return await call(
                session,
                api,
                "POST",
                url,
                what="upload chunk",
                body=chunk,
                headers={"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)},
                auth=False,
            )
        except WireError as exc:
            if exc.status == 400:
                return None  # the offset is not the session's: ask it
            if not exc.retryable or attempt == tries - 1:
                raise
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
    return None


async def _query_offset(session: aiohttp.ClientSession, api: Api, url: str) -> int:
    answer = await call(
        session,
        api,
        "POST",
        url,
        what="upload query",
        headers={"X-Goog-Upload-Command": "query"},
        auth=False,
    )
    received = {k.lower(): v for k, v in answer.headers.items()}.get("x-goog-upload-size-received")
    try:
        return int(received or "")
    except ValueError:
        raise WireError("upload query: the answer named no offset") from None


def _uploaded(answer: Answer, mime_type: str) -> UploadedFile:
    doc = answer.json().get("file")
    if not isinstance(doc, dict) or not doc.get("name"):
        raise WireError("upload: the final answer named no file")
    name = str(doc["name"])
    return UploadedFile(name, str(doc.get("uri") or name), str(doc.get("mimeType") or mime_type))


async def delete(session: aiohttp.ClientSession, api: Api, name: str) -> bool:
    """Delete an uploaded or results file; False when it could not be (it expires anyway)."""
    try:
        await call(session, api, "DELETE", api.url(f"v1beta/{name}"), what="file delete")
    except WireError as exc:
        log.info("could not delete %s: %s", name, exc)
        return False
    return True


async def download_lines(
    session: aiohttp.ClientSession, api: Api, name: str, *, max_line: int
) -> AsyncGenerator[bytes, None]:
    """The lines of a results file as the body arrives, never the whole file:
    the buffer holds at most one line (`max_line` bytes, else `WireError`)."""
    url = api.url(f"download/v1beta/{name}:download?alt=media")
    try:
        async with session.get(
            url,
            headers=dict(api.headers),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=api.timeout_s),
        ) as resp:
            if resp.status != 200:
                answer = Answer(resp.status, dict(resp.headers), await resp.content.read(4096))
                message = api.clean(_error_message(answer))
                raise WireError(f"download: HTTP {resp.status}: {message}", status=resp.status)
            pending = bytearray()
            async for piece in resp.content.iter_chunked(READ_BYTES):
                pending += piece
                start = 0
                while (end := pending.find(b"\n", start)) >= 0:
                    if end > start:
                        yield bytes(pending[start:end])
                    start = end + 1
                del pending[:start]
                if len(pending) > max_line:
                    raise WireError(f"download: a line longer than {max_line} bytes")
            if pending.strip():
                yield bytes(pending)
    except (aiohttp.ClientError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise WireError(f"download: cut off ({type(exc).__name__})") from exc
