"""signals: SIGINT and SIGTERM in, a run that stops cleanly out.

Outside the pool (validating, planning, writing the report) SIGTERM raises
KeyboardInterrupt like Ctrl-C, so that a supervisor's stop never kills the run
without its `finally`. While the pool runs, the two-stage handler: the first
signal stops admitting requests and lets in-flight ones finish (up to the
grace period), the second cancels the run's task at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from batchgen.errors import EXIT_INTERRUPTED
from batchgen.models import StopKind, StopReason

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt within the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class Stoppable(Protocol):
    """What the handlers stop: the pool, or a Batch Mode run."""

    def request_stop(self, reason: StopReason) -> None: ...


class TwoStage:
    """The pool's handlers: `with TwoStage(pool, grace):` around `pool.run`;
    `interrupts` counts the signals heard."""

    def __init__(self, pool: Stoppable, grace_seconds: float) -> None:
        self.pool = pool
        self.grace_seconds = grace_seconds
        self.interrupts = 0
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []
        self._previous: dict[signal.Signals, Any] = {}

    def _on_signal(self) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            # Said at once, so that the person (or supervisor) knows it was heard.
            log.warning(
                "interrupted: finishing in-flight requests (up to %gs); "
                "interrupt again to stop at once",
                self.grace_seconds,
            )
            self.pool.request_stop(
                StopReason(
                    StopKind.INTERRUPTED,
                    "interrupted: unfinished jobs stay pending; run the same command "
                    "again to continue",
                    EXIT_INTERRUPTED,
                )
            )
        elif self._task is not None:
            self._task.cancel()

    def __enter__(self) -> TwoStage:
        self._previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
        for sig in _SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._on_signal)
                self._installed.append(sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
            # asyncio resets to the default; put back what was there before.
            handler = self._previous[sig]
            if handler is not None:
                signal.signal(sig, handler)
