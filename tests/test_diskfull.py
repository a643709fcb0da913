"""Disk full: the run stops with a clear message, no job is done without its file,
and after space is freed the same command finishes.

On a real, tiny tmpfs when the tests run as root and may mount one (images and
state fill it; both orders are tried), and always by injecting
``OSError(ENOSPC)`` (and an unexpected I/O error) into the sink.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchgen.engine.runner import arun_files
from batchgen.output import atomic, writer
from batchgen.sim import SimConfig, Simulator, SimulatorThread
from tests.conftest import KEY, make_config
from tests.test_chaos import check_folder, cli, cli_env, read_store, temporaries


class SmallDisk:
    """A tmpfs of a few MB mounted for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mount(self, size: str) -> None:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def resize(self, size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True
        )

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    disk.path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the ENOSPC injection tests cover this")
    try:
        disk.mount("2m")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the ENOSPC injection tests cover this")
    try:
        yield disk
    finally:
        disk.umount()


def _jobs(path: Path, n: int) -> set[str]:
    rows = [{"id": f"j{i:03d}", "prompt": f"disk test {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {r["id"] for r in rows}


@pytest.mark.parametrize("recorder", ["0", "1"], ids=["on-the-loop", "recorder"])
@pytest.mark.parametrize("fills", ["images", "state"])
def test_disk_full_on_a_real_small_filesystem(
    tmp_path: Path,
    small_disk: SmallDisk,
    fills: str,
    recorder: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`images`: noisy ~65 KB images fill 2 MB. `state`: tiny images, and a filler
    file leaves only a few KB, so the SQLite journal runs out too. `recorder`:
    the job rows and small images written by the recorder process, whose full
    disk must stop the run the same way (`store/recorder.py`)."""
    monkeypatch.setenv("BATCHGEN_RECORDER", recorder)
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 60)
    out = small_disk.path / "out"
    filler = small_disk.path / "filler"
    if fills == "images":
        sim_config = SimConfig(api_key=KEY, noise=True, size_scale=0.25)
    else:
        sim_config = SimConfig(api_key=KEY, small_images=True)
        out.mkdir()
        stat = os.statvfs(small_disk.path)
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 48 * 1024))
    with SimulatorThread(sim_config) as sim:
        first = subprocess.run(
            cli(jobs, out, sim.base_url, concurrency=4),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.returncode == 3, first.stderr
        assert "disk full while writing" in first.stderr
        assert "run the same command again" in first.stderr
        assert "Traceback" not in first.stderr
        # Nothing is done without its file, no half file carries a final name.
        view = check_folder(out, ids, final=False)
        done_before = view.statuses["done"] if view else 0
        assert done_before < len(ids)
        # No image temporary is left; a report cut off by the full disk may leave
        # its `.part-` file in OUT (report.py), which the next start removes.
        assert all(p.parent == out for p in temporaries(out)), temporaries(out)
        requests_before = sim.stats.total
        # Free space, then the very same command finishes.
        filler.unlink(missing_ok=True)
        small_disk.resize("64m")
        second = subprocess.run(
            cli(jobs, out, sim.base_url, concurrency=4),
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, first.stderr + second.stderr + str(os.listdir(out))
        check_folder(out, ids, final=True)
        # Finished images were not paid for again: only the rest, plus what the
        # stop caught in flight (at most the pool).
        resent = sim.stats.total - requests_before
        assert resent <= len(ids) - done_before + 4
    final = read_store(out)
    assert final is not None
    assert final.statuses == {"done": len(ids)}


# -- injected errors (no root needed) ------------------------------------------------


class FailingWrite:
    """The sink's write of an image file's bytes, failing with `code` once `after`
    files were written (where a full disk really fails: the file exists by then)."""

    def __init__(self, code: int, after: int) -> None:
        self.code = code
        self.after = after
        self.calls = 0
        self.real = atomic._write_all

    def __call__(self, fd: int, data: bytes) -> None:
        self.calls += 1
        if self.calls > self.after:
            raise OSError(self.code, os.strerror(self.code))
        self.real(fd, data)


@pytest.mark.parametrize("busy", [2.0, -1.0], ids=["writer-thread", "on-the-loop"])
async def test_enospc_while_writing_an_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: float
) -> None:
    """Either way a small answer may be written (`scheduler._save`)."""
    monkeypatch.setattr(writer, "BUSY_LOOP", busy)
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 30)
    out = tmp_path / "out"
    async with Simulator(SimConfig(small_images=True, api_key=KEY)) as sim:
        monkeypatch.setattr(atomic, "_write_all", FailingWrite(errno.ENOSPC, after=10))
        result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=4))
        assert result.exit_code == 3
        assert result.stop is not None
        assert result.stop.kind == "disk"
        assert "disk full while writing" in result.stop.message
        view = check_folder(out, ids, final=False)
        assert view is not None
        assert 0 < view.statuses["done"] < 30
        assert not temporaries(out)
        monkeypatch.undo()
        again = await arun_files([jobs], make_config(out, sim.base_url, concurrency=4))
        assert again.exit_code == 0
        # In flight at the stop, or answered and being written: at most twice the pool.
        assert sim.stats.total <= 30 + 2 * 4
    check_folder(out, ids, final=True)


async def test_an_unexpected_io_error_stops_the_run_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    ids = _jobs(jobs, 20)
    out = tmp_path / "out"
    async with Simulator(SimConfig(small_images=True, api_key=KEY)) as sim:
        monkeypatch.setattr(atomic, "_write_all", FailingWrite(errno.EIO, after=5))
        cfg = make_config(out, sim.base_url, concurrency=4)
        result = await asyncio.wait_for(arun_files([jobs], cfg), 30)
        assert result.exit_code == 3
        assert result.stop is not None
        assert "Input/output error" in result.stop.message
        view = check_folder(out, ids, final=False)
        assert view is not None
        assert 0 < view.statuses["done"] < 20
        monkeypatch.undo()
        again = await arun_files([jobs], make_config(out, sim.base_url))
        assert again.exit_code == 0
    check_folder(out, ids, final=True)
