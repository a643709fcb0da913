"""The official SDK (`google-genai`) talks to the simulator as to Google.

SDK 3.x posts to ``v1``, writes snake_case fields and URL-safe base64; this
keeps the simulator honest about all of it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from batchgen.sim import SimConfig, Simulator, SimulatorThread

MODEL = "gemini-2.5-flash-image"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(small_images=True, api_key="k")) as running:
        yield running


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[genai.Client]:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.base_url + "/"))
    try:
        yield client
    finally:
        await client.aio.aclose()
        client.close()


CONFIG = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"])


def _images(response: types.GenerateContentResponse) -> list[bytes]:
    assert response.candidates
    content = response.candidates[0].content
    assert content is not None
    return [p.inline_data.data for p in content.parts or [] if p.inline_data and p.inline_data.data]


async def test_sdk_gets_an_image(client: genai.Client, sim: Simulator) -> None:
    response = await client.aio.models.generate_content(
        model=MODEL, contents="a cat", config=CONFIG
    )
    (data,) = _images(response)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 1290 + 8
    record = sim.stats.recent[-1]
    assert record.key_source == "header"
    assert sim.stats.key_in_url == 0


async def test_sdk_edit_with_reference_image(client: genai.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (48, 27), (10, 200, 30)).save(buf, "PNG")
    contents: list[types.PartUnionDict] = [
        "make it pop",
        types.Part.from_bytes(data=buf.getvalue(), mime_type="image/png"),
    ]
    response = await client.aio.models.generate_content(
        model=MODEL, contents=contents, config=CONFIG
    )
    (data,) = _images(response)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert img.size == (21, 12)  # the input's 16:9 shape at 1/64 scale
    assert img.getpixel((10, 6)) == (10, 200, 30)


async def test_sdk_v1beta_with_aspect_ratio(sim: Simulator) -> None:
    options = types.HttpOptions(base_url=sim.base_url + "/", api_version="v1beta")
    client = genai.Client(api_key="k", http_options=options)
    try:
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="9:16")
        )
        response = await client.aio.models.generate_content(
            model=MODEL, contents="tall", config=config
        )
    finally:
        await client.aio.aclose()
        client.close()
    (data,) = _images(response)
    assert Image.open(io.BytesIO(data)).size == (12, 21)
    assert sim.stats.recent[-1].api_version == "v1beta"


async def test_sdk_surfaces_429_as_client_error(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as caught:
        await client.aio.models.generate_content(
            model=MODEL, contents="a cat [[sim:429]]", config=CONFIG
        )
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"


async def test_sdk_surfaces_bad_key_and_server_errors(sim: Simulator) -> None:
    client = genai.Client(
        api_key="nope", http_options=types.HttpOptions(base_url=sim.base_url + "/")
    )
    try:
        with pytest.raises(errors.ClientError) as bad_key:
            await client.aio.models.generate_content(model=MODEL, contents="a", config=CONFIG)
    finally:
        await client.aio.aclose()
        client.close()
    assert bad_key.value.code == 400
    assert "API key not valid" in str(bad_key.value)


async def test_sdk_server_error(client: genai.Client) -> None:
    with pytest.raises(errors.ServerError) as caught:
        await client.aio.models.generate_content(
            model=MODEL, contents="a cat [[sim:503]]", config=CONFIG
        )
    assert caught.value.code == 503


def test_sdk_sync_client_against_the_thread_runner() -> None:
    with SimulatorThread(SimConfig(small_images=True)) as sim:
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=sim.base_url + "/")
        )
        try:
            response = client.models.generate_content(model=MODEL, contents="a cat", config=CONFIG)
        finally:
            client.close()
        assert len(_images(response)) == 1
        assert sim.stats.ok == 1
