"""handoff: blocking calls from the event loop in, their results back on the loop out.

Why not `loop.run_in_executor`: each call there costs the loop ~0.2 ms of CPU
(a concurrent future, a wrapping asyncio future, a thread wake-up and a
self-pipe write to come back), which at zero latency was more than writing the
image itself. Here the loop only appends to a queue; each thread takes up to
`batch` calls at once, runs them, and hands all their results back with a
single `call_soon_threadsafe`. Under load the wake-ups are shared by a whole
batch; when idle it behaves like a plain pool.

Results come back in submission order within a batch. A call's exception is
delivered to its own future; `close` drops queued calls (their futures are
cancelled when the loop is still running) and lets running ones finish: a
write in progress completes (atomically) rather than being cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Result = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Handoff:
    """A few threads running blocking calls for one event loop, in batches."""

    def __init__(self, threads: int, *, batch: int = 64, name: str = "batchgen-handoff") -> None:
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._batch = batch
        self._closed = False
        self._started = False
        # Started by the first call: a hand-off never used leaves no thread behind
        # (they are not daemons, so that a write in progress ends before exit).
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{n}", daemon=False)
            for n in range(threads)
        ]

    @property
    def size(self) -> int:
        """How many threads."""
        return len(self._threads)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run `fn(*args)` on a thread; await the returned future for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.cancel()
            return future
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        self._queue.put((loop, future, fn, args))
        return future

    def close(self) -> None:
        """Stop taking calls; queued ones are dropped, running ones finish (not waited for)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            for _ in self._threads:
                self._queue.put(None)

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            while len(calls) < self._batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # keep the stop signal for this thread's next turn
                    break
                calls.append(nxt)
            loop = first[0]
            results: list[_Result] = []
            for _loop, future, fn, args in calls:
                if self._closed:
                    results.append((future, None, asyncio.CancelledError()))
                    continue
                try:
                    results.append((future, fn(*args), None))
                except BaseException as exc:  # delivered to the caller, who decides
                    results.append((future, None, exc))
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_deliver, results)


def _deliver(results: list[_Result]) -> None:
    for future, value, exc in results:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        elif exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
