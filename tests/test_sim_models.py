"""Today's image models through the simulator, driven by real clients.

The official SDK (sync and async) and LiteLLM talk to the simulator as to
Google: every model at every size, thoughts and signatures, model listing,
token counting, streaming; and the simulator refuses what the real API
refuses. Expected sizes and limits come from the catalogue, as the
simulator's do, so a fact changes in one place.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from batchgen.catalogue import ModelInfo, load_catalogue
from batchgen.engine.runner import arun_files
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.sim.config import SMALL_IMAGE_DIVISOR
from tests.conftest import KEY, make_config, write_jobs

CATALOGUE = load_catalogue()
SERVED = [m.id for m in CATALOGUE.served()]
THINKING = [m.id for m in CATALOGUE.served() if m.thinking]
#: (model, imageSize or None) for every size each served model takes.
MODEL_SIZES = [(m.id, s) for m in CATALOGUE.served() for s in (*m.sizes, None)]
RPC = "type.googleapis.com/google.rpc."


def info(model: str) -> ModelInfo:
    found = CATALOGUE.get(model)
    assert found is not None
    return found


def small(size: tuple[int, int]) -> tuple[int, int]:
    """A catalogue size as the simulator draws it with ``small_images``."""
    return max(1, round(size[0] / SMALL_IMAGE_DIVISOR)), max(
        1, round(size[1] / SMALL_IMAGE_DIVISOR)
    )


def png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 36)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def config(
    ratio: str | None = None, size: str | None = None, **more: Any
) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=more.pop("modalities", ["TEXT", "IMAGE"]),
        image_config=types.ImageConfig(aspect_ratio=ratio, image_size=size),
        **more,
    )


def parts_of(response: types.GenerateContentResponse) -> list[types.Part]:
    assert response.candidates
    content = response.candidates[0].content
    assert content is not None
    return list(content.parts or [])


def final_image(response: types.GenerateContentResponse) -> tuple[bytes, types.Part]:
    """The first image part that is not a thought: the answer's output."""
    for part in parts_of(response):
        if part.inline_data and part.inline_data.data and not part.thought:
            return part.inline_data.data, part
    raise AssertionError("no final image")


def pixels(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(small_images=True, api_key="k")) as running:
        yield running


@pytest.fixture
async def aclient(sim: Simulator) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.base_url + "/"))
    try:
        yield client
    finally:
        await client.aio.aclose()
        client.close()


@pytest.fixture(scope="module")
def thread_sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(small_images=True, api_key="k")) as running:
        yield running


@pytest.fixture(scope="module")
def client(thread_sim: SimulatorThread) -> Iterator[genai.Client]:
    options = types.HttpOptions(base_url=thread_sim.base_url + "/", api_version="v1beta")
    client = genai.Client(api_key="k", http_options=options)
    try:
        yield client
    finally:
        client.close()


# -- generate_content: every model, every size ---------------------------------


@pytest.mark.parametrize(("model", "size"), MODEL_SIZES)
async def test_async_sdk_gets_each_model_at_each_size(
    aclient: genai.Client, model: str, size: str | None
) -> None:
    m = info(model)
    ratio = "16:9" if "16:9" in m.ratios else m.ratios[0]
    response = await aclient.aio.models.generate_content(
        model=model, contents="a watch on white", config=config(ratio, size)
    )
    data, part = final_image(response)
    expected = m.pixels(ratio, size)
    assert expected is not None
    assert pixels(data) == small(expected)
    assert response.model_version == model
    usage = response.usage_metadata
    assert usage is not None
    assert usage.candidates_tokens_details is not None
    image_tokens = [d.token_count for d in usage.candidates_tokens_details if d.modality == "IMAGE"]
    assert image_tokens == [m.image_tokens(size)]
    if m.thinking:
        assert part.thought_signature
        assert usage.thoughts_token_count is not None
        assert 200 <= usage.thoughts_token_count <= 250
        assert usage.total_token_count == (
            (usage.prompt_token_count or 0)
            + (usage.candidates_token_count or 0)
            + usage.thoughts_token_count
        )
    else:
        assert usage.thoughts_token_count is None
        assert not any(p.thought for p in parts_of(response))


