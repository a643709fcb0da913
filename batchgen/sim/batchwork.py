"""A batch at work: its lines, each line's outcome, the results file.

Each line is answered by the live path's own rules, in one home: the body is
parsed and checked as a ``generateContent`` body is (`parse`, `served`), the
prompt's markers, the script and the fault table decide as for a live call
(`SimState._decide`, with the prompt counted in the same `SimStats`), and the
answer is the live answer (`Composer.success`, or `SimState._forced` for a
forced kind). What a line cannot be (a dropped connection, an HTML page) is
mapped to the error the batch service would record instead (`BATCH_KINDS`).
``fileData`` parts naming an uploaded file become that file's bytes.

Results go to disk as they come (``{"key", "response"}`` or ``{"key",
"error"}`` per line), in an order shuffled from the input's, as the API
promises none; input lines are read by their offsets, so memory holds eight
bytes per line, not the file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from array import array
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from aiohttp import web

from batchgen.catalogue import ModelInfo
from batchgen.sim import served, wire
from batchgen.sim.answers import dump
from batchgen.sim.exchange import Exchange
from batchgen.sim.faults import SpecError
from batchgen.sim.files import FileStore
from batchgen.sim.parse import BadRequest, parse_request

if TYPE_CHECKING:
    from batchgen.sim.app import SimState

#: Kinds that break HTTP or answer HTML, as a batch line records them.
BATCH_KINDS = {
    "reset": "503",
    "hang": "504",
    "redirect": "500",
    "nonjson": "500",
    "502": "503",
    "413": "400",
    "truncate": "ok",
    "slow": "ok",
}


def index_lines(path: Path) -> array[int]:
    """The byte offset of every non-blank line (run in a thread: files are big)."""
    offsets: array[int] = array("q")
    position = 0
    with path.open("rb") as source:
        for line in source:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


def read_line(source: IO[bytes], offset: int) -> bytes:
    source.seek(offset)
    return source.readline()


def line_error(code: int, status: str, message: str) -> wire.Json:
    return {"code": code, "message": message, "status": status}


class LineAnswerer:
    """Answers batch lines for one model with the simulator's live rules."""

    def __init__(self, state: SimState, store: FileStore, info: ModelInfo) -> None:
        self.state = state
        self.store = store
        self.info = info

    async def answer(self, request: Any) -> tuple[str, wire.Json]:
        """``("response", body)`` or ``("error", {code, message, status})``."""
        state = self.state
        try:
            if not isinstance(request, dict):
                raise BadRequest("* request: a GenerateContentRequest object is required\n")
            body = dump(self._with_files(request))
            parsed = parse_request(body, state._book.ratios)
            served.check(parsed, self.info)
        except BadRequest as exc:
            return "error", line_error(400, "INVALID_ARGUMENT", str(exc))
        occurrence = state.stats.count_prompt(parsed.prompt, fallback=state.stats.total)
        try:
            kind = state._decide(parsed.prompt, occurrence)
        except SpecError as exc:
            return "error", line_error(400, "INVALID_ARGUMENT", str(exc))
        kind = BATCH_KINDS.get(kind or "ok", kind or "ok")
        if kind == "ok":
            return "response", json.loads(state._compose.success(parsed, self.info))
        ex = Exchange(time.time(), time.monotonic(), "BATCH", "", model=self.info.id)
        # No kind left after BATCH_KINDS touches the request: there is none.
        answer = await state._forced(cast(web.Request, None), ex, kind, parsed, self.info)
        doc = json.loads(cast(bytes, cast(web.Response, answer).body))
        if answer.status == 200:
            return "response", doc
        return "error", {k: doc["error"][k] for k in ("code", "message", "status")}

    def _with_files(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request with each ``fileData`` part replaced by its file's bytes."""
        contents = request.get("contents")
        if not isinstance(contents, list) or not any(
            "fileData" in p or "file_data" in p
            for c in contents
            if isinstance(c, dict)
            for p in c.get("parts") or []
            if isinstance(p, dict)
        ):
            return request
        return {**request, "contents": [self._content(c) for c in contents]}

    def _content(self, content: Any) -> Any:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            return content
        return {**content, "parts": [self._part(p) for p in content["parts"]]}

    def _part(self, part: Any) -> Any:
        ref = part.get("fileData", part.get("file_data")) if isinstance(part, dict) else None
        if not isinstance(ref, dict):
            return part
        uri = str(ref.get("fileUri", ref.get("file_uri", "")))
        file_id = uri.rpartition("files/")[2].partition(":")[0].partition("?")[0]
        stored = self.store.get(file_id)
        if stored is None or stored.generated:
            raise BadRequest(f"* fileData.fileUri: file {uri} does not exist or has expired.\n")
        data = base64.b64encode(stored.path.read_bytes()).decode("ascii")
        mime = ref.get("mimeType", ref.get("mime_type")) or stored.mime_type
        return {"inlineData": {"mimeType": mime, "data": data}}


def parse_line(raw: bytes, number: int) -> tuple[Any, Any] | wire.Json:
    """``(key, request)`` of an input line, or the error recorded for it."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return line_error(400, "INVALID_ARGUMENT", f"Line {number} is not valid JSON.")
    if not isinstance(doc, dict) or "request" not in doc:
        return line_error(400, "INVALID_ARGUMENT", f"Line {number} has no request.")
    return doc.get("key"), doc["request"]


class ResultWriter:
    """The results file, written line by line and hashed as it goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out = path.open("wb")
        self._hash = hashlib.sha256()

    def write(self, key: Any, field: str, doc: wire.Json) -> None:
        line = dump({"key": key, field: doc} if key is not None else {field: doc}) + b"\n"
        self._out.write(line)
        self._hash.update(line)

    def close(self) -> bytes:
        self._out.close()
        return self._hash.digest()

    def discard(self) -> None:
        self._out.close()
        self.path.unlink(missing_ok=True)
