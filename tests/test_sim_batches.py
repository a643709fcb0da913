"""Files API, Batch Mode and the Flex tier of the simulator, through the
official SDK (`google-genai`, unchanged) as a client would use them.

Time is the simulator's scaled clock: batches move on when a test advances it
(``POST /_sim/clock``, or `SimClock.advance` in the simulator's own loop), and
a test waits for what follows with a bounded poll of the API, as a client does.
The resumable protocol's edge cases are in ``test_sim_uploads.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from PIL import Image

from batchgen.sim import SimConfig, Simulator, SimulatorThread
from batchgen.sim.batches import BATCHES_KEY

MODEL = "gemini-2.5-flash-image"
KEY = "k-batches"
DAY = 24 * 3600.0
#: Markers and the line each one must give.
MARKED = {
    7: ("[[sim:500]]", "error", 500),
    13: ("[[sim:429]]", "error", 429),
    21: ("[[sim:reset]]", "error", 503),
    34: ("[[sim:block]]", "response", None),
}


def client_for(sim: SimulatorThread | Simulator) -> genai.Client:
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim.base_url + "/"))


def raw(sim: SimulatorThread, method: str, path: str, body: Any = None) -> Any:
    """A plain HTTP call, for what the SDK does not show (batchStats, the clock)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        sim.base_url + path, data=data, method=method, headers={"x-goog-api-key": KEY}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def advance(sim: SimulatorThread, seconds: float) -> None:
    raw(sim, "POST", "/_sim/clock", {"advance": seconds})


def wait_for(client: genai.Client, name: str, *states: str, limit: float = 30.0) -> Any:
    """Poll ``batches.get`` (bounded) until the batch is in one of `states`."""
    deadline = time.monotonic() + limit
    while True:
        job = client.batches.get(name=name)
        if job.state is not None and job.state.value in states:
            return job
        assert time.monotonic() < deadline, f"{name} stuck in {job.state}"
        time.sleep(0.01)


