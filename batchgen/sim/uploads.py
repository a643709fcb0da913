"""The Files API on HTTP: resumable uploads, ``files/{id}``, list, delete, download.

The upload protocol is Google's resumable one, as the official SDK speaks it:
``POST /upload/{v}/files`` with ``X-Goog-Upload-Protocol: resumable`` and
``X-Goog-Upload-Command: start`` opens a session and answers its URL in
``X-Goog-Upload-URL`` (the URL authorises the chunks, so they carry no key);
chunks go there with ``X-Goog-Upload-Command: upload`` (the last ``upload,
finalize``) and ``X-Goog-Upload-Offset``, which must equal the bytes received
so far or the chunk is refused with 400 and the count to resume from; a
``query`` answers that count (``X-Goog-Upload-Size-Received``), or the
finished file; every answer says ``X-Goog-Upload-Status: active | final |
cancelled``. The bytes go to disk through `FileStore`.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from batchgen.sim import wire
from batchgen.sim.endpoint import Endpoint, origin, page_bounds
from batchgen.sim.exchange import Exchange
from batchgen.sim.files import FILE_ID_RE, FileError, FileStore, Session, StoredFile, not_found

STATUS = "X-Goog-Upload-Status"
RECEIVED = "X-Goog-Upload-Size-Received"
#: Chunks other than the last should be multiples of this (as Google asks).
GRANULARITY = 256 * 1024


def file_resource(stored: StoredFile, store: FileStore, base: str, version: str) -> wire.Json:
    """A ``File`` as ``files.get`` answers it (int64 as a string, RFC 3339 times)."""
    stamp = store.clock.timestamp
    doc: wire.Json = {
        "name": f"files/{stored.id}",
        "mimeType": stored.mime_type,
        "sizeBytes": str(stored.size),
        "createTime": stamp(stored.created),
        "updateTime": stamp(stored.created),
        "expirationTime": stamp(stored.expires),
        "sha256Hash": base64.b64encode(stored.sha256.hex().encode()).decode(),
        "uri": f"{base}/{version}/files/{stored.id}",
        "state": "ACTIVE",
        "source": "GENERATED" if stored.generated else "UPLOADED",
    }
    if stored.display_name:
        doc["displayName"] = stored.display_name
    if stored.generated:
        doc["downloadUri"] = f"{base}/download/{version}/files/{stored.id}:download?alt=media"
    return doc


class FilesApi(Endpoint):
    """The handlers; `store` holds the files."""

    store: FileStore

    def bind(self, store: FileStore) -> FilesApi:
        self.store = store
        return self

    def _refused(
        self, ex: Exchange, exc: FileError, headers: dict[str, str] | None = None
    ) -> web.Response:
        response = self.error(ex, "file_refused", exc.code, exc.status, str(exc))
        response.headers.update(headers or {})
        return response

    # -- uploads -------------------------------------------------------------

    async def handle_upload(self, request: web.Request) -> web.StreamResponse:
        if "upload_id" in request.query:
            return await self.serve(request, self._chunk, keyed=False)
        return await self.serve(request, self._start)

    async def _start(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        headers = request.headers
        if headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable" or (
            headers.get("X-Goog-Upload-Command", "").lower() != "start"
        ):
            await request.read()
            return self.error(
                ex, "bad_request", 400, "INVALID_ARGUMENT",
                "Only resumable uploads are supported: X-Goog-Upload-Protocol: resumable "
                "with X-Goog-Upload-Command: start.",
            )  # fmt: skip
        try:
            meta = _file_meta(await request.read())
            declared_text = headers.get("X-Goog-Upload-Header-Content-Length") or meta.get(
                "sizeBytes", meta.get("size_bytes")
            )
            declared = int(declared_text) if declared_text is not None else None
        except ValueError as exc:
            return self.error(ex, "bad_request", 400, "INVALID_ARGUMENT", str(exc))
        mime = (
            headers.get("X-Goog-Upload-Header-Content-Type")
            or meta.get("mimeType", meta.get("mime_type"))
            or "application/octet-stream"
        )
        display = meta.get("displayName", meta.get("display_name")) or ""
        try:
            session = self.store.start(str(display), str(mime), declared, meta.get("name"))
        except FileError as exc:
            return self._refused(ex, exc)
        url = (
            f"{origin(request)}/upload/{ex.api_version}/files"
            f"?upload_id={session.id}&upload_protocol=resumable"
        )
        response = self.json(ex, "upload_started", {})
        response.headers.update(
            {"X-Goog-Upload-URL": url, STATUS: "active",
             "X-Goog-Upload-Chunk-Granularity": str(GRANULARITY)}
        )  # fmt: skip
        return response

    async def _chunk(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        session = self.store.sessions.get(request.query["upload_id"])
        if session is None or session.cancelled:
            await _drain(request)
            return self.error(ex, "upload_unknown", 404, "NOT_FOUND", "Upload session not found.")
        commands = {
            c.strip().lower() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")
        }
        if "query" in commands:
            return self._status(request, ex, session, "upload_query")
        if "cancel" in commands:
            self.store.cancel(session)
            response = self.json(ex, "upload_cancelled", {})
            response.headers[STATUS] = "cancelled"
            return response
        if "upload" not in commands:
            await _drain(request)
            return self.error(
                ex, "bad_request", 400, "INVALID_ARGUMENT",
                "X-Goog-Upload-Command must be upload, upload, finalize, query or cancel.",
            )  # fmt: skip
        refusal = await self._receive(request, ex, session)
        if refusal is not None:
            return refusal
        if "finalize" in commands:
            try:
                self.store.finalize(session)
            except FileError as exc:
                return self._refused(ex, exc, self._progress(session))
        outcome = "upload_final" if session.file else "upload_chunk"
        return self._status(request, ex, session, outcome)

    async def _receive(
        self, request: web.Request, ex: Exchange, session: Session
    ) -> web.Response | None:
        """Append the chunk at its offset; an answer if it is refused."""
        if session.file is not None:
            await _drain(request)
            exc = FileError(400, "FAILED_PRECONDITION", "The upload has already been finalized.")
            return self._refused(ex, exc, {STATUS: "final"})
        try:
            offset = int(request.headers["X-Goog-Upload-Offset"])
        except (KeyError, ValueError):
            offset = -1
        if offset != session.received:
            await _drain(request)
            exc = FileError(
                400, "INVALID_ARGUMENT",
                f"Invalid request. The upload offset is {offset} byte(s), but "
                f"{session.received} byte(s) have been received: resume from there.",
            )  # fmt: skip
            return self._refused(ex, exc, self._progress(session))
        try:
            with session.path.open("ab") as out:
                async for piece in request.content.iter_chunked(1 << 16):
                    ex.bytes_in += len(piece)
                    self.store.append(session, out, piece)
        except FileError as exc:
            await _drain(request)
            return self._refused(ex, exc, self._progress(session))
        return None

    def _progress(self, session: Session) -> dict[str, str]:
        if session.file is not None:
            return {STATUS: "final"}
        return {STATUS: "active", RECEIVED: str(session.received)}

    def _status(
        self, request: web.Request, ex: Exchange, session: Session, outcome: str
    ) -> web.Response:
        """Where the session stands: the bytes received, or the finished file."""
        doc: wire.Json = {}
        if session.file is not None:
            resource = file_resource(session.file, self.store, origin(request), ex.api_version)
            doc = {"file": resource}
        response = self.json(ex, outcome, doc)
        response.headers.update(self._progress(session))
        return response

    # -- files ---------------------------------------------------------------

    async def handle_get(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._get)

    async def _get(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        file_id = request.match_info["id"]
        stored = self.store.get(file_id)
        # A batch's results file is download-only: ``files.get`` on it is a 400.
        if not FILE_ID_RE.match(file_id) or (stored is not None and stored.generated):
            return self.error(
                ex, "bad_request", 400, "INVALID_ARGUMENT",
                f"* GetFileRequest.name: files/{file_id} is not a valid file name: lowercase "
                "alphanumeric characters or dashes, at most 40.\n",
            )  # fmt: skip
        if stored is None:
            return self._refused(ex, not_found(file_id))
        return self.json(
            ex, "file", file_resource(stored, self.store, origin(request), ex.api_version)
        )

    async def handle_list(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._list)

    async def _list(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        files = [f for f in self.store.live() if not f.generated]
        try:
            span = page_bounds(
                request.query.get("pageSize"), request.query.get("pageToken"), 10, 100
            )
        except ValueError:
            return self.error(ex, "bad_request", 400, "INVALID_ARGUMENT", "Invalid page token.")
        base = origin(request)
        doc: wire.Json = {}
        if files[span.start : span.stop]:
            doc["files"] = [
                file_resource(f, self.store, base, ex.api_version)
                for f in files[span.start : span.stop]
            ]
        if span.stop < len(files):
            doc["nextPageToken"] = f"{span.stop:x}"
        return self.json(ex, "files", doc)

    async def handle_delete(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._delete)

    async def _delete(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        file_id = request.match_info["id"]
        if self.store.get(file_id) is None or not self.store.delete(file_id):
            return self._refused(ex, not_found(file_id))
        return self.json(ex, "file_deleted", {})

    async def handle_download(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, self._download)

    async def _download(self, request: web.Request, ex: Exchange) -> web.StreamResponse:
        file_id = request.match_info["id"]
        stored = self.store.get(file_id)
        if stored is None:
            return self._refused(ex, not_found(file_id))
        if not stored.generated:
            return self.error(
                ex, "bad_request", 400, "INVALID_ARGUMENT",
                "Only generated files can be downloaded; uploaded files can't be.",
            )  # fmt: skip
        if request.query.get("alt") != "media":
            return self.error(
                ex, "bad_request", 400, "INVALID_ARGUMENT", "Use alt=media to download."
            )
        ex.status, ex.outcome = 200, "file_download"
        return web.FileResponse(stored.path, headers={"Content-Type": stored.mime_type})


def _file_meta(body: bytes) -> dict[str, Any]:
    """The ``file`` object of a start request's body (empty is allowed)."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("Invalid JSON payload received.") from None
    meta = doc.get("file") if isinstance(doc, dict) else None
    return meta if isinstance(meta, dict) else {}


async def _drain(request: web.Request) -> None:
    """Read and drop a body we refuse, so the client reads our answer."""
    async for _ in request.content.iter_chunked(1 << 16):
        pass