@pytest.mark.parametrize("model", SERVED)
def test_sync_sdk_gets_every_ratio(client: genai.Client, model: str) -> None:
    m = info(model)
    for ratio in m.ratios:
        response = client.models.generate_content(
            model=model, contents=f"a {ratio} poster", config=config(ratio)
        )
        expected = m.pixels(ratio)
        assert expected is not None
        assert pixels(final_image(response)[0]) == small(expected), ratio


@pytest.mark.parametrize(
    ("model", "ratio", "size", "expected"),
    [
        ("gemini-3.1-flash-image", "16:9", "512", (688, 384)),
        ("gemini-3.1-flash-image", "1:8", "1K", (352, 2928)),
        ("gemini-nano-banana-2.1", "9:16", "2K", (1536, 2752)),
        ("gemini-3-pro-image", "1:1", "4K", (4096, 4096)),
        ("gemini-3.1-flash-lite-image", "21:9", None, (1584, 672)),
        ("gemini-2.5-flash-image", "21:9", None, (1536, 672)),
    ],
)
def test_full_size_answers_have_the_published_pixels(
    model: str, ratio: str, size: str | None, expected: tuple[int, int]
) -> None:
    with SimulatorThread(SimConfig(text_part=False)) as full:
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=full.base_url + "/")
        )
        try:
            response = client.models.generate_content(
                model=model, contents="a poster", config=config(ratio, size)
            )
        finally:
            client.close()
    assert pixels(final_image(response)[0]) == expected


# -- thinking models -----------------------------------------------------------


@pytest.mark.parametrize("model", THINKING)
def test_thinking_models_think_before_the_final_image(client: genai.Client, model: str) -> None:
    response = client.models.generate_content(model=model, contents="a lamp", config=config())
    parts = parts_of(response)
    thoughts = [p for p in parts if p.thought]
    assert thoughts[0].text  # thought text first
    drafts = [p for p in thoughts if p.inline_data]
    assert 1 <= len(drafts) <= 2
    assert parts.index(thoughts[-1]) < len(parts) - 2  # then the text, then the image
    data, final = final_image(response)
    assert final is parts[-1]
    assert final.thought_signature
    kind = Image.open(io.BytesIO(data)).format
    assert final.inline_data is not None
    assert final.inline_data.mime_type == "image/png"
    assert kind == ("JPEG" if info(model).jpeg_as_png else "PNG")  # 3 Pro: JPEG labelled PNG
    assert response.text == "Here is the image you asked for."  # thoughts left out


def test_a_replayed_model_turn_needs_its_signature(client: genai.Client) -> None:
    model = "gemini-3.1-flash-image"
    first = client.models.generate_content(model=model, contents="a red lamp", config=config())
    assert first.candidates
    turn = first.candidates[0].content
    assert turn is not None
    history: list[types.Content] = [
        types.Content(role="user", parts=[types.Part.from_text(text="a red lamp")]),
        turn,
        types.Content(role="user", parts=[types.Part.from_text(text="now make it blue")]),
    ]
    again = client.models.generate_content(model=model, contents=history, config=config())
    assert pixels(final_image(again)[0]) == small((1024, 1024))
    unsigned = turn.model_copy(
        update={
            "parts": [p.model_copy(update={"thought_signature": None}) for p in turn.parts or []]
        }
    )
    history[1] = unsigned
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=model, contents=history, config=config())
    assert caught.value.code == 400
    position = next(
        i for i, p in enumerate(unsigned.parts or []) if p.inline_data and not p.thought
    )
    position += 1  # 1-based, as the API counts
    assert (
        f"Image part is missing a thought_signature in content position 2, part position {position}"
        in str(caught.value)
    )


def test_text_only_modality_answers_text(client: genai.Client) -> None:
    for model in ("gemini-3-pro-image", "gemini-2.5-flash-image"):
        response = client.models.generate_content(
            model=model, contents="describe a lamp", config=config(modalities=["TEXT"])
        )
        assert not any(p.inline_data for p in parts_of(response))
        assert response.text


# -- models.list / models.get ----------------------------------------------------


