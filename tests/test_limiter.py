"""The Pacer and the backoff formula, on a fake clock: no test here sleeps for real."""

from __future__ import annotations

import asyncio
import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.engine.limiter import WINDOW, WINDOW_ENV, Pacer, backoff, quota_window


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)


def pacer(clock: FakeClock, rpm: float | None = None, window: float = 60.0) -> Pacer:
    return Pacer(rpm, clock=clock, sleep=clock.sleep, window=window)


def admit(p: Pacer, clock: FakeClock, n: int) -> list[float]:
    """Admit `n` requests one after another; return their admission times."""

    async def go() -> list[float]:
        times = []
        for _ in range(n):
            await p.acquire()
            times.append(clock.now)
        return times

    return asyncio.run(go())


def test_rpm_spaces_requests_evenly() -> None:
    clock = FakeClock()
    times = admit(pacer(clock, rpm=60), clock, 6)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == pytest.approx([1 / 0.99] * 5)


def test_unlimited_without_rpm_until_a_429() -> None:
    clock = FakeClock()
    times = admit(pacer(clock), clock, 100)
    assert set(times) == {1000.0}


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=40),
    window=st.sampled_from([1.0, 10.0, 60.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=120),
)
def test_rpm_never_exceeded_in_any_window(rpm: int, window: float, gaps: list[float]) -> None:
    """Whatever the arrival pattern, no window of W seconds holds more than N admissions."""
    clock = FakeClock()
    p = pacer(clock, rpm=rpm, window=window)

    async def go() -> list[float]:
        times = []
        for gap in gaps:
            clock.now += gap  # the next request arrives later
            await p.acquire()
            times.append(clock.now)
        return times

    times = asyncio.run(go())
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t < start + window]
        assert len(in_window) <= rpm


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=40),
    window=st.sampled_from([2.0, 10.0, 60.0]),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=120),
    delays=st.lists(st.floats(min_value=0, max_value=1), min_size=120, max_size=120),
)
def test_the_guard_keeps_unevenly_delayed_sends_within_the_window(
    rpm: int, window: float, gaps: list[float], delays: list[float]
) -> None:
    """With `guard` g, requests that reach the wire up to g seconds after their
    admission, each after its own delay, still put at most N in any window W
    (the Ray engine's grants travel through an actor call)."""
    guard = 0.1 * window
    clock = FakeClock()
    p = Pacer(rpm, clock=clock, sleep=clock.sleep, window=window, guard=guard)

    async def go() -> list[float]:
        wire = []
        for gap, delay in zip(gaps, delays, strict=False):
            clock.now += gap
            await p.acquire()
            wire.append(clock.now + delay * guard)
        return sorted(wire)

    wire = asyncio.run(go())
    for i, start in enumerate(wire):
        assert len([t for t in wire[i:] if t < start + window]) <= rpm


def test_the_guard_costs_its_share_of_the_rate_only() -> None:
    """N admissions per W + g: a long run reaches N / (W + g), not less."""
    clock = FakeClock()
    p = Pacer(60, clock=clock, sleep=clock.sleep, window=60.0, guard=1.2)
    times = admit(p, clock, 601)
    assert (times[-1] - times[0]) == pytest.approx(10 * 61.2, rel=0.01)


def test_429_pauses_everyone_for_retry_after() -> None:
    clock = FakeClock()
    p = pacer(clock)
    p.on_rate_limited(7.5)
    assert admit(p, clock, 1) == [1007.5]
    assert p.rate_limited == 1


def test_429_without_retry_after_pauses_two_seconds() -> None:
    clock = FakeClock()
    p = pacer(clock, rpm=600)
    p.on_rate_limited(None)
    assert admit(p, clock, 1) == [1002.0]
    assert p.rate == pytest.approx(600 * 0.99 / 60)  # --rpm is never adapted


def test_aimd_learns_the_quota_from_a_burst() -> None:
    """100 admitted in the window, 30 of them refused: the quota is 70 per window."""
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    admit(p, clock, 100)
    for _ in range(30):
        p.on_rate_limited(4.0)
    assert math.isinf(p.rate)  # learned only when the pause ends
    times = admit(p, clock, 3)
    assert times[0] == pytest.approx(1004.0)
    assert p.learned_quota == 70
    assert p.rate == pytest.approx(70 / 10.0 * 0.97)
    assert times[2] - times[1] == pytest.approx(1 / p.rate)


def test_aimd_a_later_burst_learns_a_smaller_quota() -> None:
    """Another client now shares the quota: the next burst sets the rate lower."""
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    admit(p, clock, 20)
    p.on_rate_limited(1.0)
    admit(p, clock, 1)
    assert p.rate == pytest.approx(19 / 10 * 0.97)
    clock.now += 30
    admit(p, clock, 5)
    p.on_rate_limited(1.0)
    admit(p, clock, 1)
    assert p.learned_quota == 4
    assert p.rate == pytest.approx(4 / 10 * 0.97)


