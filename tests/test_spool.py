"""Large answers go through a spool file and are decoded from it as strictly as
small ones are in memory; a run with them ends with whole images and an empty spool."""

from __future__ import annotations

import base64
import binascii
import errno
import json
import mmap
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from batchgen.engine.runner import arun_files
from batchgen.engine.sender import SPOOL_DIR
from batchgen.models import OutcomeKind
from batchgen.output import client, spool
from batchgen.output.spool import Spooled
from batchgen.sim import SimConfig, Simulator, images
from batchgen.store import STATE_DIR
from tests.conftest import KEY, make_config, write_jobs


def spooled(tmp_path: Path, body: bytes) -> Spooled:
    path = tmp_path / "answer.json"
    path.write_bytes(body)
    return Spooled(path, len(body))


def decode_text(tmp_path: Path, text: bytes) -> bytes:
    path = tmp_path / "span.txt"
    path.write_bytes(b"[" + text + b"]")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        return spool.decode_span(mm, 1, len(text) + 1)


def answer(data: str, *, text: str = "here it is") -> bytes:
    part = {"inlineData": {"mimeType": "image/png", "data": data}}
    doc = {
        "candidates": [{"content": {"parts": [{"text": text}, part]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1290},
    }
    return json.dumps(doc).encode()


@given(st.binary(max_size=3000), st.sampled_from(["std", "urlsafe", "unpadded"]))
def test_decoding_from_the_file_matches_decoding_in_memory(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes, alphabet: str
) -> None:
    text = base64.b64encode(raw)
    if alphabet == "urlsafe":
        text = base64.urlsafe_b64encode(raw)
    elif alphabet == "unpadded":
        text = text.rstrip(b"=")
    tmp = tmp_path_factory.mktemp("span")
    assert decode_text(tmp, text) == client._decode_b64(text.decode()) == raw


@pytest.mark.parametrize("text", [b"QUJD*RA==", b"QUJDRA==QUJD", b"QUJD RA==", b"QUJDR", b"QU\nJD"])
def test_decoding_from_the_file_refuses_what_memory_refuses(tmp_path: Path, text: bytes) -> None:
    with pytest.raises(binascii.Error):
        client._decode_b64(text.decode())
    with pytest.raises(binascii.Error):
        decode_text(tmp_path, text)


def test_a_long_image_decodes_from_the_file(tmp_path: Path) -> None:
    png = images.make_rgb_png(200, 150, seed=3)
    body = answer(base64.b64encode(png).decode())
    path = spooled(tmp_path, body).path
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        found = spool.envelope(mm)
        assert found is not None  # the image stays in the file, out of the parsed JSON
        assert len(found.spans) == 1
        assert len(json.dumps(found.doc)) < 1000
    outcome = client.parse_spooled(spooled(tmp_path, body))
    assert outcome.kind is OutcomeKind.OK
    assert outcome.images[0].data == png
    assert outcome.text == "here it is"
    assert outcome.usage is not None
    assert outcome.usage.prompt_tokens == 7
    assert not (tmp_path / "answer.json").exists()


def test_a_spooled_answer_is_classified_like_one_in_memory(tmp_path: Path) -> None:
    png = images.make_rgb_png(100, 100, seed=1)
    good = base64.b64encode(png).decode()
    bodies = {
        "bad base64": answer(good[:1000] + "!" + good[1001:]),
        "not an image": answer(base64.b64encode(b"x" * 90_000).decode()),
        "cut off": answer(good)[:-40],
        "escaped": answer(good[:50_000] + "\\/" + good[50_000:]),
        "short image": answer(base64.b64encode(images.make_rgb_png(4, 4, seed=1)).decode()),
    }
    for name, body in bodies.items():
        expected = client.classify(200, {}, body)
        got = client.parse_spooled(spooled(tmp_path, body))
        assert got == expected, name


async def test_a_run_of_large_answers_writes_whole_images(tmp_path: Path) -> None:
    """1280-px RGB noise: 4.9 MB images, 6.6 MB bodies, above the spool threshold."""
    config = SimConfig(api_key=KEY, rgb_noise=True, noise_pool=2, size_scale=1.25)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"big{i}", "prompt": f"p{i}"} for i in range(4)]
    )
    out = tmp_path / "out"
    async with Simulator(config) as sim:
        result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=4))
    assert result.exit_code == 0
    for i in range(4):
        path = out / "images" / f"big{i}.png"
        assert path.stat().st_size > spool.SPOOL_ABOVE
        with Image.open(path) as im:
            assert im.size == (1280, 1280)
            im.verify()
    assert list((out / STATE_DIR / SPOOL_DIR).iterdir()) == []


class FailingWrite:
    """The spool's write of a chunk, failing with ENOSPC after `after` chunks."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0
        self.real = spool._write_all

    def __call__(self, fd: int, data: bytes) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.real(fd, data)


async def test_a_full_disk_while_spooling_stops_the_run_and_the_same_command_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local disk's fault, not the server's: the run stops (exit 3) instead of
    retrying the request until the job fails, and leaves no spool file."""
    config = SimConfig(api_key=KEY, rgb_noise=True, noise_pool=1, size_scale=1.25)
    rows = [{"id": f"big{i}", "prompt": f"p{i}"} for i in range(3)]
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    out = tmp_path / "out"
    async with Simulator(config) as sim:
        monkeypatch.setattr(spool, "_write_all", FailingWrite(after=30))
        result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=1))
        assert result.exit_code == 3
        assert result.stop is not None
        assert result.stop.kind == "disk"
        assert "disk full while writing" in result.stop.message
        assert list((out / STATE_DIR / SPOOL_DIR).iterdir()) == []
        monkeypatch.undo()
        again = await arun_files([jobs], make_config(out, sim.base_url, concurrency=1))
    assert again.exit_code == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"big{i}.png" for i in range(3)]
