"""Pool-wide pacing, back-pressure after 429s, a circuit breaker, and the retry delay.

Why not tenacity: tenacity retries one call with its own sleep; here a 429 on
one job must slow *every* worker, the quota is shared by the whole pool, and
attempts are persisted so that a resumed run keeps counting. So the policy is
two small objects: `Pacer` (admission of every request, shared) and
`backoff` (the per-job delay formula). Clock and sleep are injected so that
tests never sleep.

`Pacer.acquire` admits one request when all of these hold:

* the pool is not paused (a 429's `retryDelay`, or an open breaker);
* at least ``1 / rate`` seconds passed since the previous admission (even
  spacing: no burst at the top of each minute);
* with ``--rpm N``, fewer than N admissions in the last 60 s (a sliding window:
  spacing alone would allow N + 1 in a window whose ends both hold one).

Without ``--rpm`` the rate adapts (AIMD): unlimited until the first 429, then
the rate that the server accepted over the last window, times 0.97; after each
quiet window it grows by 5 % to probe for more; each further 429 sets it back
to the accepted rate again (multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def backoff(attempt: int, rng: random.Random, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Delay before retry number `attempt` (1 = first retry):
    ``min(cap, base * 2**(attempt-1)) * U(0.5, 1.5)``, never above ``1.5 * cap``."""
    exp = min(cap, base * 2 ** max(0, attempt - 1))
    return float(exp * (0.5 + rng.random()))


class Pacer:
    """Admission control shared by every worker of a run."""

    BREAKER_THRESHOLD = 8
    WINDOW = 60.0

    def __init__(
        self,
        rpm: float | None = None,
        *,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        window: float = WINDOW,
    ) -> None:
        self.rpm = rpm
        self.window = window
        self.adaptive = adaptive and rpm is None
        self.rate: float = rpm / window if rpm else math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._next = 0.0
        self.paused_until = 0.0
        self._sent: deque[float] = deque()
        self._accepted: deque[float] = deque()
        self._last_429 = -math.inf
        self._last_raise = 0.0
        self._server_errors = 0
        self._breaker_delay = 5.0
        self.rate_limited = 0

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                wait = max(self.paused_until - now, self._next - now, self._window_wait(now))
                if wait <= 0:
                    break
                await self._sleep(wait)
            interval = 0.0 if math.isinf(self.rate) else 1.0 / self.rate
            self._next = max(now, self._next) + interval
            if self.rpm is not None:
                self._sent.append(now)

    def _window_wait(self, now: float) -> float:
        if self.rpm is None:
            return 0.0
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        if len(self._sent) < int(self.rpm):
            return 0.0
        return self._sent[0] + self.window - now + 1e-3

    def _trim(self, now: float) -> None:
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()

    def on_success(self) -> None:
        self._server_errors = 0
        self._breaker_delay = 5.0
        if not self.adaptive:
            return
        now = self._clock()
        self._accepted.append(now)
        self._trim(now)
        if (
            not math.isinf(self.rate)
            and now - self._last_429 > self.window
            and now - self._last_raise > self.window
        ):
            self.rate *= 1.05
            self._last_raise = now

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause everyone for the server's delay and, adaptively, slow down."""
        self.rate_limited += 1
        now = self._clock()
        delay = retry_after if retry_after is not None else 2.0
        self.paused_until = max(self.paused_until, now + delay)
        if not self.adaptive:
            return
        self._trim(now)
        # One burst of 429s (the requests that were in flight together) is one signal.
        # With nothing accepted in the window there is no rate to learn from: the
        # pause alone paces the pool.
        if (now - self._last_429 > 1.0 or math.isinf(self.rate)) and self._accepted:
            accepted = len(self._accepted) / self.window
            self.rate = max(1.0 / self.window, min(self.rate, accepted) * 0.97)
        self._last_429 = now

    def on_server_error(self) -> None:
        """Many server errors in a row open the breaker: everyone waits a while."""
        self._server_errors += 1
        if self._server_errors >= self.BREAKER_THRESHOLD:
            self.paused_until = max(self.paused_until, self._clock() + self._breaker_delay)
            self._breaker_delay = min(60.0, self._breaker_delay * 2)
            self._server_errors = 0
