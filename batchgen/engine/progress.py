"""Progress display: a tqdm bar on a terminal, a plain line every few seconds otherwise.

Both read the pool's `Counters`; neither ever sees the API key. The plain line
(a log file of a night run) carries what a person checking on it asks first:
how fast (jobs per minute, this run), for how long, and how long still (the
ETA at that rate). `note` says what the run is waiting for, if anything (an
endpoint that went away); the runner calls `update` every few seconds too, so
that the lines go on while nothing ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from batchgen.models import Counters


def _fields(c: Counters) -> str:
    return (
        f"done={c.done} blocked={c.blocked} failed={c.failed} retrying={c.retrying} "
        f"requests={c.requests} spend=${c.spent:.2f}"
    )


def clock_time(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a progress line."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def pace(finished: int, total: int, elapsed: float) -> str:
    """Rate in jobs per minute, elapsed time, and the ETA at that rate."""
    rate = finished * 60 / elapsed if elapsed > 0 else 0.0
    left = max(0, total - finished)
    eta = clock_time(left * 60 / rate) if rate > 0 else "?"
    return f"rate={rate:.1f}/min elapsed={clock_time(elapsed)} eta={eta if left else '0s'}"


class Progress:
    def __init__(
        self, total: int, *, enabled: bool = True, stream: TextIO | None = None, every: float = 5.0
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every = every
        #: What the run waits for, in a few words ("" when nothing).
        self.note: Callable[[], str] = lambda: ""
        self._started = time.monotonic()
        self._last = 0.0
        self._bar: Any = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="img", dynamic_ncols=True)

    def update(self, c: Counters) -> None:
        if not self.enabled:
            return
        finished = c.done + c.blocked + c.failed + c.skipped
        if self._bar is not None:
            self._bar.n = finished
            note = self.note()
            self._bar.set_postfix_str(
                f"{_fields(c)} | {note}" if note else _fields(c), refresh=False
            )
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            note = self.note()
            line = (
                f"progress {finished}/{self.total} {_fields(c)} "
                f"{pace(finished, self.total, now - self._started)}"
            )
            print(f"{line} | {note}" if note else line, file=self.stream, flush=True)

    def close(self, c: Counters) -> None:
        if self._bar is not None:
            self.update(c)
            self._bar.close()
        elif self.enabled:
            self._last = 0.0
            self.update(c)
