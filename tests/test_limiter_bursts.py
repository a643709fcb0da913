"""A passing 429 among successes pauses the pool but teaches it no quota."""

from __future__ import annotations

import asyncio
import math

from batchgen.engine.limiter import Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def admit(p: Pacer, n: int) -> None:
    async def go() -> None:
        for _ in range(n):
            await p.acquire()

    asyncio.run(go())


def test_an_isolated_429_pauses_but_learns_nothing() -> None:
    clock = Clock()
    p = Pacer(clock=clock, sleep=clock.sleep, window=60.0)
    admit(p, 200)
    p.on_rate_limited(1.0)
    for _ in range(30):  # the other requests in flight came back fine
        p.on_success()
    admit(p, 1)
    assert clock.now >= 1001.0  # the pool did wait for the server's delay
    assert p.learned_quota is None
    assert math.isinf(p.rate)


def test_a_wall_of_429s_teaches_the_quota() -> None:
    clock = Clock()
    p = Pacer(clock=clock, sleep=clock.sleep, window=60.0)
    admit(p, 200)
    for _ in range(40):  # everything in flight was refused: the window is full
        p.on_rate_limited(30.0)
    p.on_success()
    admit(p, 1)
    assert p.learned_quota == 160
    assert p.rate == 160 / 60.0 * Pacer.DECREASE


def test_repeated_refusals_of_one_request_teach_no_quota() -> None:
    # One job refused three times in a row: every admission in the window was
    # refused, so there is no accepted rate to learn (it used to become 1/minute).
    clock = Clock()
    p = Pacer(clock=clock, sleep=clock.sleep, window=60.0)
    for _ in range(3):
        admit(p, 1)
        p.on_rate_limited(0.05)
    admit(p, 1)
    assert p.learned_quota is None
    assert math.isinf(p.rate)
    assert clock.now - 1000.0 < 1.0
