"""Progress display: a tqdm bar on a terminal, a plain line every few seconds otherwise.

Both read the pool's `Counters`; neither ever sees the API key.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from batchgen.models import Counters


def _fields(c: Counters) -> str:
    return (
        f"done={c.done} blocked={c.blocked} failed={c.failed} retrying={c.retrying} "
        f"requests={c.requests} spend=${c.spent:.2f}"
    )


class Progress:
    def __init__(
        self, total: int, *, enabled: bool = True, stream: TextIO | None = None, every: float = 5.0
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every = every
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
            self._bar.set_postfix_str(_fields(c), refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            print(f"progress {finished}/{self.total} {_fields(c)}", file=self.stream, flush=True)

    def close(self, c: Counters) -> None:
        if self._bar is not None:
            self.update(c)
            self._bar.close()
        elif self.enabled:
            self._last = 0.0
            self.update(c)
