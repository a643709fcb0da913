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
* with ``--rpm N``, fewer than N admissions in the last window W (a sliding
  window: spacing alone would allow N + 1 in a window whose ends both hold
  one). With ``--rpm`` the rate is ``0.99 * N / W``, so that jitter on the
  way to the server cannot put N + 1 requests in one of *its* windows.

Without ``--rpm`` the rate adapts (AIMD), learning the quota from the server:

* unlimited until the first 429, except for the *slow start* below;
* a 429 opens a *burst*: the pool pauses (``retryDelay``, else 2 s), so no
  request is admitted until the pause ends and every answer to the requests
  already sent is back. The server's window was full when it refused, so its
  quota is ``Q = admitted - rejected``: our admissions in the W seconds before
  the first 429, minus the 429s of the burst. When the pause ends the rate
  becomes ``min(rate, Q / W) * 0.97`` (multiplicative decrease; nothing
  accepted means nothing to learn, and the pause alone paces the pool);
* a burst is a wall only if the requests sent after the first refused one
  were refused too: when more of them succeeded than were refused, it was a
  passing refusal (shared capacity, a random 429), the pause is kept and
  nothing is learned. Requests sent *before* the refused one may succeed at
  a wall (they were in flight), so they do not count against it;
* after each window W with no 429 and no raise, the rate grows by 5 % to
  probe for quota freed by other clients (the increase).

Slow start (``slow_start=True``, what a run asks for when the quota is unknown):
an unpaced pool sends in waves, every worker whose answer came back at once,
so the first wall refuses a whole wave (up to C requests) before the first 429
comes back: 7-15 % of a short run's requests. The server refuses at once when
its window is full, so a *paced* pool loses only what it sends while that
first 429 travels back (one or two requests). So until the first 429,
admissions are also spaced by a ramp that doubles with each clean answer::

    ramp = RAMP_START * 2**(clean answers)      (fully open at RAMP_OPEN = 2**5 * RAMP_START)

so it at least doubles every round trip, and opens after five answers.
``RAMP_START`` = 500/s is about what a latency-bound pool sends (C / L); its
job is to spread the first wave over C / 500 s (no answer can come back
before a round trip), and the pool stays spread afterwards because answers
come back as spread as the requests went. Doubling per answer rather than
per round trip is what a zero-latency run needs: there the first answers take
tens of milliseconds (connections, the first writes) while few are in flight,
and a ramp held for a few round trips cost it a third of a short run.
At ``RAMP_OPEN`` the pool is fully open (no spacing, as without slow start).
The first 429 ends the ramp (the learned rate takes over, as above). A paced
wall is small by design, so a burst that begins within W of the run's first
answer, before any other burst, is judged only by the requests sent after the
refused one (all refused: a wall), not by its size. That is when a first wall
can come: a pool that sends fewer than Q in its first window never fills one.

W is 60 s, the API's per-minute window. The hidden environment variable
``BATCHGEN_QUOTA_WINDOW`` (seconds) scales it, for benchmarks against a
simulator whose quota window was scaled the same way.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: The API's per-minute quota window, in seconds.
WINDOW = 60.0
WINDOW_ENV = "BATCHGEN_QUOTA_WINDOW"


