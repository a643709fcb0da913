"""The simulator on the wire: every marker kind, images, keys, models, errors.

Each test starts a real simulator on loopback and talks to it with aiohttp.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from batchgen.models import ASPECT_RATIOS
from batchgen.sim import SimConfig, Simulator

MODEL = "gemini-2.5-flash-image"
PATH = f"/v1beta/models/{MODEL}:generateContent"
RPC = "type.googleapis.com/google.rpc."
QUICK = aiohttp.ClientTimeout(total=0.5)


def request_body(
    prompt: str,
    *,
    images: tuple[bytes, ...] = (),
    ratio: str | None = None,
    modalities: list[str] | None = None,
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    for data in images:
        parts.append(
            {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}
        )
    config: dict[str, Any] = {"responseModalities": modalities or ["TEXT", "IMAGE"]}
    if ratio is not None:
        config["imageConfig"] = {"aspectRatio": ratio}
    return {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}


def png(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def decode(data_b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(data_b64)))
    img.load()
    return img


def image_parts(doc: dict[str, Any]) -> list[dict[str, str]]:
    parts = doc["candidates"][0]["content"].get("parts", [])
    return [p["inlineData"] for p in parts if "inlineData" in p]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimConfig(small_images=True, hang_seconds=30, slow_interval_s=0.05, huge_size=400_000)
    async with Simulator(config) as running:
        yield running


async def post(
    session: aiohttp.ClientSession,
    sim: Simulator,
    prompt: str = "a cat",
    *,
    path: str = PATH,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON or text)."""
    async with session.post(
        sim.base_url + path,
        json=request_body(prompt, **kwargs),
        headers=headers,
        allow_redirects=False,
    ) as resp:
        text = await resp.text()
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, ctype, json.loads(text) if "json" in ctype else text


# -- success -----------------------------------------------------------------


async def test_success_has_the_documented_shape(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    assert sim.base_url.startswith("http://127.0.0.1:")
    assert not sim.base_url.endswith("/")
    status, ctype, doc = await post(session, sim, "a cat on a mat")
    assert status == 200
    assert ctype.startswith("application/json")
    candidate = doc["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["index"] == 0
    assert candidate["content"]["role"] == "model"
    parts = candidate["content"]["parts"]
    assert "text" in parts[0]
    inline = parts[1]["inlineData"]
    assert inline["mimeType"] == "image/png"
    img = decode(inline["data"])
    assert img.format == "PNG"
    assert img.size == (16, 16)
    assert doc["usageMetadata"] == {
        "promptTokenCount": 4,  # 14 characters
        "candidatesTokenCount": 1290 + 8,  # the image and a 32-character text
        "totalTokenCount": 4 + 1298,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 4}],
        "candidatesTokensDetails": [
            {"modality": "TEXT", "tokenCount": 8},
            {"modality": "IMAGE", "tokenCount": 1290},
        ],
    }
    assert doc["modelVersion"] == MODEL
    assert doc["responseId"]


