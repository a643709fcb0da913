"""writer: an answer's images in, files in OUT and what was written (`Written`) out.

Each answer is checked (every image must parse: a right signature before
garbage, or a cut-off body, is never a finished image), written atomically by
the sink, resized to the job's platform sizes, and given its gallery preview
as it lands. Where that happens is the one decision here: on the event loop
or on a writer thread (`Writer.save`), by how busy the loop is; or, given an
`ExtrasMaker` (the Ray engine), the sizes and the preview elsewhere, while the
job waits for them: they exist before the job is marked done either way.
`make_extras` is the one home of what the sizes and the preview are.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from batchgen.models import GeneratedImage, Job
from batchgen.output import client
from batchgen.output.handoff import Handoff
from batchgen.output.mime import extension_for
from batchgen.output.sink import image_paths, write_images, write_sizes
from batchgen.output.storage import Output, as_output
from batchgen.output.thumbs import is_own_preview, preview

T = TypeVar("T")

#: Image output (check, write, sizes, previews) runs on its own threads, one per
#: core: more only fight over the GIL. They take answers in batches (`Handoff`).
WRITER_THREADS = min(8, os.cpu_count() or 2)

#: Answers up to this many image bytes are checked and written on the loop while
#: the process is busier than `BUSY_LOOP` (its CPU over wall time, all threads,
#: sampled every `LOAD_PERIOD_S`): see `Writer.save`.
INLINE_BYTES = 256 * 1024
BUSY_LOOP = 0.6
LOAD_PERIOD_S = 0.5


#: A job's platform sizes, (path, upscaled?) each, and its preview (None: none).
Extras = tuple[list[tuple[str, bool]], str | None]


class ExtrasMaker(Protocol):
    """Makes a job's sizes and preview away from the writer's threads (the Ray
    engine: a task on any core of the cluster) through the run's `Output`, and
    returns them only once they are stored."""

    async def __call__(
        self,
        job_id: str,
        sizes: tuple[str, ...],
        image_rel: str,
        data: bytes,
        first: tuple[int, int],
        thumbnails: bool,
    ) -> Extras: ...


class ExtrasUnavailable(Exception):
    """An `ExtrasMaker` could not run the work (its tasks were lost past their
    retries): the writer makes the sizes and the preview on its own threads."""


def make_extras(
    out: Output,
    job_id: str,
    sizes: tuple[str, ...],
    image_rel: str,
    data: bytes,
    first: tuple[int, int],
    *,
    thumbnails: bool,
) -> Extras:
    """A job's platform sizes and the preview of its first image (`image_rel`,
    whose bytes are `data` and pixel size `first`), written through `out`."""
    sized = write_sizes(out, job_id, data, sizes) if sizes else []
    shown = preview(out, image_rel, first, len(data), data) if thumbnails else None
    return sized, shown


@dataclass(slots=True)
class Written:
    """What was put on disk for one answer (paths relative to OUT)."""

    images: list[str]
    #: Platform sizes: (path, upscaled?).
    sized: list[tuple[str, bool]]
    preview: str | None
    #: The first image's real (width, height): the service has ignored
    #: ``imageSize`` before, so the size asked for is not trusted.
    pixels: tuple[int, int] | None = None

    @property
    def files(self) -> list[str]:
        """Every file of the job, as its store row lists them: images, then sizes."""
        return self.images + [path for path, _up in self.sized]

    @property
    def upscaled(self) -> list[str]:
        return [path for path, up in self.sized if up]


class Writer:
    """Writes answers under one output folder, on the loop or on its threads."""

    def __init__(
        self,
        out: Path | Output,
        *,
        sharded: bool,
        thumbnails: bool,
        threads: int | None = None,
        extras: ExtrasMaker | None = None,
    ) -> None:
        """`extras`: where sizes and previews are made when not on this writer's
        threads (None: here, as the inline engine does)."""
        #: A folder or an object store (`storage`): the same calls write to either.
        self.out = as_output(out)
        self._extras = extras
        #: An object store's PUT is a network round trip: never made on the loop.
        self._local = self.out.root is not None
        self.sharded = sharded
        self.thumbnails = thumbnails
        count = WRITER_THREADS if threads is None else threads
        self._threads = Handoff(count, name="batchgen-writer")
        #: Share of the last `LOAD_PERIOD_S` the process was on the CPU (at most 1).
        #: Busy until measured: at zero latency the first half second's answers
        #: went to threads, and at any latency few answers arrive that soon.
        self._loop_busy = 1.0
        self._load_mark = (0.0, 0.0)
        self._load_timer: asyncio.TimerHandle | None = None
        #: Inline images left for a recorder to write with their unit's rows
        #: (`deferring`); None: written here.
        self._deferred: list[tuple[str, bytes]] | None = None

    def deferring(self) -> None:
        """From now on, images saved on the loop are not written here: the ledger
        takes them (`take_files`) and its recorder writes them before the rows
        of their unit of work (`store/recorder.py`)."""
        self._deferred = []

    def take_files(self) -> list[tuple[str, bytes]]:
        """The inline images saved since the last call: (path relative to OUT, bytes)."""
        files = self._deferred
        if not files:
            return []
        self._deferred = []
        return files

    @property
    def at_once(self) -> int:
        """Large answers to decode and write at once: one per thread and one more
        being parsed, so that memory follows these few, not the answers in flight."""
        return self._threads.size + 1

    def busy(self) -> bool:
        """Whether the process, not the API, bounds the run (see `_sample_load`)."""
        return self._loop_busy > BUSY_LOOP

    def call(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run a blocking call (parsing a spooled answer) on the writer threads."""
        return self._threads.submit(fn, *args)

    def start(self) -> None:
        """Begin sampling the loop's load (call on the loop that will `save`)."""
        self._sample_load()

    def close(self) -> None:
        """Stop sampling; queued writes are dropped, running ones finish."""
        if self._load_timer is not None:
            self._load_timer.cancel()
            self._load_timer = None
        self._threads.close()

    def _sample_load(self) -> None:
        """Measure how much CPU the process wanted since the last sample (for `save`).

        The process's CPU (every thread's), not the loop thread's: writes handed
        to threads took their CPU off the loop's thread, so its share fell below
        `BUSY_LOOP` and writes then stayed on threads (29 % of a zero-latency
        run's answers, ~0.2 ms of GIL hand-overs each). Plus the time the loop's
        thread waited for a core while ready to run: on a machine shared with
        other work the process gets less CPU than it wants, and that is no
        sign that the API, rather than the loop, bounds the run."""
        loop = asyncio.get_running_loop()
        now, cpu = loop.time(), time.process_time() + _runqueue_wait()
        wall_then, cpu_then = self._load_mark
        if wall_then:
            self._loop_busy = min(1.0, (cpu - cpu_then) / max(now - wall_then, 1e-6))
        self._load_mark = (now, cpu)
        self._load_timer = loop.call_later(LOAD_PERIOD_S, self._sample_load)

    async def save(self, job: Job, images: tuple[GeneratedImage, ...]) -> Written | None:
        """Check and write an answer's images: None when one does not parse.

        When the event loop is busy (it, not the API, bounds the run), a small
        answer that needs no decoding (no platform sizes, no preview to make) is
        written right here on the loop: handing it to a thread cost the loop more
        than the write, and the threads' GIL hand-overs stalled it (measured at
        zero latency: ~0.2 ms a job). Otherwise the loop has time to spare and
        should spend it reading answers promptly (at 0.2 s latency, writing on
        the loop cost 1.5 % of C/L), so everything goes to a writer thread.
        """
        if self._extras is not None and (job.sizes or self.thumbnails):
            return await self._save_then_extras(job, images, self._extras)
        inline = self.busy() and not job.sizes and self._local
        if not inline or sum(len(image.data) for image in images) > INLINE_BYTES:
            return await self._threads.submit(self._check_and_write, job, images)
        dims = _dims(images)
        if dims is None:
            return None
        first = dims[0]
        head = images[0]
        if self.thumbnails and not is_own_preview(_suffix(head), first, len(head.data)):
            return await self._threads.submit(self._write, job, images, first)
        if self._deferred is not None:
            files = image_paths(job.id, images, sharded=self.sharded)
            self._deferred += zip(files, (image.data for image in images), strict=True)
            return Written(files, [], files[0] if self.thumbnails else None, first)
        return self._write(job, images, first)

    def _check_and_write(self, job: Job, images: tuple[GeneratedImage, ...]) -> Written | None:
        dims = _dims(images)
        return None if dims is None else self._write(job, images, dims[0])

    def _check_and_write_images(
        self, job: Job, images: tuple[GeneratedImage, ...]
    ) -> Written | None:
        dims = _dims(images)
        if dims is None:
            return None
        files = write_images(self.out, job.id, images, sharded=self.sharded)
        return Written(files, [], None, dims[0])

    async def _save_then_extras(
        self, job: Job, images: tuple[GeneratedImage, ...], extras: ExtrasMaker
    ) -> Written | None:
        """The images here, then the sizes and the preview by `extras`, awaited:
        the caller marks the job done only once both are stored."""
        written = await self._threads.submit(self._check_and_write_images, job, images)
        if written is None or written.pixels is None:
            return None
        head, first = images[0], written.pixels
        if not job.sizes and is_own_preview(_suffix(head), first, len(head.data)):
            # No task for an image that is its own preview: `preview` just says so.
            written.preview = preview(self.out, written.images[0], first, len(head.data))
            return written
        args = (job.id, job.sizes, written.images[0], head.data, first)
        try:
            written.sized, written.preview = await extras(*args, self.thumbnails)
        except ExtrasUnavailable:
            here = functools.partial(make_extras, thumbnails=self.thumbnails)
            written.sized, written.preview = await self._threads.submit(here, self.out, *args)
        return written

    def _write(
        self, job: Job, images: tuple[GeneratedImage, ...], first: tuple[int, int]
    ) -> Written:
        """The images, their platform sizes, and the first one's preview (made now,
        as it lands, so the report never has to make them all; the gallery shows
        only that one). `first` is the first image's pixel size."""
        out = self.out
        files = write_images(out, job.id, images, sharded=self.sharded)
        sized, shown = make_extras(
            out, job.id, job.sizes, files[0], images[0].data, first, thumbnails=self.thumbnails
        )
        return Written(files, sized, shown, first)


def _dims(images: tuple[GeneratedImage, ...]) -> list[tuple[int, int]] | None:
    """Every image's pixel size, or None when one does not parse (or there is none)."""
    dims = [client.image_size(image.data, image.mime_type) for image in images]
    if not dims or None in dims:
        return None
    return [d for d in dims if d is not None]


def _runqueue_wait() -> float:
    """Seconds the calling thread has waited for a core while ready to run
    (Linux's schedstat; 0 where there is none)."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _suffix(image: GeneratedImage) -> str:
    return "." + extension_for(image.mime_type)
