"""spool: an HTTP answer's body in, its bytes in memory or a spool file out.

Real answers at 2K and 4K are 10-30 MB of image, 13-40 MB of base64 JSON.
Held whole, as bytes, then as the str `json.loads` makes of them, then
decoded, one such answer costs ~70 MB, and a pool of 32 in flight 2 GB. So a
body above `SPOOL_ABOVE` bytes is streamed, as it arrives, to a file under
`OUT/.batchgen/spool/`; small ones (the 16-px test images, the zero-latency
path) stay in memory as before. A spooled body is then read through `mmap`:
the few hundred bytes of JSON around the base64 are parsed as usual, and each
long `inlineData.data` string is decoded straight from the mapped file
(`decode_span`), as strictly as `base64.b64decode(..., validate=True)`, so no
17 MB string is ever made. pybase64 decodes: 3 ms for a 2048-px answer where
the standard library took 45-63 ms, the largest part of its CPU.

A spool file is scratch, not a record: the answer is on record only once the
job's end is committed (the pool holds the request's slot until then), so a
killed run's spool files are simply removed when the next run starts.
"""

from __future__ import annotations

import binascii
import contextlib
import itertools
import json
import mmap
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pybase64

#: Bodies larger than this go to a spool file (a 1K answer, ~1.5 MB, stays in memory).
SPOOL_ABOVE = 4 * 1024 * 1024
#: Base64 strings at least this long are left out of the parsed JSON and decoded
#: from the file; shorter ones are parsed as usual.
LONG_STRING = 64 * 1024
#: What stands for the n-th long string in the parsed JSON (no valid base64 has a NUL).
MARKER = "\x00spool:"
_TO_VALUE = re.compile(rb'\s*:\s*"')
_names = itertools.count()


class SpoolError(OSError):
    """The spool file could not be written or read: the local disk's fault, not
    the server's, so the client lets it through (a full disk stops the run, as
    it does when an image cannot be written) instead of retrying the request."""


@dataclass(frozen=True, slots=True)
class Spooled:
    """A 200 answer's whole body, in a spool file that its reader removes."""

    path: Path
    size: int


def clear(folder: Path) -> None:
    """Remove what a killed run left in the spool folder (scratch only)."""
    shutil.rmtree(folder, ignore_errors=True)


async def receive(
    resp: aiohttp.ClientResponse, *, cap: int, folder: Path | None
) -> bytes | Spooled | None:
    """The body: bytes, or `Spooled` when it is a 200 larger than `SPOOL_ABOVE` and
    `folder` is given; None when it is larger than `cap` (never more than `SPOOL_ABOVE`
    of it in memory). A body that breaks off leaves no spool file."""
    length = resp.content_length
    if length is not None and length > cap:
        return None
    spool = folder is not None and resp.status == 200
    # Declared large: to the file from the first byte, not after SPOOL_ABOVE of it.
    above = 0 if length is not None and length > SPOOL_ABOVE else SPOOL_ABOVE
    chunks: list[bytes] = []
    size = 0
    fd: int | None = None
    path = _NO_FILE
    try:
        # The pieces as the parser made them: `iter_chunked` joins them into
        # fixed sizes, a copy of the whole body on the loop (~4 ms at 4K).
        async for chunk, _ in resp.content.iter_chunks():
            size += len(chunk)
            if size > cap:
                _discard(fd, path)
                return None
            if fd is not None:
                _write(fd, chunk, path)
                continue
            chunks.append(chunk)
            if spool and size > above and folder is not None:
                path = folder / f"{os.getpid():x}-{next(_names):x}.json"
                fd = _open(path)
                for held in chunks:
                    _write(fd, held, path)
                chunks = []
    except BaseException:
        _discard(fd, path)
        raise
    if fd is None:
        return b"".join(chunks)
    try:
        os.close(fd)
    except OSError as exc:
        _discard(None, path)
        raise SpoolError(exc.errno, exc.strerror, str(path)) from exc
    return Spooled(path, size)


def _open(path: Path) -> int:
    try:
        os.makedirs(path.parent, exist_ok=True)  # once a run: cheap
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise SpoolError(exc.errno, exc.strerror, str(path)) from exc


def _write(fd: int, data: bytes, path: Path) -> None:
    try:
        _write_all(fd, data)
    except OSError as exc:
        raise SpoolError(exc.errno, exc.strerror, str(path)) from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


#: No spool file (yet): one shared stand-in; a `Path()` per answer cost 3.4 us.
_NO_FILE = Path()


def _discard(fd: int | None, path: Path) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    if path.name:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap]:
    """A spool file mapped read-only; `SpoolError` when it cannot be."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the map
    except OSError as exc:
        raise SpoolError(exc.errno, exc.strerror, str(path)) from exc
    with fh:
        try:
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise SpoolError(exc.errno, exc.strerror, str(path)) from exc
        with mm:
            yield mm


@dataclass(slots=True)
class Envelope:
    """A spooled body: its JSON with every long base64 string replaced by
    `MARKER` + n, and where each of those strings lies in the mapped file."""

    doc: Any
    spans: list[tuple[int, int]]


def envelope(mm: mmap.mmap) -> Envelope | None:
    """The JSON of a mapped body without its long strings, or None when that is
    not JSON (a cut-off body: the caller then parses it whole). An escape
    inside a long string is found only if its decoding fails (`Escaped`): a
    second pass over every answer's 13-40 MB looking for one cost ~2 ms."""
    pieces: list[bytes] = []
    spans: list[tuple[int, int]] = []
    at = pos = 0
    # `find` for the key, not a regex over the whole file: the search skips each
    # long string at memchr speed instead of stepping through it.
    while (key := mm.find(b'"data"', pos)) >= 0:
        colon = _TO_VALUE.match(mm, key + 6)
        if colon is None:
            pos = key + 6
            continue
        start = colon.end()
        end = mm.find(b'"', start)
        if end < 0:
            return None
        pos = end + 1
        if end - start < LONG_STRING:
            continue
        pieces += [mm[at:start], b"\\u0000spool:%d" % len(spans)]  # JSON for MARKER
        spans.append((start, end))
        at = end
    pieces.append(mm[at:])
    try:
        return Envelope(json.loads(b"".join(pieces)), spans)
    except (ValueError, UnicodeDecodeError):
        return None


class Escaped(Exception):
    """A long string holds a JSON escape (``\\/`` is valid JSON for ``/``): its
    text is not the raw file's bytes, so the caller parses the body whole."""


def decode_span(mm: mmap.mmap, start: int, end: int) -> bytes:
    """Standard or URL-safe base64 from `mm[start:end]`, with or without padding;
    `binascii.Error` for anything else, as `base64.b64decode(validate=True)` would
    (surrounding whitespace aside), or `Escaped`.

    The usual case, standard and padded, is decoded straight from the mapped
    file with no copy of the text and no other pass over it; only when that
    fails is the text looked at again (URL-safe letters, missing padding, an
    escape). Looking first cost three scans of every answer (~3 ms at 4K)."""
    while start < end and mm[start] in b" \t\r\n":
        start += 1
    while end > start and mm[end - 1] in b" \t\r\n":
        end -= 1
    try:
        with memoryview(mm) as whole, whole[start:end] as text:
            return pybase64.b64decode(text, validate=True)
    except binascii.Error:
        pass
    if mm.find(b"\\", start, end) >= 0:
        raise Escaped
    copy = mm[start:end].translate(_URLSAFE) + b"=" * (-(end - start) % 4)
    return pybase64.b64decode(copy, validate=True)


_URLSAFE = bytes.maketrans(b"-_", b"+/")
