"""storage: an `--out` (a folder or an fsspec URL) in, the `Output` every file of OUT goes through.

Images, sizes, previews, the report files and the gallery are written by the
same few calls whatever OUT is, with one promise: a file appears under its
final name only when whole.

- `LocalOutput`, a folder: today's code path, unchanged (`atomic.py`: a
  temporary name beside the final one, renamed into place). fsspec is never
  imported for it, so the zero-latency benchmark does not move.
- `RemoteOutput`, an fsspec URL (``s3://``, ``gs://``, ``memory://``): each file
  is one PUT of its whole bytes (`fs.pipe_file`); a streamed report file is
  written to a local temporary file first and put whole (`fs.put_file`: one PUT,
  or a multipart upload that the store shows only once completed). An object
  store has no rename and needs none: it never shows a partial object under a
  key. A transient failure (a throttled ``SlowDown``, a dropped connection) is
  retried with exponential backoff and jitter; past `RETRIES` the run stops
  (`OutputError`) and the job stays pending, so nothing is marked done that is
  not stored.

Credentials and endpoints come only from the stores' own chains (the AWS and
Google credential chains; ``AWS_ENDPOINT_URL`` for an S3-compatible store such
as MinIO): batchgen never takes them as flags, and a URL is redacted in every
message it makes (`where`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO, TypeVar

from batchgen.config import RunConfig, redact_url
from batchgen.errors import AbortError, UsageError
from batchgen.models import StopKind
from batchgen.output.atomic import TEMP_PREFIX, move, write_bytes, write_text

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "DiskFullError",
    "LocalOutput",
    "Output",
    "OutputError",
    "RemoteOutput",
    "StoredFile",
    "as_output",
    "is_disk_full",
    "is_url",
    "open_output",
    "redact",
    "run_output",
    "split_out",
]

#: Tries of one remote call before the run stops, and the backoff between them
#: (full jitter on base * 2**n, capped): throttling (``SlowDown``) passes in seconds.
RETRIES = 6
RETRY_BASE_S = 0.5
RETRY_CAP_S = 20.0

#: Errors that no retry mends: the object store said no, or there is nothing there.
_PERMANENT = (
    PermissionError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)


class DiskFullError(AbortError):
    """Raised when the disk is full: the run stops, nothing is marked done."""

    kind = StopKind.DISK


class OutputError(AbortError):
    """The object store kept refusing a write: the run stops, the job stays pending."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means no space is left (the disk, or the user's quota)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def is_url(target: str | os.PathLike[str]) -> bool:
    """Whether an `--out` value names an object store (``scheme://…``), not a folder."""
    text = os.fspath(target)
    scheme, sep, _rest = text.partition("://")
    return bool(sep) and scheme.isascii() and scheme.replace("+", "").isalnum() and len(scheme) > 1


def redact(url: str, text: str | None = None) -> str:
    """`url` (or `text` quoting it) without the URL's password or secret query values."""
    return redact_url(url, text)