def test_sync_list_and_get(client: genai.Client) -> None:
    listed = [m.name for m in client.models.list(config={"page_size": 2})]
    assert listed == [f"models/{m}" for m in SERVED]
    pro = client.models.get(model="gemini-3-pro-image")
    assert pro.display_name == "Nano Banana Pro"
    assert pro.thinking is True
    assert pro.input_token_limit == 65536
    assert "generateContent" in (pro.supported_actions or [])
    with pytest.raises(errors.ClientError) as caught:
        client.models.get(model="gemini-3-pro-image-preview")
    assert caught.value.code == 404


async def test_async_list_and_get(aclient: genai.Client, sim: Simulator) -> None:
    pager = await aclient.aio.models.list(config={"page_size": 3})
    names = [m.name async for m in pager]
    assert names == [f"models/{m}" for m in SERVED]
    legacy = await aclient.aio.models.get(model="gemini-2.5-flash-image")
    assert legacy.display_name == "Nano Banana"
    assert not legacy.thinking
    assert sim.stats.by_outcome["models"] == 2  # two pages of three
    assert sim.stats.by_outcome["model"] == 1


async def test_unknown_model_get_is_json_not_html(sim: Simulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            sim.base_url + "/v1beta/models/gemini-9-image", headers={"x-goog-api-key": "k"}
        ) as resp,
    ):
        assert resp.status == 404
        assert resp.content_type == "application/json"
        doc = await resp.json()
    assert doc["error"]["status"] == "NOT_FOUND"


# -- count_tokens -----------------------------------------------------------------


def test_sync_count_tokens(client: genai.Client) -> None:
    counted = client.models.count_tokens(model="gemini-3.1-flash-image", contents="a" * 40)
    assert counted.total_tokens == 10
    contents: list[types.PartUnionDict] = [
        "a" * 40,
        types.Part.from_bytes(data=png((1, 2, 3)), mime_type="image/png"),
    ]
    counted = client.models.count_tokens(model="gemini-3-pro-image", contents=contents)
    assert counted.total_tokens == 10 + 560  # 3 Pro bills 560 tokens per input image


async def test_async_count_tokens_is_not_a_generation(
    aclient: genai.Client, sim: Simulator
) -> None:
    counted = await aclient.aio.models.count_tokens(model="gemini-nano-banana-2.1", contents="abcd")
    assert counted.total_tokens == 1
    assert sim.stats.by_outcome == {"count_tokens": 1}


# -- generate_content_stream --------------------------------------------------------


def _check_stream(chunks: list[types.GenerateContentResponse], model: str) -> None:
    pieces = [p for c in chunks for p in parts_of(c)]
    finals = [p for p in pieces if p.inline_data and not p.thought]
    assert len(finals) == 1  # the image arrives whole, in one piece
    assert finals[0].inline_data is not None
    assert finals[0].inline_data.data
    assert pixels(finals[0].inline_data.data) == small(info(model).pixels("1:1", "2K") or (0, 0))
    assert chunks[-1].candidates
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.thoughts_token_count
    assert pieces[0].thought


def test_sync_stream(client: genai.Client, thread_sim: SimulatorThread) -> None:
    model = "gemini-3-pro-image"
    chunks = list(
        client.models.generate_content_stream(
            model=model, contents="a kettle", config=config("1:1", "2K")
        )
    )
    assert len(chunks) >= 4
    _check_stream(chunks, model)
    record = thread_sim.snapshot().recent[-1]
    assert record.path.endswith(":streamGenerateContent")


async def test_async_stream(aclient: genai.Client) -> None:
    model = "gemini-nano-banana-2.1"
    stream = await aclient.aio.models.generate_content_stream(
        model=model, contents="a kettle", config=config("1:1", "2K")
    )
    _check_stream([c async for c in stream], model)


async def test_stream_without_sse_is_a_json_array(sim: Simulator) -> None:
    body = {"contents": [{"parts": [{"text": "a cup"}]}]}
    url = sim.base_url + "/v1beta/models/gemini-3.1-flash-image:streamGenerateContent"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body, headers={"x-goog-api-key": "k"}) as resp:
            assert resp.content_type == "application/json"
            pieces = await resp.json()
        async with session.post(
            url + "?alt=sse", json=body, headers={"x-goog-api-key": "k"}
        ) as resp:
            assert resp.content_type == "text/event-stream"
            events = [
                json.loads(line[6:]) for line in (await resp.text()).split("\r\n\r\n") if line
            ]
    for piece in (*pieces, *events):
        assert piece.pop("responseId").startswith("sim-")  # one id per answer
    assert pieces == events
    assert "usageMetadata" in pieces[-1]
    assert all("usageMetadata" not in p for p in pieces[:-1])