async def test_image_only_answer_has_no_text(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    _, _, doc = await post(session, sim, modalities=["IMAGE"])
    parts = doc["candidates"][0]["content"]["parts"]
    assert [list(p) for p in parts] == [["inlineData"]]
    assert doc["usageMetadata"]["candidatesTokenCount"] == 1290


async def test_v1_is_served_too(session: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, doc = await post(session, sim, path=f"/v1/models/{MODEL}:generateContent")
    assert status == 200
    assert image_parts(doc)


@pytest.mark.parametrize("version", ["v1beta", "v1"])
async def test_unknown_model_is_404(
    session: aiohttp.ClientSession, sim: Simulator, version: str
) -> None:
    path = f"/{version}/models/gemini-2.5-flash-image-preview:generateContent"
    status, _, doc = await post(session, sim, path=path)
    assert status == 404
    assert doc["error"]["status"] == "NOT_FOUND"
    assert doc["error"]["message"] == (
        f"models/gemini-2.5-flash-image-preview is not found for API version {version}, "
        "or is not supported for generateContent."
    )


async def test_unknown_path_is_a_front_end_404(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    async with session.get(sim.base_url + "/nowhere") as resp:
        assert resp.status == 404
        assert "text/html" in resp.headers["Content-Type"]
    assert sim.stats.by_outcome["not_found"] == 1


async def test_answers_are_deterministic(session: aiohttp.ClientSession, sim: Simulator) -> None:
    async def data(prompt: str, ratio: str | None = None) -> str:
        _, _, doc = await post(session, sim, prompt, ratio=ratio)
        return image_parts(doc)[0]["data"]

    first = await data("a red fox")
    assert await data("a red fox") == first
    assert await data("a blue fox") != first
    assert await data("a red fox", "1:1") != first  # the ratio is part of the request


@pytest.mark.parametrize("ratio", sorted(ASPECT_RATIOS))
async def test_aspect_ratio_sets_the_full_size(session: aiohttp.ClientSession, ratio: str) -> None:
    async with Simulator(SimConfig()) as full:
        status, _, doc = await post(session, full, ratio=ratio)
    assert status == 200
    assert decode(image_parts(doc)[0]["data"]).size == ASPECT_RATIOS[ratio]


async def test_default_size_is_square(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig()) as full:
        _, _, doc = await post(session, full)
    assert decode(image_parts(doc)[0]["data"]).size == (1024, 1024)


async def test_unknown_aspect_ratio_is_400(session: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, doc = await post(session, sim, ratio="7:3")
    assert status == 400
    assert doc["error"]["status"] == "INVALID_ARGUMENT"


async def test_noise_makes_realistic_file_sizes(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(noise=True)) as noisy:
        _, _, doc = await post(session, noisy)
    data = base64.b64decode(image_parts(doc)[0]["data"])
    assert 1_000_000 <= len(data) <= 1_500_000


async def test_large_answers_arrive_whole_with_their_length(
    session: aiohttp.ClientSession,
) -> None:
    """A 2048-px noisy answer (~6 MB) is written a slice at a time: the client
    still gets one JSON body of the declared length, equal to the answer the
    simulator composes for that request."""
    config = SimConfig(noise=True, size_scale=2)
    async with (
        Simulator(config) as big,
        session.post(big.base_url + PATH, json=request_body("a cat", ratio="1:1")) as resp,
    ):
        raw = await resp.read()
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert int(resp.headers["Content-Length"]) == len(raw)
    assert len(raw) > 4 * 1024 * 1024
    doc = json.loads(raw)
    assert decode(image_parts(doc)[0]["data"]).size == (2048, 2048)
    async with Simulator(config) as again:  # the same request, answered whole
        _, _, whole = await post(
            session, again, ratio="1:1", path=PATH.replace(":generate", ":streamGenerate")
        )
    streamed = [part for chunk in whole for part in image_parts(chunk)]
    assert streamed == image_parts(doc)


# -- edits -----------------------------------------------------------------


async def test_edit_output_carries_the_reference_colour(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    red, blue = (220, 20, 20), (20, 20, 220)
    outputs = []
    for colour in (red, blue):
        _, _, doc = await post(session, sim, "make it shine", images=(png(colour),), ratio="1:1")
        img = decode(image_parts(doc)[0]["data"]).convert("RGB")
        assert img.getpixel((8, 8)) == colour  # the middle band
        outputs.append(image_parts(doc)[0]["data"])
        assert doc["usageMetadata"]["promptTokenCount"] == 4 + 258
    assert outputs[0] != outputs[1]


async def test_edit_without_ratio_follows_the_input_shape(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    _, _, doc = await post(session, sim, "wider", images=(png((1, 2, 3), (160, 90)),))
    assert decode(image_parts(doc)[0]["data"]).size == (21, 12)  # 16:9 at 1/64 scale


async def test_snake_case_and_url_safe_base64_are_accepted(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    data = base64.urlsafe_b64encode(png((250, 250, 5))).decode().rstrip("=")
    body = {
        "contents": [
            {"parts": [{"text": "edit"}, {"inline_data": {"mime_type": "image/png", "data": data}}]}
        ],
        "generation_config": {"image_config": {"aspect_ratio": "1:1"}},
    }
    async with session.post(sim.base_url + PATH, json=body) as resp:
        assert resp.status == 200
        doc = await resp.json()
    img = decode(image_parts(doc)[0]["data"]).convert("RGB")
    assert img.getpixel((8, 8)) == (250, 250, 5)


# -- bad requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"generationConfig": {}}', b'{"contents": [{"parts": [{"inlineData": '
     b'{"mimeType": "image/png", "data": "***"}}]}]}'],
)  # fmt: skip
async def test_malformed_bodies_are_400(
    session: aiohttp.ClientSession, sim: Simulator, raw: bytes
) -> None:
    async with session.post(sim.base_url + PATH, data=raw) as resp:
        assert resp.status == 400
        doc = await resp.json()
    assert doc["error"]["status"] == "INVALID_ARGUMENT"
    assert doc["error"]["code"] == 400


async def test_oversized_body_is_413_html(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, max_body_bytes=10_000)) as small:
        body = request_body("big", images=(b"x" * 20_000,))
        async with session.post(small.base_url + PATH, json=body) as resp:
            assert resp.status == 413
            assert "text/html" in resp.headers["Content-Type"]
            assert "413" in await resp.text()
        assert small.stats.by_outcome["too_large"] == 1


# -- keys --------------------------------------------------------------------


async def test_key_checking(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimConfig(small_images=True, api_key="right")) as keyed:
        ok_header = await post(session, keyed, headers={"x-goog-api-key": "right"})
        ok_bearer = await post(session, keyed, headers={"Authorization": "Bearer right"})
        wrong = await post(session, keyed, headers={"x-goog-api-key": "wrong"})
        missing = await post(session, keyed)
        in_url = await post(session, keyed, path=PATH + "?key=right")
        stats = keyed.stats
    assert ok_header[0] == ok_bearer[0] == in_url[0] == 200
    for status, _, doc in (wrong, missing):
        assert status == 400
        error = doc["error"]
        assert error["status"] == "INVALID_ARGUMENT"
        assert error["message"] == "API key not valid. Please pass a valid API key."
        info = [d for d in error["details"] if d["@type"] == RPC + "ErrorInfo"]
        assert info[0]["reason"] == "API_KEY_INVALID"
        assert info[0]["domain"] == "googleapis.com"
    assert stats.key_in_url == 1
    assert stats.by_key == {"right": 3, "wrong": 1, "": 1}
    assert stats.by_outcome["badkey"] == 2


# -- forced outcomes ---------------------------------------------------------


def _details(doc: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [d for d in doc["error"].get("details", []) if d["@type"] == RPC + kind]


async def test_marker_429_shapes(session: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, doc = await post(session, sim, "x [[sim:429]]")
    assert status == 429
    assert doc["error"]["status"] == "RESOURCE_EXHAUSTED"
    violation = _details(doc, "QuotaFailure")[0]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
    assert {"quotaMetric", "quotaDimensions", "quotaValue"} <= set(violation)
    assert _details(doc, "RetryInfo")[0]["retryDelay"] == "1s"

    _, _, doc = await post(session, sim, "x [[sim:429-nodelay]]")
    assert _details(doc, "QuotaFailure")
    assert not _details(doc, "RetryInfo")

    _, _, doc = await post(session, sim, "x [[sim:429-delay=2.5]]")
    assert _details(doc, "RetryInfo")[0]["retryDelay"] == "2.5s"

    status, _, doc = await post(session, sim, "x [[sim:daily]]")
    assert status == 429
    violation = _details(doc, "QuotaFailure")[0]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
    assert float(_details(doc, "RetryInfo")[0]["retryDelay"][:-1]) >= 3600


@pytest.mark.parametrize(
    ("kind", "code", "status", "message"),
    [
        ("500", 500, "INTERNAL", None),
        ("503", 503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        ("504", 504, "DEADLINE_EXCEEDED", None),
        ("400", 400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
        ("401", 401, "UNAUTHENTICATED", None),
        ("403", 403, "PERMISSION_DENIED", None),
        ("404", 404, "NOT_FOUND", None),
        ("badkey", 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
    ],
)
async def test_marker_json_errors(
    session: aiohttp.ClientSession,
    sim: Simulator,
    kind: str,
    code: int,
    status: str,
    message: str | None,
) -> None:
    got, ctype, doc = await post(session, sim, f"x [[sim:{kind}]]")
    assert got == code
    assert ctype.startswith("application/json")
    assert doc["error"]["code"] == code
    assert doc["error"]["status"] == status
    if message is not None:
        assert doc["error"]["message"] == message
    if kind == "badkey":
        assert _details(doc, "ErrorInfo")[0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(("kind", "code"), [("413", 413), ("502", 502), ("nonjson", 200)])
async def test_marker_html_answers(
    session: aiohttp.ClientSession, sim: Simulator, kind: str, code: int
) -> None:
    got, ctype, text = await post(session, sim, f"x [[sim:{kind}]]")
    assert got == code
    assert ctype.startswith("text/html")
    assert "<html" in text
    if kind == "nonjson":
        assert text == "<html>Bad gateway</html>"


async def test_marker_content_outcomes(session: aiohttp.ClientSession, sim: Simulator) -> None:
    _, _, doc = await post(session, sim, "x [[sim:text]]")
    candidate = doc["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"] == [
        {"text": "I can't create images of that, but here's a description..."}
    ]

    _, _, doc = await post(session, sim, "x [[sim:empty]]")
    assert doc["candidates"] == []
    assert "promptFeedback" not in doc

    _, _, doc = await post(session, sim, "x [[sim:noimage]]")
    assert doc["candidates"][0]["finishReason"] == "NO_IMAGE"
    assert "parts" not in doc["candidates"][0]["content"]

    for kind, reason in (("block", "SAFETY"), ("block-prohibited", "PROHIBITED_CONTENT")):
        _, _, doc = await post(session, sim, f"x [[sim:{kind}]]")
        assert "candidates" not in doc
        assert doc["promptFeedback"] == {"blockReason": reason}
        assert "candidatesTokenCount" not in doc["usageMetadata"]

    _, _, doc = await post(session, sim, "x [[sim:imagesafety]]")
    candidate = doc["candidates"][0]
    assert candidate["finishReason"] == "IMAGE_SAFETY"
    assert candidate["content"] == {"role": "model"}
    assert candidate["finishMessage"]


async def test_marker_image_variants(session: aiohttp.ClientSession, sim: Simulator) -> None:
    _, _, doc = await post(session, sim, "x [[sim:multi]]")
    pair = image_parts(doc)
    assert len(pair) == 2
    assert pair[0]["data"] != pair[1]["data"]
    assert all(decode(p["data"]).format == "PNG" for p in pair)
    assert doc["usageMetadata"]["candidatesTokenCount"] >= 2 * 1290

    _, _, doc = await post(session, sim, "x [[sim:jpeg]]")
    (jpeg,) = image_parts(doc)
    assert jpeg["mimeType"] == "image/jpeg"
    assert decode(jpeg["data"]).format == "JPEG"

    _, _, doc = await post(session, sim, "x [[sim:huge]]")
    assert len(image_parts(doc)[0]["data"]) >= 390_000  # huge_size in this fixture

    _, _, doc = await post(session, sim, "x [[sim:badb64]]")
    with pytest.raises(binascii.Error, match=r"base64|Invalid|padding"):
        base64.b64decode(image_parts(doc)[0]["data"], validate=True)

    _, _, doc = await post(session, sim, "x [[sim:notimage]]")
    (fake,) = image_parts(doc)
    assert fake["mimeType"] == "image/png"
    with pytest.raises(OSError, match="cannot identify"):
        decode(fake["data"])


async def test_marker_redirect(session: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, _ = await post(session, sim, "x [[sim:redirect]]")
    assert status == 302
    async with session.post(
        sim.base_url + PATH, json=request_body("x [[sim:redirect]]"), allow_redirects=False
    ) as resp:
        assert resp.headers["Location"] == "http://127.0.0.2:1/elsewhere"


async def test_marker_reset_drops_the_connection(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, sim, "x [[sim:reset]]")
    assert sim.stats.by_outcome["reset"] == 1
    assert sim.stats.by_status[None] == 1


async def test_marker_truncate_cuts_the_body(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(session, sim, "x [[sim:truncate]]")


@pytest.mark.parametrize("kind", ["hang", "slow"])
async def test_marker_hang_and_slow_time_out(
    session: aiohttp.ClientSession, sim: Simulator, kind: str
) -> None:
    with pytest.raises(TimeoutError):
        async with session.post(
            sim.base_url + PATH, json=request_body(f"x [[sim:{kind}]]"), timeout=QUICK
        ) as resp:
            await resp.read()


async def test_marker_counts_then_succeeds(session: aiohttp.ClientSession, sim: Simulator) -> None:
    statuses = [(await post(session, sim, "p [[sim:500x2]]"))[0] for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    chain = [(await post(session, sim, "q [[sim:503x1]][[sim:429x2]]"))[0] for _ in range(5)]
    assert chain == [503, 429, 429, 200, 200]
    # counting is per exact prompt text
    assert (await post(session, sim, "p [[sim:500x2]] "))[0] == 500
    assert sim.stats.by_prompt["p [[sim:500x2]]"] == 4
    assert sim.stats.forced == {"500": 3, "503": 1, "429": 2}


async def test_unknown_marker_is_a_400(session: aiohttp.ClientSession, sim: Simulator) -> None:
    status, _, doc = await post(session, sim, "x [[sim:teapot]]")
    assert status == 400
    assert "teapot" in doc["error"]["message"]


async def test_script_answers_in_order(session: aiohttp.ClientSession) -> None:
    config = SimConfig(small_images=True, script={"fox": ["503", "text"]})
    async with Simulator(config) as scripted:
        statuses = [(await post(session, scripted, "a fox"))[0] for _ in range(3)]
        _, _, doc = await post(session, scripted, "another fox")
    assert statuses == [503, 200, 200]
    assert image_parts(doc)


async def test_transport_tricks_log_no_server_errors(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aiohttp")
    quick = aiohttp.ClientTimeout(total=0.2)
    async with Simulator(SimConfig(small_images=True, slow_interval_s=0.005)) as sim:
        for kind in ("reset", "truncate", "slow", "hang", "slow", "reset", "slow"):
            with pytest.raises((aiohttp.ClientError, TimeoutError)):
                async with session.post(
                    sim.base_url + PATH, json=request_body(f"x [[sim:{kind}]]"), timeout=quick
                ) as resp:
                    await resp.read()
        # A slow answer's next byte (5 ms later) meets the closed connection.
        await asyncio.sleep(0.05)
        status, _, _ = await post(session, sim)  # still serving
    assert status == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_stats_endpoint_for_other_processes(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    await post(session, sim, "x [[sim:500]]")
    async with session.get(sim.base_url + "/_sim/stats") as resp:
        doc = await resp.json()
    assert doc["total"] == 1
    assert doc["by_status"] == {"500": 1}
    assert doc["forced"] == {"500": 1}
