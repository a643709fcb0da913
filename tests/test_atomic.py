"""One atomic writer: whole or absent under its final name, after errors and kills alike;
fsync only where durability was asked for; every writer of the package goes through it."""

from __future__ import annotations

import errno
import mmap
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import batchgen
from batchgen.output.atomic import DIRECT_ABOVE, TEMP_PREFIX, write_bytes, write_text
from batchgen.output.sink import clean_temporaries

PACKAGE = Path(batchgen.__file__).parent


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(f"{TEMP_PREFIX}*"))


def test_bytes_replace_the_old_file_and_leave_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "a.png"  # folders are made on first use
    write_bytes(path, b"first")
    write_bytes(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert temporaries(tmp_path) == []


def test_text_appears_only_when_the_block_ends_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old\n", encoding="utf-8")

    def stopped_mid_file() -> None:
        with write_text(path) as fh:
            fh.write("half a rep")
            fh.flush()
            raise RuntimeError("stopped mid-file")

    with pytest.raises(RuntimeError, match="mid-file"):
        stopped_mid_file()
    assert path.read_text(encoding="utf-8") == "old\n"
    assert temporaries(tmp_path) == []
    with write_text(path) as fh:
        fh.write("new\n")
    assert path.read_bytes() == b"new\n"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A real failure: the final name is a folder, so the rename fails after the write."""
    path = tmp_path / "taken"
    path.mkdir()
    (path / "inside").write_text("x", encoding="utf-8")
    with pytest.raises(IsADirectoryError):
        write_bytes(path, b"data")
    with pytest.raises(IsADirectoryError), write_text(path) as fh:
        fh.write("data")
    assert path.is_dir()
    assert temporaries(tmp_path) == []


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from batchgen.output.atomic import write_text
with write_text(Path(sys.argv[1])) as fh:
    fh.write("a partial line")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_kill_mid_write_leaves_a_temporary_that_the_next_start_removes(tmp_path: Path) -> None:
    final = tmp_path / "images" / "a.png"
    final.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(final)], check=False)
    assert done.returncode == -9
    assert not final.exists()
    (leftover,) = (tmp_path / "images").iterdir()
    assert leftover.name.startswith(TEMP_PREFIX)
    assert leftover.name.endswith("-a.png")  # gallery.py finds its own by the final name
    assert leftover.read_text(encoding="utf-8") == "a partial line"
    assert clean_temporaries(tmp_path) == 1
    assert temporaries(tmp_path) == []


def test_threads_writing_one_name_never_mix_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "shared.bin"
    payloads = [bytes([n]) * 200_000 for n in range(8)]

    def writer(data: bytes) -> None:
        for _ in range(20):
            write_bytes(path, data)

    threads = [threading.Thread(target=writer, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert path.read_bytes() in payloads
    assert temporaries(tmp_path) == []


def _takes_o_direct(folder: Path) -> bool:
    """Whether this folder's filesystem opens files with O_DIRECT (tmpfs did not
    before Linux 6.6; macOS and Windows have no such flag)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        fd = os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | flag, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / "probe")
    return True


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each `os.write` (the real one runs): its size and whether O_DIRECT was on."""
    calls: list[tuple[int, bool]] = []
    real = os.write
    flag = getattr(os, "O_DIRECT", 0)

    def noting(fd: int, data: Any) -> int:
        import fcntl

        direct = bool(flag and fcntl.fcntl(fd, fcntl.F_GETFL) & flag)
        n = real(fd, data)
        calls.append((n, direct))
        return n

    monkeypatch.setattr(os, "write", noting)
    return calls


def test_a_large_image_is_written_past_the_page_cache_and_whole(
    tmp_path: Path, writes: list[tuple[int, bool]]
) -> None:
    """A 2K or 4K image: its page-aligned bulk goes to the device (O_DIRECT,
    where the filesystem takes it), the few bytes after it through the cache."""
    data = os.urandom(DIRECT_ABOVE + 12_345)  # not a whole number of pages
    path = tmp_path / "images" / "big.png"
    write_bytes(path, data)
    assert path.read_bytes() == data
    assert temporaries(tmp_path) == []
    direct = sum(n for n, on in writes if on)
    if _takes_o_direct(tmp_path):
        assert direct == len(data) - len(data) % mmap.PAGESIZE
    else:
        assert direct == 0
    assert sum(n for n, _ in writes) == len(data)
    small = b"x" * (DIRECT_ABOVE - 1)
    writes.clear()
    write_bytes(path, small)  # below the threshold: the page cache, as ever
    assert path.read_bytes() == small
    assert not any(on for _, on in writes)


def test_a_filesystem_that_refuses_direct_writes_gets_a_buffered_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some filesystems take the flag but refuse the write (EINVAL, a block
    larger than a page): the same file is then written through the cache."""
    real = os.write
    flag = getattr(os, "O_DIRECT", 0)

    def refusing(fd: int, data: Any) -> int:
        import fcntl

        if flag and fcntl.fcntl(fd, fcntl.F_GETFL) & flag:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    data = os.urandom(DIRECT_ABOVE + 1)
    write_bytes(tmp_path / "big.png", data)
    assert (tmp_path / "big.png").read_bytes() == data
    assert temporaries(tmp_path) == []


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was fsynced ("file" or "dir"): the real fsync runs, each call is noted."""
    calls: list[str] = []
    real: Callable[[int], None] = os.fsync

    def noting(fd: int) -> None:
        calls.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", noting)
    return calls


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names fds through /proc")
def test_fsync_only_where_durability_was_asked_for(tmp_path: Path, fsyncs: list[str]) -> None:
    write_bytes(tmp_path / "image.png", b"png")
    with write_text(tmp_path / "report.json") as fh:
        fh.write("{}")
    assert fsyncs == []  # the image path and derived files pay no flush
    write_bytes(tmp_path / "jobs.jsonl", b"{}\n", durable=True)
    with write_text(tmp_path / "more.jsonl", durable=True) as fh:
        fh.write("{}\n")
    # The data before the rename, then the folder so that the rename survives.
    assert fsyncs == ["file", "dir", "file", "dir"]


def test_every_file_of_the_package_is_written_through_atomic() -> None:
    """One home: no other module renames into place or makes its own temporaries."""
    pattern = re.compile(r"os\.replace\(|os\.rename\(|mkstemp|NamedTemporaryFile|TEMP_PREFIX\}\{")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "atomic.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