# -- LiteLLM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    with pytest.MonkeyPatch.context() as env:
        # The bundled price list, not a download of the newest (there is no internet).
        env.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        return litellm


def _litellm_images(response: Any) -> list[bytes]:
    message = response.choices[0].message
    urls = [image["image_url"]["url"] for image in message.images or []]
    assert all(url.startswith("data:image/") for url in urls)
    return [base64.b64decode(url.split(",", 1)[1]) for url in urls]


def test_litellm_text_to_image(litellm: Any, thread_sim: SimulatorThread) -> None:
    response = litellm.completion(
        model="gemini/gemini-3-pro-image",
        api_base=thread_sim.base_url + "/v1beta",
        api_key="k",
        messages=[{"role": "user", "content": "a red watch on white"}],
        modalities=["image", "text"],
    )
    images = _litellm_images(response)
    final = images[-1]  # LiteLLM keeps thought drafts too; the final image comes last
    assert Image.open(io.BytesIO(final)).format == "JPEG"
    assert pixels(final) == small((1024, 1024))
    assert response.choices[0].message.content == "Here is the image you asked for."
    assert response.usage.completion_tokens_details.reasoning_tokens >= 200
    assert thread_sim.snapshot().recent[-1].key_source == "header"


def test_litellm_edit_with_an_input_image(litellm: Any, thread_sim: SimulatorThread) -> None:
    url = "data:image/png;base64," + base64.b64encode(png((10, 200, 30), (320, 180))).decode()
    response = litellm.completion(
        model="gemini/gemini-3.1-flash-image",
        api_base=thread_sim.base_url + "/v1beta",
        api_key="k",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "make it pop"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
        modalities=["image", "text"],
    )
    final = _litellm_images(response)[-1]
    assert pixels(final) == small((1376, 768))  # the input's 16:9 shape
    with Image.open(io.BytesIO(final)) as im:
        rgb = im.convert("RGB")
        assert rgb.getpixel((rgb.width // 2, rgb.height // 2)) == (10, 200, 30)
    record = thread_sim.snapshot().recent[-1]
    assert (record.model, record.images_in) == ("gemini-3.1-flash-image", 1)


# -- what the real API refuses ---------------------------------------------------------


def _body(
    *, images: int = 0, generation: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": "a vase"}]
    parts += [
        {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(png((9, 9, 9))).decode()}}
    ] * images
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    body["generationConfig"] = {"responseModalities": ["TEXT", "IMAGE"], **(generation or {})}
    return body | top


REFUSALS = [
    # (name, model, body, status, message fragment, fieldViolation field or None)
    ("unknown top-level field", "gemini-3-pro-image", _body(x=1), 400,
     'Unknown name "x": Cannot find field.', ""),
    ("unknown generation_config field", "gemini-3-pro-image", _body(generation={"x": 1}), 400,
     "Unknown name \"x\" at 'generation_config': Cannot find field.", "generation_config"),
    ("unknown image_config field", "gemini-3.1-flash-image",
     _body(generation={"imageConfig": {"resolution": "2K"}}), 400,
     "Unknown name \"resolution\" at 'generation_config.image_config'",
     "generation_config.image_config"),
    ("lowercase imageSize", "gemini-3-pro-image",
     _body(generation={"imageConfig": {"imageSize": "2k"}}), 400,
     "unsupported image size '2k'", None),
    ("no such imageSize", "gemini-3.1-flash-image",
     _body(generation={"imageConfig": {"imageSize": "9K"}}), 400,
     "unsupported image size '9K'", None),
    ("a size the model does not take", "gemini-3-pro-image",
     _body(generation={"imageConfig": {"imageSize": "512"}}), 400,
     "gemini-3-pro-image does not support image size '512'", None),
    ("2.5 Flash takes no imageSize", "gemini-2.5-flash-image",
     _body(generation={"imageConfig": {"imageSize": "1K"}}), 400,
     "does not support image size", None),
    ("a ratio the model does not take", "gemini-3-pro-image",
     _body(generation={"imageConfig": {"aspectRatio": "1:8"}}), 400,
     "unsupported aspect ratio '1:8'", None),
    ("too many references", "gemini-3.1-flash-image", _body(images=15), 400,
     "takes at most 14 input images; the request has 15", None),
    ("retired model", "gemini-3-pro-image-preview", _body(), 404,
     "models/gemini-3-pro-image-preview is not found for API version v1beta", None),
    ("unknown model", "gemini-9-ultra-image", _body(), 404,
     "models/gemini-9-ultra-image is not found", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "body", "status", "message", "field"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
async def test_refuses_what_the_real_api_refuses(
    sim: Simulator, model: str, body: dict[str, Any], status: int, message: str, field: str | None
) -> None:
    url = f"{sim.base_url}/v1beta/models/{model}:generateContent"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"x-goog-api-key": "k"}) as resp,
    ):
        assert resp.status == status
        doc = await resp.json()
    error = doc["error"]
    assert error["status"] == ("INVALID_ARGUMENT" if status == 400 else "NOT_FOUND")
    assert message in error["message"]
    violations = [d for d in error.get("details", []) if d["@type"] == RPC + "BadRequest"]
    if field is None:
        assert violations == []
    else:
        (violation,) = violations[0]["fieldViolations"]
        assert violation["description"] == error["message"]
        assert violation.get("field", "") == field
    assert sim.stats.ok == 0


def test_the_sdk_surfaces_a_refusal(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model="gemini-3-pro-image", contents="a vase", config=config(size="512")
        )
    assert caught.value.code == 400
    assert "does not support image size '512'" in str(caught.value)


# -- a whole run ------------------------------------------------------------------------


async def test_a_run_saves_final_images_only_under_their_real_type(tmp_path: Path) -> None:
    """3 Pro thinks (thought drafts in every answer) and labels JPEG as PNG:
    the run keeps one file per job, named for its bytes."""
    rows = [
        {"id": f"p{i}", "prompt": f"a pen, angle {i}", "model": "gemini-3-pro-image"}
        for i in range(3)
    ]
    rows.append({"id": "f", "prompt": "a pen", "model": "gemini-3.1-flash-image"})
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    async with Simulator(SimConfig(small_images=True, api_key=KEY)) as running:
        result = await arun_files([jobs], make_config(out, running.base_url))
        assert running.stats.ok == 4
    assert result.exit_code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "f.png",
        "p0.jpg",
        "p1.jpg",
        "p2.jpg",
    ]
    for name in ("p0.jpg", "f.png"):
        with Image.open(out / "images" / name) as im:
            assert im.size == small((1024, 1024))  # the final image, not a half-size draft
    report = json.loads((out / "report.json").read_text())
    assert {row["status"] for row in report["jobs"]} == {"done"}


