"""Leases before sending, and spend after them: a worker checks that a job's lease
is still its own just before it sends (no round trip while the lease has time
left), drops a job another worker took over, and a request it had already sent
is on record as spend though its outcome is refused. A real PostgreSQL state."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.config import RunConfig, Secret
from batchgen.engine.budget import Budget
from batchgen.engine.limiter import Pacer
from batchgen.engine.planner import plan
from batchgen.engine.pool import Pool
from batchgen.engine.pricing import PriceTable
from batchgen.models import Status
from batchgen.store import Store
from batchgen.store.pg import PgStore
from tests.conftest import KEY, TEST_MODEL
from tests.test_limiter import FakeClock
from tests.test_pg_store import planned
from tests.test_pool import Script, job, ok


def test_a_lease_is_trusted_while_it_has_time_left_and_renewed_when_in_doubt(
    tmp_path: Path, pg_url: str
) -> None:
    planned(tmp_path, pg_url, 4)
    with PgStore(tmp_path, pg_url, lock=False) as a, PgStore(tmp_path, pg_url, lock=False) as b:
        a.lease_seconds = 30.0
        assert [j.id for j in a.claim("a", 2, 30.0)] == ["j0", "j1"]
        renewed = a._renewed
        assert a.holds("j0")
        assert a._renewed == renewed  # plenty of lease left: no round trip
        assert not a.holds("j2")  # never claimed by `a`
        # A short lease, as after a freeze: the check renews once, and decides.
        assert [j.id for j in a.claim("a", 2, 0.0)] == ["j2", "j3"]
        assert [j.id for j in b.claim("b", 1)] == ["j2"]  # expired: taken over
        assert not a.holds("j2")  # the renew did not return it: another's now
        assert a._renewed > renewed
        assert a.holds("j3")  # expired but nobody took it: renewed, still a's
        assert b.holds("j2")
        assert not b.holds("j3")


def test_a_zombies_answered_request_is_paid_on_record_but_changes_no_job(
    tmp_path: Path, pg_url: str
) -> None:
    planned(tmp_path, pg_url, 2)
    with PgStore(tmp_path, pg_url, lock=False) as a, PgStore(tmp_path, pg_url, lock=False) as b:
        a.claim("a", 2, lease_seconds=0)
        b.claim("b", 2)
        with a.transaction():  # answered after its lease passed
            a.record_attempt(
                "j0", cost=1.0, prompt_tokens=3, output_tokens=5, cost_source="usage",
                model=TEST_MODEL, image_size="1K", live_cost=2.0, mode="flex",
            )  # fmt: skip
            a.finish("j0", Status.FAILED)
        assert (a.refused, a.late) == (2, 1)
        with b.transaction():
            b.record_attempt(
                "j0", cost=0.5, prompt_tokens=3, output_tokens=5, cost_source="usage",
                model=TEST_MODEL, image_size="1K", mode="live",
            )  # fmt: skip
            b.finish("j0", Status.DONE, files=["images/j0.png"])
        assert (b.refused, b.late) == (0, 0)
    with PgStore(tmp_path, pg_url, readonly=True) as store:
        rec = {r.id: r for r in store.records()}["j0"]
        assert (rec.status, rec.requests, rec.cost_usd) == (Status.DONE, 1, 0.5)
        totals = store.totals()
        assert (totals.requests, totals.prompt_tokens, totals.output_tokens) == (2, 6, 10)
        assert totals.cost_usd == pytest.approx(1.5)
        assert store.spent() == pytest.approx(1.5)
        assert [(s.model, s.size, s.jobs, s.cost_usd) for s in store.spend()] == [
            (TEST_MODEL, "1K", 1, pytest.approx(1.5))
        ]
        modes = {m.mode: (m.jobs, m.cost_usd, m.live_cost_usd) for m in store.mode_spend()}
        assert modes == {
            "flex": (0, pytest.approx(1.0), pytest.approx(2.0)),
            "live": (1, pytest.approx(0.5), pytest.approx(0.5)),
        }


async def test_a_job_whose_lease_passed_is_dropped_unsent(tmp_path: Path) -> None:
    jobs = [job(f"j{i}") for i in range(6)]
    send = Script({j.prompt: [ok()] for j in jobs})
    config = RunConfig(
        out=tmp_path / "out", api_key=Secret(KEY), progress=False, model=TEST_MODEL,
        concurrency=2, seed=1,
    )  # fmt: skip
    asked: list[str] = []

    def holds(job_id: str) -> bool:
        asked.append(job_id)
        return job_id not in ("j1", "j4")

    clock = FakeClock()
    with Store(config.out) as store:
        with store.transaction():
            store.start_run()
        plan(jobs, store, default_model=config.model)
        pool = Pool(
            config, store, send, prices=PriceTable(), pacer=Pacer(clock=clock, sleep=clock.sleep),
            budget=Budget(None, 0.0), sharded=False, holds=holds,
        )  # fmt: skip
        counters = await pool.run(store.pending())
        states = {r.id: r.status for r in store.records()}
    assert sorted(asked) == [j.id for j in jobs]  # once per request, just before it
    assert sorted(send.sent) == sorted(j.prompt for j in jobs if j.id not in ("j1", "j4"))
    assert (pool.dropped, counters.done, counters.requests) == (2, 4, 4)
    assert states["j1"] is states["j4"] is Status.PENDING  # left to its new holder
    assert pool.stop is None
