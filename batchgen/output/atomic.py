"""atomic: bytes or text in, a file that appears under its final name only when whole.

Every file batchgen writes (images, sizes, previews, the report, the gallery,
the shared cache's blobs, expanded job files) goes through here, one recipe:

1. a temporary name beside the final one (same folder, so the same
   filesystem, so the rename is atomic), starting with `TEMP_PREFIX` so that
   `sink.clean_temporaries` finds what a killed run left behind;
2. write the bytes (the folder is created on first use);
3. with ``durable=True`` only, `fsync` the file;
4. `os.replace` onto the final name;
5. with ``durable=True`` only, `fsync` the folder, so the rename itself is on disk.

Two promises, and which writer makes which:

* **A crash of the process** (``kill -9``, Ctrl-C, an exception): always.
  What `os.write` returned is in the kernel's page cache and survives the
  process; the rename is atomic; so a final name holds the whole file or the
  previous one. No fsync is needed for this, and none is paid. Files of
  `DIRECT_ABOVE` bytes and more (2K and 4K images) are written past the page
  cache with ``O_DIRECT`` where the filesystem allows it (`_write_direct`
  says why): on the device when the call returns, more than this needs.
* **A power loss or a kernel crash**: only ``durable=True``. Without the file's
  fsync a rename can reach the disk before the data (a renamed-but-empty file
  after reboot); without the folder's fsync the rename itself can be lost.

Who asks for what. ``durable=True``: `batchgen expand`'s JSONL, the user's
job file, written once, that nothing rebuilds (two flushes per file, once).
The crash promise only, for everything else:

* images and size presets (`sink`): an fsync per image took the zero-latency
  benchmark (`scripts/bench.py --quick --only 2`, 2 shared cores, ext4 on a
  virtio disk) from 1,460-1,600 to 1,060-1,130 jobs/s, and more on disks with
  slower flushes; and the sink may run on the event loop, which must never
  wait for a disk. So after a power loss an image may be empty while the row
  that says it is done survived: the README promises ``kill -9``, not that;
* previews, `report.json`, `failed.jsonl`, the gallery: derived, rebuilt from
  the store and the images by the next run or `batchgen report`;
* the shared cache's blobs (`--cache`): content-addressed and hash-checked on
  read, so a torn blob is a miss, never a wrong image.

The folder is fsynced after the rename, and only for a durable write: it is
what makes the new name (not only the bytes) survive a power loss.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "TEMP_PREFIX",
    "fsync_dir",
    "move",
    "temp_path",
    "write_bytes",
    "write_stream",
    "write_text",
]

TEMP_PREFIX = ".part-"

#: Temporary names only need to be unique among live writers: a counter costs no
#: syscall (unlike urandom), and the tag keeps two processes sharing a folder
#: (`--cache DIR`) apart. `next()` on a count is atomic under the GIL (threads).
_temp_ids = itertools.count()
_temp_tag = f"{os.getpid():x}{secrets.token_hex(2)}"

#: Plain `os.open`: the built-in `open` adds an fstat, an ioctl and an lseek per file.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def temp_path(path: Path) -> Path:
    """The temporary name `path` is written under before it is renamed into place."""
    return Path(_temp_name(os.fspath(path)))


def _temp_name(path: str) -> str:
    """`temp_path` on strings: the image path builds no `Path` (their parsing was
    a tenth of writing a small image on the loop)."""
    head, name = os.path.split(path)
    return os.path.join(head, f"{TEMP_PREFIX}{_temp_tag}{next(_temp_ids):x}-{name}")


#: Files at least this big (2K and 4K images) are written past the page cache.
DIRECT_ABOVE = 4 * 1024 * 1024
#: `O_DIRECT` wants the buffer, the file offset and the length aligned to the
#: device's block size; a page (4,096 bytes) covers 512- and 4,096-byte blocks.
_ALIGN = mmap.PAGESIZE
_DIRECT_SLICE = 4 * 1024 * 1024


class _Staging(threading.local):
    """Each writer thread's page-aligned buffer, kept for the next image: new
    pages on every write would cost the very page faults `O_DIRECT` avoids."""

    buf: mmap.mmap | None = None

    def holding(self, size: int) -> mmap.mmap:
        if self.buf is None or len(self.buf) < size:
            if self.buf is not None:
                self.buf.close()
            self.buf = mmap.mmap(-1, -(-size // _DIRECT_SLICE) * _DIRECT_SLICE)
        return self.buf


_staging = _Staging()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    if len(view) >= DIRECT_ABOVE:
        view = view[_write_direct(fd, view) :]
    while view:
        view = view[os.write(fd, view) :]


def _write_direct(fd: int, data: memoryview) -> int:
    """Write the page-aligned bulk of `data` with `O_DIRECT` (the rest is left to
    the caller); returns how many bytes were written, 0 where the platform or the
    filesystem has no `O_DIRECT` (tmpfs, macOS, Windows).

    Why: written through the page cache, a new 16.8 MB image cost 46-53 ms of
    kernel CPU on this project's 2-core VM once a few hundred MB had been
    written (3.5 ms before that): the copy into fresh cache pages. Straight to
    the device, from a reused aligned buffer, it costs 3.6 ms, and a bulk run
    no longer pushes everything else out of the page cache. The image is on
    the device when the call returns, which is more than the crash promise
    needs; ``durable=True`` still fsyncs (the device's own cache).
    """
    direct = getattr(os, "O_DIRECT", 0)
    bulk = len(data) - len(data) % _ALIGN
    if not direct or not bulk:
        return 0
    import fcntl  # POSIX only; O_DIRECT exists only there

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct)
    except OSError:
        return 0
    done = 0
    try:
        buf = _staging.holding(bulk)
        with memoryview(buf) as staged:
            staged[:bulk] = data[:bulk]
            while done < bulk:
                n = os.write(fd, staged[done : min(bulk, done + _DIRECT_SLICE)])
                done += n
                if not n or n % _ALIGN:  # short: the rest through the page cache
                    break
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # The filesystem took the flag but not the write (its alignment is
        # larger than a page): the rest through the page cache.
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return done


def _create(tmp: str | Path) -> int:
    try:
        return os.open(tmp, _CREATE, 0o666)
    except FileNotFoundError:
        # The folder is created on first use only: a mkdir per image was a
        # syscall, an exception and a stat for every job.
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        return os.open(tmp, _CREATE, 0o666)


def write_bytes(path: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write `data` to `path` so that no reader ever sees a partial file.

    This is the image path: two syscalls and a rename when not `durable`."""
    tmp = _temp_name(os.fspath(path))
    try:
        fd = _create(tmp)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        _place(tmp, path, durable=durable)
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def write_text(path: Path, *, durable: bool = False) -> Iterator[TextIO]:
    """A UTF-8 text file (``\\n`` line ends) streamed into place: it appears under
    `path` only if the block ends without an exception; else nothing changes."""
    tmp = temp_path(path)
    try:
        with open(_create(tmp), "w", encoding="utf-8", newline="\n") as fh:
            yield fh
            fh.flush()  # a full disk fails here or at close, before the rename
            if durable:
                os.fsync(fh.fileno())
        _place(tmp, path, durable=durable)
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def write_stream(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file streamed into place (an export's copies, a zip), never held
    whole in memory: it appears under `path` only if the block ends without an
    exception; else nothing changes. The file is seekable (a zip writes its
    headers back)."""
    tmp = temp_path(path)
    try:
        with open(_create(tmp), "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        _place(tmp, path, durable=durable)
    except BaseException:
        _discard(tmp)
        raise


def _place(tmp: str | Path, path: str | Path, *, durable: bool) -> None:
    os.replace(tmp, path)
    if durable:
        fsync_dir(Path(path).parent)


def _discard(tmp: str | Path) -> None:
    """Remove a temporary whose write failed (it may never have been created)."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def move(source: Path, target: Path) -> None:
    """Rename a whole file within the folder (a redo's image to its history
    name): atomic like step 4, so a crash leaves it under one name or the other."""
    os.replace(source, target)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` survive a power loss (POSIX: fsync the folder).

    Windows cannot open a folder for this and its renames are journalled by
    NTFS, so there it is a no-op."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
