"""The simulator's resumable upload protocol on the wire (aiohttp, raw), and
what an upload is then good for, through the async SDK.

Edge cases are the real service's: a chunk at the wrong offset is refused
with the count to resume from, a finalised session takes no more bytes, an
unknown session is a 404, and a crashed uploader asks (``query``) how much
arrived and sends only the rest.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import types
from PIL import Image

from batchgen.sim import SIM_KEY, SimConfig, Simulator

KEY = "k-uploads"
MODEL = "gemini-2.5-flash-image"
STATUS = "X-Goog-Upload-Status"
RECEIVED = "X-Goog-Upload-Size-Received"


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    config = SimConfig(small_images=True, api_key=KEY, files_dir=tmp_path / "files")
    async with Simulator(config) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start(
    http: aiohttp.ClientSession, sim: Simulator, size: int, mime: str = "application/jsonl"
) -> str:
    headers = {
        "x-goog-api-key": KEY,
        "X-Goog-Upload-Protocol": "resumable",
        "X-Goog-Upload-Command": "start",
        "X-Goog-Upload-Header-Content-Length": str(size),
        "X-Goog-Upload-Header-Content-Type": mime,
    }
    body = {"file": {"displayName": "input"}}
    async with http.post(f"{sim.base_url}/upload/v1beta/files", headers=headers, json=body) as r:
        assert r.status == 200
        assert r.headers[STATUS] == "active"
        url = r.headers["X-Goog-Upload-URL"]
    assert url.startswith(sim.base_url + "/upload/v1beta/files?upload_id=")
    assert KEY not in url
    return url


async def send(
    http: aiohttp.ClientSession,
    url: str,
    command: str,
    offset: int | None = None,
    data: bytes = b"",
) -> tuple[int, dict[str, str], Any]:
    """One request to the session URL (no key: the URL authorises it)."""
    headers = {"X-Goog-Upload-Command": command}
    if offset is not None:
        headers["X-Goog-Upload-Offset"] = str(offset)
    async with http.post(url, headers=headers, data=data) as r:
        text = await r.text()
        return r.status, dict(r.headers), json.loads(text) if text else None


def jsonl(count: int) -> bytes:
    rows = [
        {"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"a lamp, view {i}"}]}]}}
        for i in range(count)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def test_a_crashed_upload_resumes_from_the_query(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    data = jsonl(50)
    half = len(data) // 2
    url = await start(http, sim, len(data))
    status, headers, _ = await send(http, url, "upload", 0, data[:half])
    assert (status, headers[STATUS], headers[RECEIVED]) == (200, "active", str(half))

    async with aiohttp.ClientSession() as after_the_crash:
        status, headers, _ = await send(after_the_crash, url, "query")
        assert (status, headers[STATUS], int(headers[RECEIVED])) == (200, "active", half)
        offset = int(headers[RECEIVED])
        status, headers, doc = await send(
            after_the_crash, url, "upload, finalize", offset, data[offset:]
        )
    assert (status, headers[STATUS]) == (200, "final")
    name = doc["file"]["name"]
    assert doc["file"]["sizeBytes"] == str(len(data))

    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.base_url + "/"))
    try:
        got = await client.aio.files.get(name=name)
        assert got.size_bytes == len(data)
        assert got.sha256_hash is not None
        assert base64.b64decode(got.sha256_hash).decode() == hashlib.sha256(data).hexdigest()
        job = await client.aio.batches.create(model=MODEL, src=name)
        assert job.name is not None
        sim.app[SIM_KEY].clock.advance(3600)
        done = await client.aio.batches.get(name=job.name)
        for _ in range(1000):  # a bounded poll: the lines finish on the loop we share
            if done.done:
                break
            done = await client.aio.batches.get(name=job.name)
        assert done.state == types.JobState.JOB_STATE_SUCCEEDED
        assert done.dest is not None
        assert done.dest.file_name is not None
        results = await client.aio.files.download(file=done.dest.file_name)
        assert len(results.splitlines()) == 50
    finally:
        await client.aio.aclose()
        client.close()


async def test_a_chunk_at_the_wrong_offset_is_refused(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = await start(http, sim, 30)
    await send(http, url, "upload", 0, b"0123456789")
    for offset in (5, 20):
        status, headers, doc = await send(http, url, "upload", offset, b"abcdefghij")
        assert (status, headers[STATUS], headers[RECEIVED]) == (400, "active", "10")
        assert doc["error"]["status"] == "INVALID_ARGUMENT"
    status, headers, _ = await send(http, url, "upload", None, b"x")
    assert status == 400
    status, headers, _ = await send(http, url, "query")
    assert headers[RECEIVED] == "10"


async def test_finalize_twice(sim: Simulator, http: aiohttp.ClientSession) -> None:
    url = await start(http, sim, 4)
    status, headers, first = await send(http, url, "upload, finalize", 0, b"abcd")
    assert (status, headers[STATUS]) == (200, "final")
    status, headers, doc = await send(http, url, "upload, finalize", 0, b"abcd")
    assert (status, headers[STATUS]) == (400, "final")
    assert doc["error"]["status"] == "FAILED_PRECONDITION"
    status, headers, again = await send(http, url, "query")
    assert (status, headers[STATUS], again) == (200, "final", first)
    assert sim.stats.by_outcome["upload_final"] == 1


async def test_an_unknown_or_cancelled_session_is_404(
    sim: Simulator, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    status, _, doc = await send(
        http, f"{sim.base_url}/upload/v1beta/files?upload_id=nope", "upload", 0, b"x"
    )
    assert (status, doc["error"]["status"]) == (404, "NOT_FOUND")
    url = await start(http, sim, 4)
    await send(http, url, "upload", 0, b"ab")
    status, headers, _ = await send(http, url, "cancel")
    assert (status, headers[STATUS]) == (200, "cancelled")
    status, _, _ = await send(http, url, "upload", 2, b"cd")
    assert status == 404
    assert list((tmp_path / "files").iterdir()) == []


async def test_sizes_must_match_what_was_announced(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    url = await start(http, sim, 10)
    status, headers, _ = await send(http, url, "upload", 0, b"x" * 11)
    assert (status, headers[STATUS]) == (400, "active")
    await send(http, url, "upload", 0, b"x" * 5)  # the refused chunk left nothing
    status, headers, doc = await send(http, url, "upload, finalize", 5, b"")
    assert (status, headers[STATUS], headers[RECEIVED]) == (400, "active", "5")
    assert "10 announced" in doc["error"]["message"]


async def test_only_resumable_uploads_and_the_start_needs_a_key(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    upload = f"{sim.base_url}/upload/v1beta/files"
    headers = {"x-goog-api-key": KEY, "X-Goog-Upload-Protocol": "multipart"}
    async with http.post(upload, headers=headers, data=b"x") as r:
        assert r.status == 400
    async with http.post(upload, headers={"X-Goog-Upload-Protocol": "resumable"}) as r:
        assert r.status == 400
        assert (await r.json())["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    recorded = [r.path for r in sim.stats.recent]
    assert recorded == ["/upload/v1beta/files"] * 2


async def test_a_line_may_reference_an_uploaded_image(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (48, 27), (10, 200, 30)).save(buf, "PNG")
    url = await start(http, sim, len(buf.getvalue()), "image/png")
    _, _, doc = await send(http, url, "upload, finalize", 0, buf.getvalue())
    photo = doc["file"]
    part = {"fileData": {"mimeType": "image/png", "fileUri": photo["uri"]}}
    body = {
        "batch": {
            "inputConfig": {
                "requests": {
                    "requests": [
                        {
                            "request": {"contents": [{"parts": [{"text": "pop"}, part]}]},
                            "metadata": {"key": "edit"},
                        }
                    ]
                }
            }
        }
    }
    headers = {"x-goog-api-key": KEY}
    create = f"{sim.base_url}/v1beta/models/{MODEL}:batchGenerateContent"
    async with http.post(create, headers=headers, json=body) as r:
        assert r.status == 200
        name = (await r.json())["name"]
    sim.app[SIM_KEY].clock.advance(3600)
    op: dict[str, Any] = {}
    for _ in range(1000):  # a bounded poll: the line finishes on the loop we share
        async with http.get(f"{sim.base_url}/v1beta/{name}", headers=headers) as r:
            op = await r.json()
        if op.get("done"):
            break
    (answer,) = op["response"]["inlinedResponses"]["inlinedResponses"]
    assert answer["metadata"] == {"key": "edit"}
    parts = answer["response"]["candidates"][0]["content"]["parts"]
    image = next(base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p)
    picture = Image.open(io.BytesIO(image)).convert("RGB")
    assert picture.size == (21, 12)  # the reference's 16:9 shape at 1/64 scale
    assert picture.getpixel((10, 6)) == (10, 200, 30)
