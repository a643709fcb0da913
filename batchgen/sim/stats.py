"""`SimStats`: what the simulator saw, for tests to assert on.

Counters are exact; anything that grows with the number of requests
(timestamps, distinct prompts, recent records) is capped so that a long
benchmark keeps flat memory. Timestamps are `time.monotonic()` values, for
checking a client's request rate with `max_in_window`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the log and `SimStats.recent` describe it."""

    t: float
    method: str
    path: str
    api_version: str
    model: str
    prompt: str
    #: Short hash of the key, never the key itself.
    key_id: str
    #: ``header``, ``bearer``, ``url`` or ``none``.
    key_source: str
    aspect_ratio: str | None
    images_in: int
    status: int | None
    outcome: str
    elapsed_s: float
    bytes_in: int


@dataclass
class SimStats:
    """Counts by HTTP status (None = no HTTP answer, e.g. ``reset``), by
    outcome (``ok``, a forced kind, ``rpm``, ``rpd``, ``overloaded``,
    ``badkey``, ``unknown_model``, ``bad_request``, ``too_large``,
    ``not_found``), by key (the raw key, kept in memory only; ``""`` when
    none was sent) and by prompt text (markers included)."""

    cap: int = 100_000
    recent_cap: int = 1000
    total: int = 0
    by_status: Counter[int | None] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_key: Counter[str] = field(default_factory=Counter)
    by_prompt: Counter[str] = field(default_factory=Counter)
    #: Requests whose prompt was not counted because `cap` prompts were known.
    prompts_untracked: int = 0
    #: Outcomes forced by markers or the script / drawn from the fault table.
    forced: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    #: Requests that carried the key in the URL (``?key=``), which leaks it.
    key_in_url: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    timestamps: deque[float] = field(default_factory=deque)
    recent: deque[RequestRecord] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.timestamps = deque(self.timestamps, maxlen=self.cap)
        self.recent = deque(self.recent, maxlen=self.recent_cap)

    def count_prompt(self, prompt: str, fallback: int) -> int:
        """Count one request for `prompt` and return how many came before it.
        Past the cap, new prompts are not stored and `fallback` is returned."""
        seen = self.by_prompt.get(prompt)
        if seen is None:
            if len(self.by_prompt) >= self.cap:
                self.prompts_untracked += 1
                return fallback
            seen = 0
        self.by_prompt[prompt] = seen + 1
        return seen

    def max_in_window(self, window: float) -> int:
        """The most requests that arrived within any `window` seconds."""
        best = 0
        start = 0
        times = list(self.timestamps)
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    @property
    def ok(self) -> int:
        return self.by_outcome["ok"]

    def reset(self) -> None:
        """Forget everything seen so far (between phases of a test).

        Prompt counts go too, so marker schedules start over. Requests still
        in flight stay counted: they will be subtracted when they finish."""
        fresh = SimStats(cap=self.cap, recent_cap=self.recent_cap)
        fresh.in_flight = fresh.max_in_flight = self.in_flight
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))
