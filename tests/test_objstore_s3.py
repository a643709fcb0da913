"""`--out s3://…` against a real S3 wire: moto's server on loopback (no internet;
the `s3` fixture of conftest.py, `tests/s3server.py`).

The store is reached as a user reaches MinIO: credentials and the endpoint
from the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``…),
nothing in flags. A whole run to S3 leaves what a run to a folder leaves; a
no-op resume PUTs nothing; no secret reaches an object or a message; the
gallery copied with `report --local` opens from disk in chromium.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
import s3fs
from PIL import Image

from batchgen.output.storage import open_output
from batchgen.report.folder import report_store
from batchgen.report.local import copy_gallery, gallery_files
from batchgen.sim import SimConfig, Simulator
from tests.conftest import KEY
from tests.s3server import AWS_SECRET, objects_in
from tests.test_objstore import MARKED, _run, comparable


class CountingS3(s3fs.S3FileSystem):  # type: ignore[misc]
    """s3fs counting the requests that write (PUTs, copies, deletes)."""

    protocol = ("s3count",)
    writes: ClassVar[list[str]] = []

    async def _pipe_file(self, path: str, data: bytes, *args: Any, **kw: Any) -> Any:
        type(self).writes.append(path)
        return await super()._pipe_file(path, data, *args, **kw)

    async def _put_file(self, lpath: str, rpath: str, *args: Any, **kw: Any) -> Any:
        type(self).writes.append(rpath)
        return await super()._put_file(lpath, rpath, *args, **kw)

    async def _rm_file(self, path: str, **kw: Any) -> Any:
        type(self).writes.append("rm " + path)
        return await super()._rm_file(path, **kw)


@pytest.fixture(scope="module", autouse=True)
def _counting_s3(moto: str) -> Iterator[None]:
    """`s3count://`: s3fs counting its writes, against the module's moto (conftest `s3`)."""
    fsspec.register_implementation("s3count", CountingS3, clobber=True)
    yield
    CountingS3.clear_instance_cache()


async def _fresh(tmp_path: Path, name: str, url: str | None) -> Any:
    async with Simulator(SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05)) as sim:
        return await _run(tmp_path, sim, name, url, MARKED)


async def test_a_run_to_s3_equals_a_run_to_a_folder_and_leaks_nothing(
    tmp_path: Path,
    moto: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    local = await _fresh(tmp_path, "local", None)
    url = f"s3://{moto}/runs/{uuid.uuid4().hex[:6]}"
    remote = await _fresh(tmp_path, "state", url)
    assert remote.exit_code == local.exit_code
    on_disk = json.loads((tmp_path / "local" / "report.json").read_text())
    objects = objects_in(moto)
    prefix = url.removeprefix(f"s3://{moto}/") + "/"
    stored = json.loads(objects[prefix + "report.json"])
    assert comparable(stored) == comparable(on_disk)
    for job in stored["jobs"]:
        for rel in job["files"]:
            with Image.open(io.BytesIO(objects[prefix + rel])) as im:
                im.verify()
    # every file of the folder run is an object of the S3 run, and no temporary
    made_locally = {
        p.relative_to(tmp_path / "local").as_posix()
        for p in (tmp_path / "local").rglob("*")
        if p.is_file() and ".batchgen" not in p.parts and "report-data" not in p.parts
    }
    keys = {k.removeprefix(prefix) for k in objects}
    assert made_locally <= keys
    assert not [k for k in keys if ".part-" in k]
    # secrets: the API key and the S3 secret in no object and no message
    for data in objects.values():
        assert KEY.encode() not in data
        assert AWS_SECRET.encode() not in data
    said = capsys.readouterr()
    messages = caplog.text + said.out + said.err + str(remote.stop)
    assert KEY not in messages
    assert AWS_SECRET not in messages


async def test_a_no_op_resume_on_s3_puts_nothing(tmp_path: Path, moto: str) -> None:
    url = f"s3count://{moto}/noop/{uuid.uuid4().hex[:6]}"
    first = await _fresh(tmp_path, "state", url)
    assert first.exit_code == 1
    assert CountingS3.writes
    CountingS3.writes.clear()
    again = await _fresh(tmp_path, "state", url)
    assert again.plan.to_run == 0
    assert CountingS3.writes == []
    assert again.counters.requests == 0


def test_report_local_copies_a_gallery_that_opens_from_disk(tmp_path: Path, moto: str) -> None:
    url = f"s3://{moto}/gallery/{uuid.uuid4().hex[:6]}"
    asyncio.run(_fresh(tmp_path, "state", url))  # sync test: Playwright's sync API below
    output = open_output(url)
    dest = tmp_path / "local-gallery"
    with report_store(tmp_path / "state", str(tmp_path / "state.sqlite")) as store:
        copied = copy_gallery(store, output, dest)
        files = gallery_files(store, output)
    assert copied == len(files) >= 2
    for rel in files:
        assert (dest / rel).is_file(), rel
    _open_in_chromium(dest, done=json.loads(output.read_bytes("report.json"))["done"])


def _open_in_chromium(dest: Path, *, done: int) -> None:
    """The copied page in a real headless chromium from file://: it loads, counts
    right, shows every done job's preview, and asks for nothing beyond DIR."""
    from playwright.sync_api import sync_playwright

    from tests.test_gallery_browser import CHROMIUM, CHROMIUM_ARGS

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/install-browser"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page()
            pg.set_default_timeout(15_000)
            outside: list[str] = []
            pg.on("requestfailed", lambda req: outside.append(req.url))
            pg.on(
                "request", lambda r: None if r.url.startswith("file://") else outside.append(r.url)
            )
            pg.goto((dest / "report.html").as_uri())
            pg.wait_for_selector("body[data-ready='1']")
            assert pg.get_by_test_id("count-done").first.inner_text().strip() == str(done)
            shown = pg.eval_on_selector_all(
                "[data-testid=card] a.thumb img",
                "imgs => imgs.map(i => [i.complete, i.naturalWidth])",
            )
            assert len(shown) == done
            pg.wait_for_function(
                "[...document.querySelectorAll('[data-testid=card] a.thumb img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            assert outside == []
        finally:
            browser.close()
