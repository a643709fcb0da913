"""The ledger's unit of work on a real SQLite state: when ends are committed,
and that a request slot (`after_commit`) is freed only once they are.

What is committed is read from a second, read-only connection (a WAL reader
sees only committed rows), never from the connection that wrote.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from batchgen.engine import ledger as ledger_mod
from batchgen.engine.ledger import GROUP_JOBS, GROUP_S, Ledger
from batchgen.engine.pricing import PriceTable
from batchgen.models import Counters, Job, Status
from batchgen.store import Store


def done_seen(out: Path) -> int:
    with Store(out, readonly=True) as reader:
        return reader.counts().get(Status.DONE.value, 0)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    with Store(path) as store, store.transaction():
        store.start_run()
        for i in range(2 * GROUP_JOBS):
            store.plan(Job(id=f"j{i}", prompt=f"p{i}"), f"fp{i}", reset=True)
    return path


def make(store: Store, *, busy: bool) -> tuple[Ledger, list[Exception]]:
    errors: list[Exception] = []
    ledger = Ledger(
        store,
        Counters(),
        PriceTable(),
        on_change=lambda counters: None,
        on_error=errors.append,
        busy=lambda: busy,
    )
    return ledger, errors


async def one_turn() -> None:
    """Let the loop finish the current turn (and run what it scheduled)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_idle_loop_commits_at_the_end_of_the_turn(out: Path) -> None:
    async def scenario() -> None:
        with Store(out) as store:
            ledger, errors = make(store, busy=False)
            freed: list[str] = []
            for i in range(3):
                ledger.end(f"j{i}", Status.DONE)
                ledger.after_commit(lambda i=i: freed.append(f"j{i}"))
            assert done_seen(out) == 0
            assert freed == []
            await one_turn()
            assert done_seen(out) == 3
            assert freed == ["j0", "j1", "j2"]
            assert errors == []

    asyncio.run(scenario())


def test_busy_loop_groups_turns_into_one_commit(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the loop bounds the run, ends of many turns share a commit, and
    no slot is freed before its end is committed."""
    monkeypatch.setattr(ledger_mod, "GROUP_S", 3600.0)

    async def scenario() -> None:
        with Store(out) as store:
            ledger, errors = make(store, busy=True)
            freed: list[str] = []
            for i in range(5):
                ledger.end(f"j{i}", Status.DONE)
                ledger.after_commit(lambda i=i: freed.append(f"j{i}"))
                await one_turn()
            assert done_seen(out) == 0
            assert freed == []
            ledger.close()
            assert done_seen(out) == 5
            assert freed == [f"j{i}" for i in range(5)]
            assert errors == []

    asyncio.run(scenario())


def test_busy_loop_commits_after_group_s(out: Path) -> None:
    """A group that never fills is committed once `GROUP_S` has passed."""

    async def scenario() -> None:
        with Store(out) as store:
            ledger, errors = make(store, busy=True)
            freed: list[float] = []
            committed = asyncio.Event()
            loop = asyncio.get_running_loop()
            started = loop.time()
            ledger.end("j0", Status.DONE)
            ledger.after_commit(lambda: (freed.append(loop.time()), committed.set()))
            await asyncio.wait_for(committed.wait(), 10)
            # asyncio may run a timer up to its clock's resolution early.
            early = time.get_clock_info("monotonic").resolution
            assert freed[0] - started >= GROUP_S - early
            assert done_seen(out) == 1
            assert errors == []

    asyncio.run(scenario())


def test_busy_loop_commits_a_full_group_at_once(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`GROUP_JOBS` ends commit that turn, without waiting out `GROUP_S`."""
    monkeypatch.setattr(ledger_mod, "GROUP_S", 3600.0)

    async def scenario() -> None:
        with Store(out) as store:
            ledger, _ = make(store, busy=True)
            for i in range(GROUP_JOBS + 1):
                ledger.end(f"j{i}", Status.DONE)
            await one_turn()
            assert done_seen(out) == GROUP_JOBS + 1
            # The next unit waits again.
            ledger.end(f"j{GROUP_JOBS + 1}", Status.DONE)
            await one_turn()
            assert done_seen(out) == GROUP_JOBS + 1
            ledger.close()
            assert done_seen(out) == GROUP_JOBS + 2

    asyncio.run(scenario())


def test_close_commits_and_cancels_the_wait(out: Path) -> None:
    async def scenario() -> None:
        with Store(out) as store:
            ledger, errors = make(store, busy=True)
            freed: list[str] = []
            ledger.end("j0", Status.DONE)
            ledger.after_commit(lambda: freed.append("j0"))
            ledger.close()
            assert done_seen(out) == 1
            assert freed == ["j0"]
            assert errors == []
            ledger.after_commit(lambda: freed.append("now"))
            assert freed == ["j0", "now"]  # nothing open: called at once

    asyncio.run(scenario())