def quota_window() -> float:
    """W: 60 s, unless `BATCHGEN_QUOTA_WINDOW` (benchmarks only) says otherwise."""
    raw = os.environ.get(WINDOW_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return WINDOW
    return value if math.isfinite(value) and value > 0 else WINDOW


def backoff(attempt: int, rng: random.Random, *, base: float = 1.0, cap: float = 60.0) -> float:
    """Delay before retry number `attempt` (1 = first retry):
    ``min(cap, base * 2**(attempt-1)) * U(0.5, 1.5)``, never above ``1.5 * cap``."""
    exp = min(cap, base * 2 ** max(0, attempt - 1))
    return float(exp * (0.5 + rng.random()))


class Admission(Protocol):
    """What the pool asks of its pacer: a `Pacer` in this process, or the Ray
    engine's `RemotePacer` in front of the one `Pacer` of a whole cluster."""

    async def acquire(self) -> float: ...

    def on_success(self, sent_at: float | None = None) -> None: ...

    def on_rate_limited(self, retry_after: float | None, sent_at: float | None = None) -> None: ...

    def on_server_error(self) -> None: ...


@dataclass
class _Burst:
    """429s answered to requests that were sent before the pause began."""

    at: float
    admitted: int
    #: It began during the slow start: a small burst may still be a wall.
    paced: bool = False
    rejected: int = 0
    #: When the first refused request was sent (its admission time).
    first_refused: float = math.inf
    #: Successes, while the burst lasted, of requests sent after `first_refused`.
    accepted: int = 0
    #: Every success answered while the burst lasted.
    answered_ok: int = 0


class Pacer:
    """Admission control shared by every worker of a run."""

    BREAKER_THRESHOLD = 8
    WINDOW = WINDOW
    #: The share of the learned quota the pool runs at after a 429.
    DECREASE = 0.97
    #: Growth after each quiet window.
    INCREASE = 1.05
    #: With --rpm, the share of N per window actually used (jitter margin).
    RPM_MARGIN = 0.99
    #: The slow start's first admission rate and where it opens fully (per second).
    RAMP_START = 500.0
    RAMP_OPEN = 16_000.0

    def __init__(
        self,
        rpm: float | None = None,
        *,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        window: float | None = None,
        slow_start: bool = False,
        guard: float = 0.0,
    ) -> None:
        """`guard`: with `rpm`, seconds added to the sliding window admissions are
        counted over, for admissions that reach the wire after uneven delays (the
        Ray engine's grants travel through an actor call: two admitted a window
        apart can arrive closer than that)."""
        self.rpm = rpm
        self.window = window if window is not None else quota_window()
        self._span = self.window + (guard if rpm else 0.0)
        self.adaptive = adaptive and rpm is None
        self.rate: float = rpm * self.RPM_MARGIN / self.window if rpm else math.inf
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._next = 0.0
        self.paused_until = 0.0
        #: Admission times within the last window (rpm limit, quota learning).
        self._sent: deque[float] = deque()
        self._burst: _Burst | None = None
        #: Times of 429s within the last window: admissions the server did not accept.
        self._refused: deque[float] = deque()
        self._last_429 = -math.inf
        self._last_raise = -math.inf
        self._server_errors = 0
        self._breaker_delay = 5.0
        self.rate_limited = 0
        #: The quota learned from the last burst of 429s (requests per window).
        self.learned_quota: int | None = None
        #: The slow start's admission rate (inf: not ramping).
        self.ramp = self.RAMP_START if slow_start and self.adaptive else math.inf
        #: Until the first burst, and within W of the first answer: a small burst may be a wall.
        self._probing = slow_start and self.adaptive
        self._first_answer = -math.inf
        #: min(rate, ramp): the spacing `acquire` applies.
        self._pace = min(self.rate, self.ramp)

    def resume(self, rate: float) -> None:
        """Start from a rate learned earlier (requests/s, kept in a shared state by
        the Ray engine's pacer actor), not blind: no slow start, no first wall to
        find; the increase still probes above it."""
        if self.adaptive and math.isfinite(rate) and rate > 0:
            self.rate = rate
            self._probing = False
            self._end_ramp()

    async def acquire(self) -> float:
        """Wait for admission; returns the admission time, the request's ticket
        for `on_success` and `on_rate_limited`."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = max(self.paused_until - now, self._next - now, self._window_wait(now))
                if wait <= 0:
                    break
                await self._sleep(wait)
            if self._burst is not None:
                self._learn()
            interval = 0.0 if math.isinf(self._pace) else 1.0 / self._pace
            self._next = max(now, self._next) + interval
            if self.rpm is not None or self.adaptive:
                self._sent.append(now)
            return now

    def _trim(self, now: float) -> None:
        horizon = now - self._span
        sent = self._sent
        while sent and sent[0] <= horizon:
            sent.popleft()

    def _window_wait(self, now: float) -> float:
        if self.rpm is None:
            return 0.0
        self._trim(now)
        if len(self._sent) < int(self.rpm):
            return 0.0
        return self._sent[0] + self._span - now + 1e-3

    def _learn(self) -> None:
        """The pause after a burst ended: every 429 of it is in; set the rate."""
        burst = self._burst
        assert burst is not None
        self._burst = None
        sized = burst.paced or self._wall_sized(burst)
        if burst.rejected < burst.accepted or not sized:
            # Mostly successes among requests sent after the refused one: a passing
            # hiccup, not a full quota window (at a wall, everything sent after it is
            # refused; what was in flight before it may still succeed). The pause
            # was the answer; learning a quota from it would throttle the whole night.
            return
        # Refusals of earlier bursts in the same window were never accepted either.
        horizon = burst.at - self.window
        while self._refused and self._refused[0] <= horizon:
            self._refused.popleft()
        quota = burst.admitted - len(self._refused)
        if quota <= 0:
            return
        self.learned_quota = quota
        self.rate = max(1.0 / self.window, min(self.rate, quota / self.window) * self.DECREASE)
        self._pace = min(self.rate, self.ramp)

    @staticmethod
    def _wall_sized(burst: _Burst) -> bool:
        """At a quota wall, the requests sent between the window filling and the first
        429 coming back are all refused: about as many as were in flight. A lone 429
        among a pool of successes (a capacity hiccup, or a fault) is not a wall."""
        if burst.rejected == 1 and burst.answered_ok:
            return False
        return 4 * burst.rejected >= burst.answered_ok

    def _grow_ramp(self) -> None:
        """A clean answer: the ramp doubles (fully open at `RAMP_OPEN`)."""
        if self._first_answer == -math.inf:
            self._first_answer = self._clock()
        self.ramp *= 2
        if self.ramp >= self.RAMP_OPEN:
            self.ramp = math.inf
        self._pace = min(self.rate, self.ramp)

    def _end_ramp(self) -> None:
        self.ramp = math.inf
        self._pace = self.rate

    def on_success(self, sent_at: float | None = None) -> None:
        """A request admitted at `sent_at` (unknown: counted as sent now) succeeded."""
        self._server_errors = 0
        self._breaker_delay = 5.0
        if self.ramp != math.inf and self._burst is None:
            self._grow_ramp()
        if self._burst is not None:
            self._burst.answered_ok += 1
            if sent_at is None or sent_at > self._burst.first_refused:
                self._burst.accepted += 1
            return
        if not self.adaptive or math.isinf(self.rate):
            return
        now = self._clock()
        if now - self._last_429 > self.window and now - self._last_raise > self.window:
            self.rate *= self.INCREASE
            self._pace = min(self.rate, self.ramp)
            self._last_raise = now

    def on_rate_limited(self, retry_after: float | None, sent_at: float | None = None) -> None:
        """A 429: pause everyone for the server's delay and, adaptively, learn the quota."""
        self.rate_limited += 1
        now = self._clock()
        delay = retry_after if retry_after is not None else 2.0
        self.paused_until = max(self.paused_until, now + delay)
        if not self.adaptive:
            return
        if self._burst is None:
            self._trim(now)
            # No answer yet counts as the start (-inf would read as long ago).
            since = 0.0 if self._first_answer == -math.inf else now - self._first_answer
            paced = self._probing and since <= self.window
            self._probing = False
            self._burst = _Burst(at=now, admitted=len(self._sent), paced=paced)
            self._end_ramp()
        self._burst.rejected += 1
        self._refused.append(now)
        self._burst.first_refused = min(
            self._burst.first_refused, now if sent_at is None else sent_at
        )
        self._last_429 = now

    def on_server_error(self) -> None:
        """Many server errors in a row open the breaker: everyone waits a while."""
        self._server_errors += 1
        if self._server_errors >= self.BREAKER_THRESHOLD:
            self.paused_until = max(self.paused_until, self._clock() + self._breaker_delay)
            self._breaker_delay = min(60.0, self._breaker_delay * 2)
            self._server_errors = 0
