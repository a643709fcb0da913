"""Sizes and previews made away from the writer (the Ray engine's tasks): the
writer waits for them before it hands back what was written, falls back to its
own threads when the tasks are lost, and `RayExtras` runs them as Ray tasks
that write through the run's `Output` and say which node they ran on."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from batchgen.engine.ray_post import RayExtras
from batchgen.models import GeneratedImage, Job
from batchgen.output.storage import LocalOutput, Output
from batchgen.output.writer import Extras, ExtrasUnavailable, Writer, make_extras


def png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (30, 120, 200)).save(buf, "PNG")
    return buf.getvalue()


class Elsewhere:
    """An `ExtrasMaker` running the work on a thread of its own, as a task would."""

    def __init__(self, out: Output, *, lost: bool = False) -> None:
        self.out = out
        self.lost = lost
        self.calls: list[str] = []

    async def __call__(
        self,
        job_id: str,
        sizes: tuple[str, ...],
        image_rel: str,
        data: bytes,
        first: tuple[int, int],
        thumbnails: bool,
    ) -> Extras:
        self.calls.append(job_id)
        if self.lost:
            raise ExtrasUnavailable("the node went away")
        return await asyncio.to_thread(
            make_extras, self.out, job_id, sizes, image_rel, data, first, thumbnails=thumbnails
        )


@pytest.mark.parametrize("lost", [False, True])
async def test_sizes_and_preview_exist_when_the_writer_returns(tmp_path: Path, lost: bool) -> None:
    out = LocalOutput(tmp_path)
    extras = Elsewhere(out, lost=lost)
    writer = Writer(out, sharded=False, thumbnails=True, extras=extras)
    try:
        big = (GeneratedImage("image/png", png(600)),)
        written = await writer.save(Job(id="a", prompt="p", sizes=("64x64", "amazon")), big)
        small = (GeneratedImage("image/png", png(32)),)
        alone = await writer.save(Job(id="b", prompt="p"), small)
    finally:
        writer.close()
    assert written is not None
    assert alone is not None
    assert extras.calls == ["a"]  # an image that is its own preview needs no task
    assert written.files == ["images/a.png", "sizes/64x64/a.png", "sizes/amazon/a.jpg"]
    assert written.upscaled == ["sizes/amazon/a.jpg"]
    assert written.preview == "thumbs/images/a.jpg"
    for rel in [*written.files, written.preview]:
        with Image.open(tmp_path / rel) as im:
            im.verify()
    assert (alone.files, alone.preview) == (["images/b.png"], "images/b.png")


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import ray

    temp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=str(temp), log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


async def test_ray_tasks_write_through_the_output_and_name_their_node(
    tmp_path: Path, ray_local: None
) -> None:
    import ray

    extras = RayExtras(LocalOutput(tmp_path))
    data = png(600)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(data)
    sized, shown = await extras("a", ("64x64:jpeg",), "images/a.png", data, (600, 600), True)
    assert (sized, shown) == ([("sizes/64x64/a.jpg", False)], "thumbs/images/a.jpg")
    assert (tmp_path / "sizes" / "64x64" / "a.jpg").exists()
    assert (tmp_path / "thumbs" / "images" / "a.jpg").exists()
    assert extras.nodes == {ray.get_runtime_context().get_node_id(): 1}
    # The work's own error comes back as itself, as inline (the job stays pending).
    (tmp_path / "sizes" / "128x128").write_text("a file where a folder must go")
    with pytest.raises(NotADirectoryError) as raised:
        await extras("b", ("128x128",), "images/a.png", data, (600, 600), False)
    assert not isinstance(raised.value, ray.exceptions.RayError)
    assert sum(extras.nodes.values()) == 1
