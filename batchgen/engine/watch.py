"""watch: a running pool in, a run that can be watched out.

Two duties on a timer, both off the pool's hot path:

* the progress display is updated every few seconds, so that its lines go on
  while no job ends (a pause after 429s, an endpoint that went away);
* every `report_every` seconds, ``report.json``, ``failed.jsonl`` and the
  gallery are rebuilt from the store by ``batchgen report OUT`` in a child
  process: the rebuild reads every job row, which in this process would take
  the interpreter from the event loop for seconds on a large folder, and a
  child runs on another core. The child opens the state read-only (SQLite in
  WAL mode reads beside the run's writer) and writes each file atomically. A
  refresh due while the last one runs is skipped. When the run ends, a refresh
  still running is interrupted (its files are written whole or not at all)
  before the run writes its final report, so an older snapshot can never land
  over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from batchgen.engine.progress import Progress
from batchgen.models import Counters

log = logging.getLogger(__name__)

#: How long a refresh interrupted at the end of the run gets to exit.
REFRESH_EXIT_S = 5.0


class Watch:
    """Start with `start()` on the loop; `await close()` when the pool is done."""

    def __init__(
        self,
        out: Path | str,
        progress: Progress,
        counters: Callable[[], Counters],
        *,
        report_every: float,
        state: str | None = None,
    ) -> None:
        self.out = out
        #: The run's `--state`, passed on to the report it starts.
        self.state = state
        self.progress = progress
        self.report_every = report_every
        #: Refreshes started, and skipped because the last one was still running.
        self.refreshes = 0
        self.skipped = 0
        self._counters = counters
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        step = self.progress.every
        if self.report_every > 0:
            step = min(step, self.report_every)
        due = time.monotonic() + self.report_every
        while True:
            await asyncio.sleep(step)
            self.progress.update(self._counters())
            if self.report_every > 0 and time.monotonic() >= due:
                due = time.monotonic() + self.report_every
                await self._refresh()

    async def _refresh(self) -> None:
        """Start a rebuild of the report files unless the last one is still running."""
        if self._child is not None and self._child.returncode is None:
            self.skipped += 1
            log.info("report refresh skipped: the last one is still running")
            return
        self._child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "batchgen",
            "report",
            str(self.out),
            *(() if self.state is None else ("--state", self.state)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.refreshes += 1

    async def close(self) -> None:
        """Stop the timer; interrupt a refresh still running and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        child = self._child
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(child.wait(), REFRESH_EXIT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