def _check_rel(rel: str) -> str:
    """A path relative to OUT, posix, never leaving it (a tampered state file
    must not make batchgen write or read outside OUT)."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        raise ValueError(f"not a path inside the output folder: {rel!r}")
    return p.as_posix()


class Output:
    """Where OUT's files go. Paths are relative to OUT, posix (`images/ab/x.png`)."""

    #: OUT for messages and the report's "out" (a URL redacted).
    where: str
    #: The folder, for a local OUT; None for an object store.
    root: Path | None = None

    def write_bytes(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def write_text(self, rel: str) -> contextlib.AbstractContextManager[TextIO]:
        """A UTF-8 text file streamed into place, whole or not at all."""
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def open_read(self, rel: str) -> BinaryIO:
        """A file of OUT to read in chunks (an export's copies)."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def move(self, source: str, target: str) -> None:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def files(self, prefix: str) -> Iterator[str]:
        """Every file under `prefix` (a folder of OUT), relative to OUT."""
        raise NotImplementedError

    def is_fresh(self, source: str, derived: str) -> bool:
        """Whether `derived` (a preview) is there and no older than `source`."""
        raise NotImplementedError

    def clean_temporaries(self) -> int:
        """Remove what a killed writer left behind; how many."""
        return 0

    def __str__(self) -> str:
        return self.where


class LocalOutput(Output):
    """A folder: `atomic.py`'s temporary name and rename, exactly as before."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root)
        self.root = self.folder
        self.where = str(root)
        #: The folder as a string ending in a separator: an image's path is one
        #: concatenation, not a `Path` parsed per file.
        self._prefix = os.path.join(self.folder, "")

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self._prefix + rel
        try:
            write_bytes(path, data)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(
                    f"disk full while writing {path}; free some space and run the same "
                    "command again (finished images are kept)"
                ) from exc
            raise

    def write_text(self, rel: str) -> contextlib.AbstractContextManager[TextIO]:
        return write_text(self.folder / rel)

    def read_bytes(self, rel: str) -> bytes:
        return (self.folder / _check_rel(rel)).read_bytes()

    def open_read(self, rel: str) -> BinaryIO:
        return open(self.folder / _check_rel(rel), "rb")

    def exists(self, rel: str) -> bool:
        return (self.folder / rel).is_file()

    def move(self, source: str, target: str) -> None:
        move(self.folder / source, self.folder / target)

    def delete(self, rel: str) -> None:
        (self.folder / rel).unlink(missing_ok=True)

    def files(self, prefix: str) -> Iterator[str]:
        base = self.folder / prefix
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                if not name.startswith(TEMP_PREFIX):
                    yield Path(dirpath, name).relative_to(self.folder).as_posix()

    def is_fresh(self, source: str, derived: str) -> bool:
        try:
            src = (self.folder / source).stat().st_mtime_ns
            return (self.folder / derived).stat().st_mtime_ns >= src
        except FileNotFoundError:
            return False

    def clean_temporaries(self) -> int:
        from batchgen.output.sink import clean_temporaries

        return clean_temporaries(self.folder)


class RemoteOutput(Output):
    """An object store through fsspec: one whole PUT per file, retried with backoff."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - the extras install it
            raise UsageError(
                f"--out {redact(url)} needs fsspec and the store's driver: "
                "pip install 'batchgen[s3]' (or 'batchgen[gcs]')"
            ) from exc
        self.url = url
        self.where = redact(url)
        try:
            self.fs, base = url_to_fs(url, **(storage_options or {}))
        except ImportError as exc:
            raise UsageError(
                f"--out {self.where}: {redact(url, str(exc))} "
                "(pip install 'batchgen[s3]' or 'batchgen[gcs]')"
            ) from exc
        except ValueError as exc:
            raise UsageError(f"--out {self.where}: {redact(url, str(exc))}") from exc
        self.base = str(base).rstrip("/")

    def key(self, rel: str) -> str:
        """The store's path of a file of OUT."""
        return f"{self.base}/{_check_rel(rel)}"

    def _retry(self, what: str, rel: str, call: Callable[[], T]) -> T:
        """`call`, tried again after transient errors with full-jitter backoff."""
        for attempt in range(RETRIES):
            try:
                return call()
            except _PERMANENT:
                raise
            except (OSError, TimeoutError) as exc:
                if attempt == RETRIES - 1:
                    raise OutputError(
                        f"could not {what} {rel} in {self.where} after {RETRIES} tries: "
                        f"{redact(self.url, str(exc)) or type(exc).__name__}; the job stays "
                        "pending: run the same command again"
                    ) from None
                delay = random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt))
                log.warning(
                    "storage: %s %s failed (%s); again in %.1fs",
                    what, rel, type(exc).__name__, delay,
                )  # fmt: skip
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def write_bytes(self, rel: str, data: bytes) -> None:
        key = self.key(rel)
        self._retry("write", rel, lambda: self.fs.pipe_file(key, data))

    @contextlib.contextmanager
    def write_text(self, rel: str) -> Iterator[TextIO]:
        key = self.key(rel)
        with tempfile.TemporaryDirectory(prefix="batchgen-put-") as folder:
            local = Path(folder) / PurePosixPath(rel).name
            with open(local, "w", encoding="utf-8", newline="\n") as fh:
                yield fh
            self._retry("write", rel, lambda: self.fs.put_file(str(local), key))

    def read_bytes(self, rel: str) -> bytes:
        data: bytes = self._retry("read", rel, lambda: self.fs.cat_file(self.key(rel)))
        return data

    def open_read(self, rel: str) -> BinaryIO:
        handle: BinaryIO = self._retry("open", rel, lambda: self.fs.open(self.key(rel), "rb"))
        return handle

    def exists(self, rel: str) -> bool:
        return bool(self._retry("look for", rel, lambda: self.fs.isfile(self.key(rel))))

    def move(self, source: str, target: str) -> None:
        """Copy, then delete (a store has no rename): a crash in between leaves the
        file under both names, never under neither."""
        src, dst = self.key(source), self.key(target)
        self._retry("copy", source, lambda: self.fs.copy(src, dst))
        self.delete(source)

    def delete(self, rel: str) -> None:
        key = self.key(rel)
        with contextlib.suppress(FileNotFoundError):
            self._retry("delete", rel, lambda: self.fs.rm_file(key))

    def files(self, prefix: str) -> Iterator[str]:
        root = self.key(prefix)
        try:
            found: list[str] = self._retry("list", prefix, lambda: self.fs.find(root))
        except FileNotFoundError:
            return
        head = self.base + "/"
        for path in found:
            if str(path).startswith(head):
                yield str(path)[len(head) :]

    def is_fresh(self, source: str, derived: str) -> bool:
        """A preview is made as its image lands (and remade when it is redone):
        there it is fresh. (Comparing times would cost two requests a file.)"""
        return self.exists(derived)


def open_output(
    target: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Output:
    """The `Output` of an `--out` value: a URL is an object store, anything else a folder."""
    if is_url(target):
        return RemoteOutput(os.fspath(target), storage_options)
    return LocalOutput(Path(target))


def local_dir(url: str) -> Path:
    """The local folder of a run whose OUT is `url`: what stays on this machine
    (never the state: a remote OUT needs an explicit ``--state``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache, "batchgen", "out", hashlib.sha256(url.encode()).hexdigest()[:16])


def split_out(value: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """An ``--out`` value as (the local folder, the object store's URL or None)."""
    if is_url(value):
        url = os.fspath(value)
        return local_dir(url), url
    return Path(value), None


def run_output(config: RunConfig) -> Output:
    """Where a run's files go: `out_url`'s object store, else the folder `out`."""
    if config.out_url is not None:
        return RemoteOutput(config.out_url, config.storage_options)
    return LocalOutput(config.out)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file of OUT read like a `Path` (`read_bytes`): a chained job's input
    when OUT is an object store."""

    output: Output
    rel: str

    def read_bytes(self) -> bytes:
        return self.output.read_bytes(self.rel)

    def open(self, mode: str = "rb") -> BinaryIO:
        """Read only, like `Path.open("rb")`."""
        if mode != "rb":
            raise ValueError(f"a stored file opens for reading only, not {mode!r}")
        return self.output.open_read(self.rel)

    def __str__(self) -> str:
        return f"{self.output.where}/{self.rel}"


def as_output(out: Path | Output) -> Output:
    """Callers that still hold OUT's folder get its `LocalOutput`."""
    return out if isinstance(out, Output) else LocalOutput(out)