def test_aimd_nothing_accepted_leaves_the_pause_alone() -> None:
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    admit(p, clock, 3)
    for _ in range(3):
        p.on_rate_limited(5.0)
    admit(p, clock, 1)
    assert math.isinf(p.rate)
    assert p.learned_quota is None


def test_aimd_increases_after_each_quiet_window() -> None:
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    admit(p, clock, 50)
    p.on_rate_limited(1.0)
    admit(p, clock, 1)
    learned = p.rate
    clock.now += 5
    p.on_success()
    assert p.rate == learned  # not a full quiet window yet
    clock.now += 6
    p.on_success()
    assert p.rate == pytest.approx(learned * 1.05)
    clock.now += 5
    p.on_success()
    assert p.rate == pytest.approx(learned * 1.05)  # one raise per window
    clock.now += 6
    p.on_success()
    assert p.rate == pytest.approx(learned * 1.05**2)


def test_no_increase_while_unlimited() -> None:
    clock = FakeClock()
    p = pacer(clock)
    clock.now += 1000
    p.on_success()
    assert math.isinf(p.rate)


def test_breaker_opens_after_a_run_of_server_errors_and_backs_off() -> None:
    clock = FakeClock()
    p = pacer(clock)
    for _ in range(Pacer.BREAKER_THRESHOLD - 1):
        p.on_server_error()
    assert p.paused_until == 0.0
    p.on_server_error()
    assert p.paused_until == pytest.approx(1005.0)
    for _ in range(Pacer.BREAKER_THRESHOLD):
        p.on_server_error()
    assert p.paused_until == pytest.approx(1010.0)  # doubled
    p.on_success()  # a success closes it and resets the delay
    for _ in range(Pacer.BREAKER_THRESHOLD):
        p.on_server_error()
    assert p.paused_until == pytest.approx(1010.0)


def test_breaker_errors_must_be_in_a_row() -> None:
    clock = FakeClock()
    p = pacer(clock)
    for _ in range(5):
        for _ in range(Pacer.BREAKER_THRESHOLD - 1):
            p.on_server_error()
        p.on_success()
    assert p.paused_until == 0.0


def test_waiters_are_admitted_in_turn() -> None:
    clock = FakeClock()
    p = pacer(clock, rpm=120)

    async def go() -> list[float]:
        times: list[float] = []

        async def one() -> None:
            await p.acquire()
            times.append(clock.now)

        await asyncio.gather(*(one() for _ in range(5)))
        return times

    times = asyncio.run(go())
    assert times == sorted(times)
    assert times[-1] - times[0] == pytest.approx(4 * 60 / (120 * 0.99))


@given(attempt=st.integers(min_value=1, max_value=50), seed=st.integers(0, 2**32))
def test_backoff_stays_within_bounds(attempt: int, seed: int) -> None:
    delay = backoff(attempt, random.Random(seed), base=1.0, cap=60.0)
    exp = min(60.0, 2.0 ** (attempt - 1))
    assert 0.5 * exp <= delay <= 1.5 * exp <= 90.0


def test_quota_window_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WINDOW_ENV, raising=False)
    assert quota_window() == WINDOW
    monkeypatch.setenv(WINDOW_ENV, "10")
    assert quota_window() == 10.0
    assert Pacer(600).rate == pytest.approx(600 * 0.99 / 10)
    for bad in ("", "x", "0", "-5", "nan", "inf"):
        monkeypatch.setenv(WINDOW_ENV, bad)
        assert quota_window() == WINDOW


def test_a_wall_is_learned_although_requests_in_flight_before_it_succeed() -> None:
    """At a quota wall, what was sent before the first refused request may still
    succeed during the pause; only what was sent after it counts against a wall."""
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    tickets = [asyncio.run(p.acquire()) for _ in range(64)]
    clock.now += 0.2
    second = [asyncio.run(p.acquire()) for _ in range(64)]
    for sent in second[36:]:  # the server's window filled at the 100th request
        p.on_rate_limited(9.8, sent)
    for sent in second[:36]:  # sent before the refused ones: in flight, fine
        p.on_success(sent)
    del tickets
    admit(p, clock, 1)
    assert p.learned_quota == 100
    assert p.rate == pytest.approx(100 / 10.0 * 0.97)


def test_a_random_429_among_later_successes_teaches_nothing() -> None:
    clock = FakeClock()
    p = pacer(clock, window=10.0)
    sent = []
    for _ in range(50):
        clock.now += 0.01
        sent.append(asyncio.run(p.acquire()))
    p.on_rate_limited(1.0, sent[10])
    for t in sent[11:]:
        p.on_success(t)
    admit(p, clock, 1)
    assert p.learned_quota is None
    assert math.isinf(p.rate)
