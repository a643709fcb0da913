"""Per-minute and per-day request quotas, the way the API enforces them.

The per-minute quota is a *sliding window log*: a request is admitted when
fewer than ``limit`` admitted requests arrived in the last ``window`` seconds,
and a rejection's ``retry_after`` is exactly when the oldest of them leaves the
window. The per-day quota is a *fixed window* that resets every ``day``
seconds from the simulator's start (the real one resets at midnight Pacific);
a counter instead of a log keeps memory flat for large daily limits. Rejected
requests consume nothing, as with the real API. The clock is injected so the
rules are tested without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

PER_MINUTE_ID = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY_ID = "GenerateRequestsPerDayPerProjectPerModel"
PER_MINUTE_METRIC = "generativelanguage.googleapis.com/generate_requests_per_model"
PER_DAY_METRIC = "generativelanguage.googleapis.com/generate_requests_per_model_per_day"


@dataclass(frozen=True, slots=True)
class QuotaDenial:
    """Why a request was refused and when a slot frees, in seconds."""

    quota_id: str
    metric: str
    limit: int
    retry_after: float


class SlidingWindow:
    """At most `limit` admissions in any `window`-second span."""

    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def admit(self, now: float) -> float | None:
        """Record an admission and return None, or return the wait in seconds."""
        times = self._times
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.limit:
            # A zero limit (a free key's "limit: 0") never frees a slot;
            # say "a window" rather than nothing.
            return times[0] + self.window - now if times else self.window
        times.append(now)
        return None


class FixedWindow:
    """At most `limit` admissions per period, counted from `start`."""

    __slots__ = ("_count", "_period_end", "limit", "period")

    def __init__(self, limit: int, period: float, start: float) -> None:
        self.limit = limit
        self.period = period
        self._period_end = start + period
        self._count = 0

    def admit(self, now: float) -> float | None:
        if now >= self._period_end:
            periods = int((now - self._period_end) // self.period) + 1
            self._period_end += periods * self.period
            self._count = 0
        if self._count >= self.limit:
            return self._period_end - now
        self._count += 1
        return None

    def undo(self) -> None:
        """Give back the last admission (the per-minute check refused it)."""
        self._count = max(0, self._count - 1)


class Quota:
    """RPM and RPD limits for one scope (a key, or the whole project)."""

    def __init__(
        self,
        rpm: int | None,
        rpd: int | None,
        *,
        window: float = 60.0,
        day: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._minute = SlidingWindow(rpm, window) if rpm is not None else None
        self._day = FixedWindow(rpd, day, clock()) if rpd is not None else None

    def admit(self) -> QuotaDenial | None:
        """Admit one request now, or say which quota refuses it.

        The daily quota is checked first: once it is spent, waiting a minute
        does not help and the client must be told so."""
        now = self._clock()
        if self._day is not None:
            wait = self._day.admit(now)
            if wait is not None:
                return QuotaDenial(PER_DAY_ID, PER_DAY_METRIC, self._day.limit, wait)
        if self._minute is not None:
            wait = self._minute.admit(now)
            if wait is not None:
                if self._day is not None:
                    self._day.undo()
                return QuotaDenial(PER_MINUTE_ID, PER_MINUTE_METRIC, self._minute.limit, wait)
        return None


class QuotaBook:
    """One `Quota` per scope label, created on first use."""

    def __init__(
        self,
        rpm: int | None,
        rpd: int | None,
        *,
        window: float = 60.0,
        day: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = rpm is not None or rpd is not None
        self._args = (rpm, rpd)
        self._window = window
        self._day = day
        self._clock = clock
        self._quotas: dict[str, Quota] = {}

    def admit(self, scope: str) -> QuotaDenial | None:
        if not self.enabled:
            return None
        quota = self._quotas.get(scope)
        if quota is None:
            rpm, rpd = self._args
            quota = Quota(rpm, rpd, window=self._window, day=self._day, clock=self._clock)
            self._quotas[scope] = quota
        return quota.admit()
