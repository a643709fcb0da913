"""The hand-off to writer threads: results, errors and closing, with real threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from batchgen.output.handoff import Handoff


async def test_calls_run_off_the_loop_and_their_results_come_back() -> None:
    handoff = Handoff(2)
    try:
        loop_thread = threading.get_ident()
        results = await asyncio.gather(
            *(handoff.submit(lambda n: (n * n, threading.get_ident()), n) for n in range(200))
        )
    finally:
        handoff.close()
    assert [value for value, _thread in results] == [n * n for n in range(200)]
    assert loop_thread not in {thread for _value, thread in results}


async def test_a_call_that_raises_fails_only_its_own_future() -> None:
    handoff = Handoff(1)

    def maybe(n: int) -> int:
        if n == 3:
            raise OSError(28, "No space left on device")
        return n

    try:
        outcomes = await asyncio.gather(
            *(handoff.submit(maybe, n) for n in range(6)), return_exceptions=True
        )
    finally:
        handoff.close()
    assert outcomes[:3] == [0, 1, 2]
    assert outcomes[4:] == [4, 5]
    assert isinstance(outcomes[3], OSError)
    assert outcomes[3].errno == 28


async def test_many_calls_share_one_wake_up_of_the_loop() -> None:
    """While the thread is busy, calls queue up and come back together."""
    gate = threading.Event()
    handoff = Handoff(1, batch=64)
    deliveries: list[int] = []
    loop = asyncio.get_running_loop()
    original = loop.call_soon_threadsafe

    def counting(callback, *args):  # type: ignore[no-untyped-def]
        deliveries.append(len(args[0]) if args else 0)
        return original(callback, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        first = handoff.submit(gate.wait, 10)
        rest = [handoff.submit(int, n) for n in range(50)]
        gate.set()
        assert await first is True
        assert await asyncio.gather(*rest) == list(range(50))
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        handoff.close()
    assert sum(deliveries) == 51
    assert len(deliveries) <= 3  # the gate's own batch, then the 50 queued behind it


async def test_after_close_new_calls_are_cancelled_and_threads_end() -> None:
    handoff = Handoff(2)
    assert await handoff.submit(int, 7) == 7
    handoff.close()
    late = handoff.submit(int, 8)
    with pytest.raises(asyncio.CancelledError):
        await late
    for thread in handoff._threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


async def test_a_cancelled_waiter_does_not_break_the_others() -> None:
    gate = threading.Event()
    handoff = Handoff(1)
    try:
        blocked = handoff.submit(gate.wait, 10)
        doomed = handoff.submit(int, 1)
        kept = handoff.submit(int, 2)
        doomed.cancel()
        gate.set()
        assert await blocked is True
        assert await kept == 2
        assert doomed.cancelled()
    finally:
        handoff.close()


def test_a_handoff_never_used_starts_no_thread() -> None:
    before = threading.active_count()
    handoff = Handoff(4)
    assert threading.active_count() == before
    handoff.close()
    assert not any(thread.is_alive() for thread in handoff._threads)