def test_a_users_catalogue_file_changes_what_is_served(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        """
[pixels.mine]
"1K" = { "1:1" = "1000x1000", "2:1" = "1400x700" }
"2K" = { "1:1" = "2000x2000", "2:1" = "2800x1400" }

[models."gemini-4-image"]
nickname = "Nano Banana 4"
status = "preview"
image_sizes = ["1K", "2K"]
aspect_ratios = ["1:1", "2:1"]
pixels = "mine"
thinking = true
prices = { input = 1.0, image_output = 40.0 }
image_tokens = { "1K" = 1000, "2K" = 1500 }

[models."gemini-3.1-flash-lite-image"]
status = "retired"
replacement = "gemini-4-image"
""",
        encoding="utf-8",
    )
    with SimulatorThread(SimConfig(size_scale=0.1, models_file=models)) as custom:
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=custom.base_url + "/")
        )
        try:
            response = client.models.generate_content(
                model="gemini-4-image", contents="a kite", config=config("2:1", "2K")
            )
            names = [m.name for m in client.models.list()]
            with pytest.raises(errors.ClientError) as caught:
                client.models.generate_content(
                    model="gemini-3.1-flash-lite-image", contents="a kite"
                )
        finally:
            client.close()
    assert pixels(final_image(response)[0]) == (280, 140)
    assert response.usage_metadata is not None
    assert response.usage_metadata.thoughts_token_count
    assert "models/gemini-4-image" in names
    assert "models/gemini-3.1-flash-lite-image" not in names
    assert caught.value.code == 404