def line(key: str, prompt: str, image: bytes | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    if image is not None:
        parts.append({"inlineData": {"mimeType": "image/png", "data": _b64(image)}})
    request = {"contents": [{"role": "user", "parts": parts}]}
    request["generationConfig"] = {"responseModalities": ["IMAGE"]}
    return {"key": key, "request": request}


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def noisy_png(seed: int, side: int = 240) -> bytes:
    """A PNG that does not compress (random pixels): a heavy reference image."""
    import random

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def slow_sim() -> Iterator[SimulatorThread]:
    """Real time barely moves the clock: the test drives it."""
    config = SimConfig(small_images=True, api_key=KEY, batch_pending_s=60, batch_running_s=600)
    with SimulatorThread(config) as sim:
        yield sim


def test_a_file_of_50_requests_runs_to_the_end(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    reference = noisy_png(1)
    rows = [
        line(f"job-{i:02d}", f"product {i} {MARKED.get(i, ('',))[0]}".strip(), reference)
        for i in range(50)
    ]
    data = jsonl(rows)
    assert len(data) > 8 * 1024 * 1024, "big enough for the SDK to send two chunks"
    uploaded = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": "in"}
    )
    chunks = -(-len(data) // (8 << 20))  # the SDK's 8 MB chunks
    assert slow_sim.stats.by_outcome["upload_chunk"] == chunks - 1
    assert slow_sim.stats.by_outcome["upload_final"] == 1
    assert uploaded.name is not None
    got = client.files.get(name=uploaded.name)
    assert got.size_bytes == len(data)
    assert got.sha256_hash is not None
    import base64

    assert base64.b64decode(got.sha256_hash).decode() == hashlib.sha256(data).hexdigest()

    job = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "fifty"})
    assert job.name is not None
    assert job.state == types.JobState.JOB_STATE_PENDING
    op = raw(slow_sim, "GET", f"/v1beta/{job.name}")
    assert op["metadata"]["batchStats"] == {"requestCount": "50", "pendingRequestCount": "50"}
    assert "done" not in op

    advance(slow_sim, 61)
    wait_for(client, job.name, "JOB_STATE_RUNNING")
    advance(slow_sim, 600)
    done = wait_for(client, job.name, "JOB_STATE_SUCCEEDED")
    op = raw(slow_sim, "GET", f"/v1beta/{job.name}")
    assert op["done"] is True
    assert op["metadata"]["batchStats"] == {
        "requestCount": "50",
        "successfulRequestCount": "47",
        "failedRequestCount": "3",
    }
    assert done.dest is not None
    assert done.dest.file_name == op["response"]["responsesFile"]

    results = [json.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
    keys = [r["key"] for r in results]
    assert sorted(keys) == sorted(r["key"] for r in rows)
    assert keys != sorted(keys), "no promised order"
    by_key = {r["key"]: r for r in results}
    for i, (_, field, code) in MARKED.items():
        result = by_key[f"job-{i:02d}"]
        assert field in result
        if code is not None:
            assert result["error"]["code"] == code
            assert set(result["error"]) == {"code", "message", "status"}
    assert by_key["job-34"]["response"]["promptFeedback"]["blockReason"] == "SAFETY"
    for key, result in by_key.items():
        if int(key[4:]) in MARKED:
            continue
        response = types.GenerateContentResponse.model_validate(result["response"])
        (image,) = [p.inline_data.data for p in response.parts or [] if p.inline_data]
        assert image is not None
        picture = Image.open(io.BytesIO(image))
        assert picture.format == "PNG"
    assert slow_sim.stats.by_outcome["batch_created"] == 1


def test_results_file_downloads_from_both_paths_and_is_download_only(
    slow_sim: SimulatorThread,
) -> None:
    client = client_for(slow_sim)
    uploaded = client.files.upload(
        file=io.BytesIO(jsonl([line("a", "a cat")])), config={"mime_type": "application/jsonl"}
    )
    assert uploaded.name is not None
    job = client.batches.create(model=MODEL, src=uploaded.name)
    assert job.name is not None
    advance(slow_sim, 700)
    done = wait_for(client, job.name, "JOB_STATE_SUCCEEDED")
    assert done.dest is not None
    assert done.dest.file_name is not None
    name = done.dest.file_name
    assert len(name) == 42
    sdk_bytes = client.files.download(file=name)
    url = f"{slow_sim.base_url}/download/v1beta/{name}:download?alt=media"
    request = urllib.request.Request(url, headers={"x-goog-api-key": KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == sdk_bytes
    with pytest.raises(errors.ClientError) as refused:
        client.files.get(name=name)
    assert refused.value.code == 400
    with pytest.raises(errors.ClientError) as uploaded_refused:
        client.files.download(file=uploaded.name)
    assert uploaded_refused.value.code == 400


def test_inline_requests_answer_inline(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    requests: list[types.InlinedRequestDict] = [
        {"contents": "a red kite", "metadata": {"key": "kite"}},
        {"contents": "a blue boat [[sim:400]]", "metadata": {"key": "boat"}},
    ]
    job = client.batches.create(model=MODEL, src=requests)
    assert job.name is not None
    advance(slow_sim, 700)
    done = wait_for(client, job.name, "JOB_STATE_SUCCEEDED")
    assert done.dest is not None
    assert done.dest.inlined_responses is not None
    answers = {r.metadata["key"]: r for r in done.dest.inlined_responses if r.metadata}
    assert answers["kite"].response is not None
    assert answers["kite"].response.parts
    assert answers["boat"].error is not None
    assert answers["boat"].error.code == 400


def test_create_is_not_idempotent_and_list_pages(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    src: list[types.InlinedRequestDict] = [{"contents": "same", "metadata": {"key": "1"}}]
    names = {client.batches.create(model=MODEL, src=src).name for _ in range(5)}
    assert len(names) == 5
    assert slow_sim.stats.by_outcome["batch_created"] == 5
    listed = [job.name for job in client.batches.list(config={"page_size": 2})]
    assert sorted(listed) == sorted(names)  # type: ignore[type-var]
    assert slow_sim.stats.by_outcome["batches"] == 3
    page = raw(slow_sim, "GET", "/v1beta/batches?pageSize=2")
    assert len(page["operations"]) == 2
    assert page["nextPageToken"]


def test_cancel_and_delete(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    src: list[types.InlinedRequestDict] = [{"contents": "x", "metadata": {"key": "1"}}]
    first = client.batches.create(model=MODEL, src=src)
    second = client.batches.create(model=MODEL, src=src)
    assert first.name is not None
    assert second.name is not None
    client.batches.cancel(name=first.name)
    cancelled = client.batches.get(name=first.name)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED
    op = raw(slow_sim, "GET", f"/v1beta/{first.name}")
    assert op["done"] is True
    assert op["error"]["code"] == 1
    assert "response" not in op
    with pytest.raises(errors.ClientError) as again:
        client.batches.cancel(name=first.name)
    assert again.value.code == 400

    client.batches.delete(name=second.name)
    with pytest.raises(errors.ClientError) as gone:
        client.batches.get(name=second.name)
    assert gone.value.code == 404
    assert [j.name for j in client.batches.list()] == [first.name]
    # Deleting does not cancel: the work goes on, and counts, until it ends.
    batches = slow_sim.simulator.app[BATCHES_KEY]
    assert [b.id for b in batches.running] == [second.name.removeprefix("batches/")]
    advance(slow_sim, 700)
    deadline = time.monotonic() + 30
    while batches.running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert slow_sim.stats.by_outcome["batch_deleted"] == 1


def test_the_101st_concurrent_batch_is_refused(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    src: list[types.InlinedRequestDict] = [{"contents": "x", "metadata": {"key": "1"}}]
    jobs = [client.batches.create(model=MODEL, src=src) for _ in range(100)]
    with pytest.raises(errors.ClientError) as refused:
        client.batches.create(model=MODEL, src=src)
    assert refused.value.code == 429
    assert jobs[0].name is not None
    client.batches.cancel(name=jobs[0].name)
    client.batches.create(model=MODEL, src=src)
    assert slow_sim.stats.by_outcome["batch_created"] == 101
    assert slow_sim.stats.by_outcome["batch_limit"] == 1


def test_an_input_file_over_the_cap_is_refused() -> None:
    config = SimConfig(small_images=True, api_key=KEY, batch_max_input_bytes=100)
    with SimulatorThread(config) as sim:
        client = client_for(sim)
        data = jsonl([line(str(i), "a cat") for i in range(5)])
        uploaded = client.files.upload(
            file=io.BytesIO(data), config={"mime_type": "application/jsonl"}
        )
        assert uploaded.name is not None
        with pytest.raises(errors.ClientError) as refused:
            client.batches.create(model=MODEL, src=uploaded.name)
        assert refused.value.code == 400
        assert sim.stats.by_outcome["batch_created"] == 0


def test_files_expire_after_48_hours_and_leave_the_disk(tmp_path: Path) -> None:
    config = SimConfig(small_images=True, api_key=KEY, files_dir=tmp_path)
    with SimulatorThread(config) as sim:
        client = client_for(sim)
        names = [
            client.files.upload(
                file=io.BytesIO(b"x" * n),
                config={"mime_type": "text/plain", "display_name": str(n)},
            ).name
            for n in (1, 2, 3)
        ]
        assert [f.name for f in client.files.list(config={"page_size": 2})] == names[::-1]
        assert len(list(tmp_path.iterdir())) == 3
        advance(sim, 47 * 3600)
        assert client.files.get(name=str(names[0])).size_bytes == 1
        advance(sim, 3600)
        with pytest.raises(errors.ClientError) as expired:
            client.files.get(name=str(names[0]))
        assert expired.value.code == 403
        assert list(client.files.list()) == []
        assert list(tmp_path.iterdir()) == []


def test_a_batch_marked_expired_expires_after_48_hours(slow_sim: SimulatorThread) -> None:
    client = client_for(slow_sim)
    src: list[types.InlinedRequestDict] = [{"contents": "x", "metadata": {"key": "1"}}]
    job = client.batches.create(
        model=MODEL, src=src, config={"display_name": "stuck [[sim:expired]]"}
    )
    assert job.name is not None
    advance(slow_sim, DAY)
    assert client.batches.get(name=job.name).state == types.JobState.JOB_STATE_PENDING
    advance(slow_sim, DAY)
    expired = wait_for(client, job.name, "JOB_STATE_EXPIRED")
    assert expired.dest is None
    assert raw(slow_sim, "GET", f"/v1beta/{job.name}")["error"]["code"] == 4


def test_failed_on_demand() -> None:
    config = SimConfig(small_images=True, api_key=KEY, batch_outcome="failed", time_scale=1e4)
    with SimulatorThread(config) as sim:
        client = client_for(sim)
        src: list[types.InlinedRequestDict] = [
            {"contents": f"x{i}", "metadata": {"key": str(i)}} for i in range(4)
        ]
        job = client.batches.create(model=MODEL, src=src)
        assert job.name is not None
        failed = wait_for(client, job.name, "JOB_STATE_FAILED")
        assert failed.dest is None
        op = raw(sim, "GET", f"/v1beta/{job.name}")
        assert op["done"] is True
        assert op["error"]["code"] == 13
        assert op["metadata"]["batchStats"]["requestCount"] == "4"


FLEX = types.GenerateContentConfig(response_modalities=["IMAGE"], service_tier="flex")


def test_flex_takes_minutes_on_the_scaled_clock() -> None:
    config = SimConfig(
        small_images=True, api_key=KEY, time_scale=600, flex_latency=120, flex_shed_rate=0
    )
    with SimulatorThread(config) as sim:
        client = client_for(sim)
        response = client.models.generate_content(model=MODEL, contents="a fox", config=FLEX)
        assert response.parts
        (flex,) = [r for r in sim.stats.recent if r.prompt == "a fox"]
        assert flex.elapsed_s >= 120 / 600  # two simulated minutes
        client.models.generate_content(model=MODEL, contents="a hen")
        (standard,) = [r for r in sim.stats.recent if r.prompt == "a hen"]
        assert standard.elapsed_s < flex.elapsed_s
        with pytest.raises(errors.ClientError) as refused:
            client.models.generate_content(
                model="gemini-3.1-flash-image", contents="a fox", config=FLEX
            )
        assert refused.value.code == 400
        assert "flex" in str(refused.value.message)


def test_flex_sheds_a_share_with_429_and_503() -> None:
    config = SimConfig(small_images=True, api_key=KEY, flex_latency=0, flex_shed_rate=0.5)
    with SimulatorThread(config) as sim:
        client = client_for(sim)
        codes: list[int] = []
        for i in range(40):
            try:
                client.models.generate_content(model=MODEL, contents=f"owl {i}", config=FLEX)
                codes.append(200)
            except errors.APIError as exc:
                codes.append(exc.code)
            client.models.generate_content(model=MODEL, contents=f"owl {i}")  # never shed
        assert set(codes) == {200, 429, 503}
        assert 8 <= codes.count(200) <= 32
        injected = sim.stats.injected
        assert injected["flex-429"] == codes.count(429)
        assert injected["flex-503"] == codes.count(503)
        assert sim.stats.ok == 40 + codes.count(200)
