"""The Ray engine's actor classes in this process, without Ray: the shared pacer,
budget and coalescer hosts and a worker, each driven through `Local`, a stand-in
for an actor handle (``handle.method.remote(...)`` gives an awaitable). What
Ray adds (processes, restarts, placement) is tested in `test_ray_engine.py`,
`test_ray_chaos.py` and `test_ray_nodes.py`; here is what the hosts decide."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batchgen.catalogue import load_catalogue
from batchgen.engine.pricing import PriceTable
from batchgen.engine.ray_pacer import PacerHost, RemotePacer
from batchgen.engine.ray_shared import BudgetHost, CoalescerHost, RemoteBudget, RemoteCoalescer
from batchgen.engine.ray_worker import WorkerHost, WorkerSpec
from batchgen.errors import UsageError
from batchgen.models import Job, StopKind
from batchgen.sim import Simulator
from batchgen.store.pg import PgStore
from tests.conftest import KEY, make_config


class _Method:
    def __init__(self, method: Callable[..., Awaitable[Any]]) -> None:
        self._method = method

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(self._method(*args))


class Local:
    """An actor handle's shape over a host object living in this process."""

    def __init__(self, host: Any) -> None:
        self._host = host

    def __getattr__(self, name: str) -> _Method:
        return _Method(getattr(self._host, name))


async def test_the_budget_host_keeps_one_cap_for_every_worker() -> None:
    host = BudgetHost(1.0, 0.25)
    a, b = RemoteBudget(Local(host), 1.0, "w0"), RemoteBudget(Local(host), 1.0, "w1")
    assert not a.reserve(0.5)  # always asked of the host
    assert await a.wait_to_reserve(0.5)
    waiting = asyncio.ensure_future(b.wait_to_reserve(0.5))  # 0.25 + 0.5 + 0.5 > 1
    await asyncio.sleep(0)
    assert not waiting.done()
    a.settle(0.5, 0.125)  # the answer cost less than its worst case: room again
    assert await waiting
    b.settle(0.5, 0.5)
    await asyncio.sleep(0)
    assert await host.committed() == pytest.approx(0.875)
    assert not await a.wait_to_reserve(0.5)  # nothing in flight and it does not fit
    stop = a.stop()
    assert stop.kind is StopKind.BUDGET
    assert "$1.00 reached" in stop.message


async def test_a_restarted_worker_gives_its_reservations_back() -> None:
    host = BudgetHost(1.0, 0.0)
    assert await RemoteBudget(Local(host), 1.0, "w0").wait_to_reserve(0.75)
    await host.forget("w0")  # what a restarted worker's constructor sends
    assert await RemoteBudget(Local(host), 1.0, "w1").wait_to_reserve(0.75)


async def test_a_closed_budget_hands_back_a_late_reservation() -> None:
    host = BudgetHost(1.0, 0.0)
    first = RemoteBudget(Local(host), 1.0, "w0")
    assert await first.wait_to_reserve(0.75)
    second = RemoteBudget(Local(host), 1.0, "w1")
    waiting = asyncio.ensure_future(second.wait_to_reserve(0.75))
    await asyncio.sleep(0)
    second.close()  # the worker stops while its request waits for room
    assert not await waiting
    assert not await second.wait_to_reserve(0.1)
    first.settle(0.75, 0.0)  # the host now grants the abandoned reservation: handed back
    for _ in range(5):
        await asyncio.sleep(0)
    assert host.budget.reserved == pytest.approx(0.0)


async def test_one_request_in_flight_per_key_across_workers() -> None:
    host = CoalescerHost()
    a, b = RemoteCoalescer(Local(host), "w0"), RemoteCoalescer(Local(host), "w1")
    assert await a.claim("k")
    waiting = asyncio.ensure_future(b.claim("k"))
    await asyncio.sleep(0)
    assert not waiting.done()
    a.release("k")  # sent after this turn's commit
    assert await waiting is False  # look the answer up again
    assert await b.claim("k")
    await host.forget("w1")  # w1 died: its key is free
    assert await a.claim("k")


async def test_the_pacer_host_starts_from_the_rate_the_state_kept(
    tmp_path: Path, pg_url: str
) -> None:
    with PgStore(tmp_path, pg_url) as store, store.transaction():
        store.start_run()
        store.save_learned_rate("api 1", 30.0)
    host = PacerHost(None, 10.0, (tmp_path, pg_url), "api 1", restarted=False)
    assert host.pacer.rate == pytest.approx(3.0)  # 30 per 10 s window
    pacer = RemotePacer(Local(host))
    first = await pacer.acquire()
    pacer.on_rate_limited(0.0, first)
    pacer.on_success(first)
    pacer.on_server_error()
    await asyncio.sleep(0)
    figures = await host.figures()
    assert figures["rate"] == pytest.approx(3.0)
    assert figures["rate_limited"] == 1
    fresh = PacerHost(None, 10.0, (tmp_path, pg_url), "another api", restarted=False)
    assert (await fresh.figures())["rate"] is None  # unknown quota: unlimited until a 429
    held = PacerHost(60.0, 10.0, None, "api 1", restarted=True)
    assert held.pacer.paused_until > time.monotonic() + 9  # a window's pause under --rpm


async def test_a_worker_runs_claimed_pages_and_reads_the_key_from_its_environment(
    tmp_path: Path, pg_url: str, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    with PgStore(out, pg_url) as store, store.transaction():
        run_id = store.start_run()
        store.prefetch(f"j{i}" for i in range(30))
        for i in range(30):
            store.plan(Job(id=f"j{i}", prompt=f"worker {i}"), f"fp{i}", reset=True)
    config = replace(make_config(out, sim.base_url, state=pg_url, engine="ray"), api_key=None)
    prices = PriceTable.load(None, load_catalogue(None))
    spec = WorkerSpec(config, prices, run_id, sharded=False, lease_seconds=5.0, needs_key=True)
    shared = (Local(PacerHost(None, 60.0, None, "sim", restarted=False)), None)
    coalescer = Local(CoalescerHost())
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(UsageError, match="found no API key"):
        await WorkerHost(spec, 0, *shared, coalescer).run()
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    workers = [WorkerHost(spec, i, *shared, coalescer) for i in range(2)]
    reports = await asyncio.gather(*(w.run() for w in workers))
    assert sum(r.counters.done for r in reports) == 30
    assert sum(r.requests for r in reports) == sim.stats.total == 30
    assert (await workers[0].counters()).done == reports[0].counters.done
    with PgStore(out, pg_url, readonly=True) as store:
        assert store.counts()["done"] == 30
