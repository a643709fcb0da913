"""The slow start: while the quota is unknown, admissions are spaced by a ramp that
doubles every clean round trip, so the first wall refuses one or two requests
instead of a whole wave; the ramp ends at the first 429 or when fully open."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from batchgen.engine.limiter import WINDOW_ENV, Pacer
from batchgen.engine.runner import arun_files
from batchgen.sim import SimConfig, Simulator
from tests.conftest import KEY, make_config, write_jobs


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def ramping(clock: FakeClock, **kw: float) -> Pacer:
    return Pacer(clock=clock, sleep=clock.sleep, window=10.0, slow_start=True, **kw)


def admit(p: Pacer, n: int) -> list[float]:
    return [asyncio.run(p.acquire()) for _ in range(n)]


def test_the_ramp_spaces_the_first_admissions() -> None:
    clock = FakeClock()
    times = admit(ramping(clock), 4)
    assert [t - 1000.0 for t in times] == pytest.approx([0, 1 / 500, 2 / 500, 3 / 500])


def test_each_clean_answer_doubles_the_ramp() -> None:
    clock = FakeClock()
    p = ramping(clock)
    sent = admit(p, 3)
    clock.now = 1000.2
    for t in sent:
        p.on_success(t)
    assert p.ramp == 8 * Pacer.RAMP_START
    assert math.isinf(p.rate)  # the learned rate is untouched: nothing learned
    later = admit(p, 2)
    assert later[1] - later[0] == pytest.approx(1 / p.ramp)


def test_a_pool_held_by_the_ramp_opens_within_a_few_round_trips() -> None:
    clock = FakeClock()
    p = ramping(clock)
    rtt = 0.01
    rounds = 0
    while not math.isinf(p.ramp):
        rounds += 1
        before = p.ramp
        start = clock.now
        sent = []
        while True:
            t = asyncio.run(p.acquire())
            if t >= start + rtt:
                break
            sent.append(t)
        for t in sent:
            clock.now = t + rtt
            p.on_success(t)
        assert p.ramp >= min(2 * before, Pacer.RAMP_OPEN)
    assert rounds <= 3  # 500/s to fully open in a few round trips


def test_the_ramp_opens_fully_without_a_wall() -> None:
    clock = FakeClock()
    p = ramping(clock)
    while not math.isinf(p.ramp):
        (sent,) = admit(p, 1)
        clock.now += 0.001
        p.on_success(sent)
    clock.now += 1.0
    assert set(admit(p, 50)) == {clock.now}  # unpaced, as without slow start
    assert p.learned_quota is None


def test_the_first_429_stops_the_ramp_and_a_small_paced_wall_is_learned() -> None:
    """At a paced wall only the request sent while the 429 travelled back is refused;
    the ones in flight before it succeed. Still a wall: nothing sent after it got in."""
    clock = FakeClock()
    p = ramping(clock)
    sent = admit(p, 41)
    clock.now = sent[0] + 0.2
    p.on_success(sent[0])
    assert p.ramp == 2 * Pacer.RAMP_START
    p.on_rate_limited(9.0, sent[40])
    assert math.isinf(p.ramp)  # stopped growing: the learned rate takes over
    for t in sent[1:40]:  # in flight before the refused one
        p.on_success(t)
    assert math.isinf(p.ramp)
    admit(p, 1)
    assert p.learned_quota == 40
    assert p.rate == pytest.approx(40 / 10.0 * Pacer.DECREASE)


def test_a_429_followed_by_later_successes_teaches_nothing_while_ramping() -> None:
    clock = FakeClock()
    p = ramping(clock)
    sent = admit(p, 30)
    p.on_rate_limited(0.5, sent[10])
    for t in sent[11:]:  # sent after the refused one, and got in: no wall
        p.on_success(t)
    admit(p, 1)
    assert p.learned_quota is None
    assert math.isinf(p.rate)
    assert math.isinf(p.ramp)


def test_a_lone_429_long_after_the_start_is_judged_by_its_size() -> None:
    """A pool that sent fewer than Q in its first window never fills one: past W,
    a lone 429 among successes is a passing one again."""
    clock = FakeClock()
    p = ramping(clock)
    (first,) = admit(p, 1)
    p.on_success(first)
    clock.now += 11.0
    sent = admit(p, 30)
    p.on_rate_limited(0.5, sent[-1])
    for t in sent[:-1]:
        p.on_success(t)
    admit(p, 1)
    assert p.learned_quota is None


def test_no_slow_start_with_rpm_or_by_default() -> None:
    clock = FakeClock()
    assert math.isinf(Pacer(clock=clock, sleep=clock.sleep).ramp)
    given = Pacer(600, clock=clock, sleep=clock.sleep, window=60.0, slow_start=True)
    assert math.isinf(given.ramp)
    assert given.rate == pytest.approx(600 * 0.99 / 60)


async def test_the_first_wall_costs_at_most_5_percent_of_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's short run, its clock scaled from 60 s to 4 s: 400 jobs at C=32
    against an unknown quota of 200 per window, which used to meet the wall with
    a whole pool in flight (7 % refused). The share is a rate, so it is measured
    over three runs: how many requests are caught at the wall depends on how fast
    this machine answers the first 429 (1-3 of 400 on a quiet one, up to 28 on a
    busy one), and one run measured only that."""
    monkeypatch.setenv(WINDOW_ENV, "4")
    config = SimConfig(small_images=True, api_key=KEY, rpm=200, quota_window_s=4.0, latency=0.05)
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(400)]
    )
    refused = total = 0
    for run in range(3):
        out = tmp_path / f"out{run}"
        async with Simulator(config) as sim:
            result = await arun_files([jobs], make_config(out, sim.base_url, concurrency=32))
            walls, sent = sim.stats.by_status[429], sim.stats.total
        report = json.loads((out / "report.json").read_text())
        assert (result.exit_code, report["done"]) == (0, 400)
        assert walls >= 1  # the wall was met
        assert sent == 400 + walls
        refused, total = refused + walls, total + sent
    assert refused <= 0.05 * total
