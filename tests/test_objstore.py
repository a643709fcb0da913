"""`--out` on object storage through fsspec: `memory://` and test wrappers around it.

A run to an object store must leave the same report as a run to a folder; a
no-op resume writes nothing; a PUT that fails is retried with backoff and,
past the tries, leaves no object under a final key and the job pending.
The S3 wire (moto on loopback) is in `test_objstore_s3.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from PIL import Image

from batchgen.engine.runner import arun_files
from batchgen.output import storage
from batchgen.output.storage import LocalOutput, OutputError, RemoteOutput, open_output, redact
from batchgen.sim import SimConfig, Simulator
from tests.conftest import KEY, make_config, write_jobs

MARKED = [
    {"id": "ok-1", "prompt": "a red cube"},
    {"id": "ok-2", "prompt": "a blue cube", "tags": ["blue"]},
    {"id": "retry", "prompt": "a cube [[sim:503x2]]"},
    {"id": "blocked", "prompt": "a cube [[sim:block]]"},
    {"id": "text", "prompt": "a cube [[sim:text]]"},
    {"id": "bad", "prompt": "a cube [[sim:400]]"},
    {"id": "child", "prompt": "make it green", "images": ["@ok-1"]},
    {"id": "sized", "prompt": "a sized cube", "sizes": ["instagram"]},
]


class CountingFS(MemoryFileSystem):
    """`memory://` that counts the object writes and deletes made through it
    (the store's PUTs, as moto's request log would)."""

    protocol = ("counting",)
    writes: ClassVar[list[str]] = []

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kw: Any) -> None:
        type(self).writes.append(path)
        super().pipe_file(path, value, mode=mode, **kw)

    def put_file(self, lpath: str, rpath: str, **kw: Any) -> None:
        type(self).writes.append(rpath)
        super().put_file(lpath, rpath, **kw)

    def rm_file(self, path: str) -> None:
        type(self).writes.append("rm " + path)
        super().rm_file(path)


class FlakyFS(MemoryFileSystem):
    """`memory://` whose PUTs fail: `slowdown` answers SlowDown (a transient
    OSError) to the first N tries of each image; `broken` makes every image
    PUT die midway (the store keeps nothing of a failed PUT)."""

    protocol = ("flaky",)
    slowdown: ClassVar[int] = 0
    broken: ClassVar[bool] = False
    tries: ClassVar[dict[str, int]] = {}

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kw: Any) -> None:
        if "/images/" in path:
            n = type(self).tries[path] = type(self).tries.get(path, 0) + 1
            if type(self).broken:
                raise ConnectionResetError(f"connection reset midway through PUT {path}")
            if n <= type(self).slowdown:
                raise OSError(503, "SlowDown: Please reduce your request rate.")
        super().pipe_file(path, value, mode=mode, **kw)


@pytest.fixture(autouse=True)
def _isolated_stores() -> Iterator[None]:
    """Each test its own buckets; retries without long sleeps."""
    fsspec.register_implementation("counting", CountingFS, clobber=True)
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    CountingFS.writes = []
    FlakyFS.slowdown, FlakyFS.broken, FlakyFS.tries = 0, False, {}
    old = storage.RETRY_BASE_S
    storage.RETRY_BASE_S = 0.01
    yield
    storage.RETRY_BASE_S = old
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs[:] = [""]


def _bucket(scheme: str = "memory") -> str:
    return f"{scheme}://bucket-{uuid.uuid4().hex[:8]}/catalogue"


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    """report.json without what differs between two runs: times, the out, rates."""
    drop = {"generated_at", "out", "elapsed_s", "images_per_minute"}
    top = {k: v for k, v in report.items() if k not in drop and k != "jobs"}
    jobs = sorted(report["jobs"], key=lambda j: j["id"])
    return {**top, "jobs": jobs}


async def _run(
    tmp_path: Path, sim: Simulator, name: str, url: str | None, rows: list[dict[str, Any]]
) -> Any:
    """A run into the folder `name`, or into `url` with its state in `name.sqlite`
    (`--state`) and `name` the local folder the CLI would give it."""
    jobs = write_jobs(tmp_path / "jobs.jsonl", rows)
    state = None if url is None else str(tmp_path / f"{name}.sqlite")
    config = make_config(tmp_path / name, sim.base_url, out_url=url, state=state, concurrency=4)
    return await arun_files([jobs], config)


async def _fresh_run(tmp_path: Path, name: str, url: str | None) -> Any:
    """`MARKED` on a simulator of its own (its faults counted from zero)."""
    async with Simulator(SimConfig(small_images=True, api_key=KEY, retry_delay_s=0.05)) as sim:
        return await _run(tmp_path, sim, name, url, MARKED)


async def test_a_run_to_memory_equals_a_run_to_a_folder(tmp_path: Path) -> None:
    local = await _fresh_run(tmp_path, "local", None)
    url = _bucket()
    remote = await _fresh_run(tmp_path, "state", url)
    assert remote.exit_code == local.exit_code == 1
    out = open_output(url)
    on_disk = json.loads((tmp_path / "local" / "report.json").read_text())
    stored = json.loads(out.read_bytes("report.json"))
    assert comparable(stored) == comparable(on_disk)
    assert stored["out"] == url
    assert stored["done"] == 5
    failed = {json.loads(line)["id"] for line in out.read_bytes("failed.jsonl").splitlines()}
    local_failed = (tmp_path / "local" / "failed.jsonl").read_text().splitlines()
    assert failed == {json.loads(line)["id"] for line in local_failed}
    for job in stored["jobs"]:
        for rel in job["files"]:
            with Image.open(io.BytesIO(out.read_bytes(rel))) as im:
                im.verify()
    # the gallery: page, data, and every preview it names
    page = out.read_bytes("report.html").decode()
    assert "report-data.js" in page
    data = out.read_bytes("report-data.js").decode()
    for job in stored["jobs"]:
        if job["status"] == "done":
            assert job["files"][0].split("/")[-1].split(".")[0] in data
    # nothing of OUT's files went to a local folder: the state is in its file
    assert not (tmp_path / "state").exists()
    assert (tmp_path / "state.sqlite").is_file()


async def test_a_no_op_resume_writes_no_object(tmp_path: Path, sim: Simulator) -> None:
    url = _bucket("counting")
    first = await _run(tmp_path, sim, "state", url, MARKED[:3])
    assert first.exit_code == 0
    assert any(w.endswith("report.json") for w in CountingFS.writes)
    CountingFS.writes.clear()
    sent = sim.stats.total
    again = await _run(tmp_path, sim, "state", url, MARKED[:3])
    assert again.exit_code == 0
    assert (CountingFS.writes, sim.stats.total - sent) == ([], 0)


async def test_slowdown_is_retried_with_backoff(
    tmp_path: Path, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    FlakyFS.slowdown = 2
    url = _bucket("flaky")
    caplog.set_level(logging.WARNING, logger="batchgen.output.storage")
    result = await _run(tmp_path, sim, "state", url, MARKED[:2])
    assert result.exit_code == 0
    assert sorted(FlakyFS.tries.values()) == [3, 3]
    assert sum("again in" in r.getMessage() for r in caplog.records) == 4
    assert json.loads(open_output(url).read_bytes("report.json"))["done"] == 2


async def test_a_put_that_keeps_failing_leaves_no_object_and_the_job_pending(
    tmp_path: Path, sim: Simulator
) -> None:
    FlakyFS.broken = True
    url = _bucket("flaky")
    result = await _run(tmp_path, sim, "state", url, MARKED[:1])
    assert result.exit_code == 3
    assert result.stop is not None
    assert "stays pending" in result.stop.message
    assert FlakyFS.tries
    assert set(FlakyFS.tries.values()) == {storage.RETRIES}
    out = open_output(url)
    assert list(out.files("images")) == []
    report = json.loads(out.read_bytes("report.json"))
    assert (report["done"], report["pending"]) == (0, 1)
    # the store mends: the same command finishes the job
    FlakyFS.broken = False
    again = await _run(tmp_path, sim, "state", url, MARKED[:1])
    assert again.exit_code == 0
    assert [p.split("/")[-1] for p in out.files("images")] == ["ok-1.png"]


def test_outputs_write_whole_files_and_list_them(tmp_path: Path) -> None:
    for out in (LocalOutput(tmp_path / "o"), open_output(_bucket())):
        out.write_bytes("images/ab/x.png", b"png")
        with out.write_text("report.json") as fh:
            fh.write("{}")
        assert out.read_bytes("images/ab/x.png") == b"png"
        assert out.exists("report.json")
        assert not out.exists("nope.json")
        out.move("images/ab/x.png", "images/ab/x.v1.png")
        assert sorted(out.files("images")) == ["images/ab/x.v1.png"]
        out.delete("images/ab/x.v1.png")
        assert list(out.files("images")) == []
        with pytest.raises(ValueError, match="inside the output folder"):
            out.read_bytes("../escape")


def test_a_streamed_file_that_fails_leaves_nothing() -> None:
    out = open_output(_bucket())

    def killed_while_writing() -> None:
        with out.write_text("report.json") as fh:
            fh.write("{half")
            raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        killed_while_writing()
    assert not out.exists("report.json")


def test_urls_are_redacted() -> None:
    url = "s3://AKIDSECRET:hunter2@bucket/out?token=tok3n&region=eu"
    shown = redact(url)
    assert "hunter2" not in shown
    assert "tok3n" not in shown
    assert "region=eu" in shown
    message = redact(url, f"could not reach {url} (password hunter2)")
    assert "hunter2" not in message
    assert "tok3n" not in message
    assert isinstance(open_output(tmp := "memory://b/x"), RemoteOutput), tmp


def test_errors_past_the_retries_say_where_without_secrets() -> None:
    FlakyFS.broken = True
    out = open_output("flaky://user:s3cr3t@bucket/x")
    with pytest.raises(OutputError) as err:
        out.write_bytes("images/a.png", b"x")
    assert "s3cr3t" not in str(err.value)
    assert "images/a.png" in str(err.value)


def test_the_command_line_never_prints_an_urls_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchgen.cli.main import main

    jobs = write_jobs(tmp_path / "jobs.jsonl", MARKED[:1])
    url = "s3://AKIDEXAMPLE:pa55w0rd-xyz@bucket/out?token=t0k3n-xyz"
    for argv in (
        ["run", str(jobs), "--out", url, "--sim"],
        ["report", url],
        ["status", url],
        ["review", url],
    ):
        with contextlib.suppress(SystemExit):
            assert main(argv) != 0
        said = capsys.readouterr()
        assert "pa55w0rd-xyz" not in said.out + said.err
        assert "t0k3n-xyz" not in said.out + said.err
        assert said.err, argv


def test_the_command_line_runs_reports_and_copies_a_remote_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --out URL --state FILE`, then `status`, `report --local DIR` and
    `export` of it: the commands of docs/scale-out.md, in-process (memory://)."""
    from batchgen.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # The command tunes its own process's collector; this process is pytest's.
    monkeypatch.setattr("batchgen.cli.main._tune_gc", lambda: None)
    jobs = write_jobs(tmp_path / "jobs.jsonl", MARKED[:3])
    url, state = _bucket(), str(tmp_path / "run.sqlite")
    assert main(["run", str(jobs), "--out", url, "--state", state, "--sim", "--no-progress"]) == 0
    assert f"report: {url}/report.json" in capsys.readouterr().err
    assert main(["status", url, "--state", state]) == 0
    assert capsys.readouterr().out.startswith("3 jobs: 3 done")
    gallery = tmp_path / "gallery"
    assert main(["report", url, "--state", state, "--local", str(gallery)]) == 0
    assert (gallery / "report.html").is_file()
    assert (gallery / "report-data.js").is_file()
    export = tmp_path / "export"
    assert main(["export", url, "--state", state, "--all-done", "--to", str(export)]) == 0
    assert sorted(p.name for p in (export / "images").iterdir()) == [
        "ok-1.png",
        "ok-2.png",
        "retry.png",
    ]
    # on this machine: the state and what was asked for, nothing of OUT
    local = {p.name for p in tmp_path.iterdir() if not p.name.startswith("run.sqlite")}
    assert local == {"jobs.jsonl", "gallery", "export"}


def test_the_python_api_takes_a_url_with_a_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import batchgen
    from batchgen.errors import UsageError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    jobs = write_jobs(tmp_path / "jobs.jsonl", MARKED[:2])
    url = _bucket()
    with pytest.raises(UsageError, match="give state= too"):
        batchgen.run(jobs, out=url, sim=True)
    result = batchgen.run(jobs, out=url, state=str(tmp_path / "s.sqlite"), sim=True)
    assert result.exit_code == 0
    assert json.loads(open_output(url).read_bytes("report.json"))["done"] == 2
