"""ray_shared: the run's `--budget` and its in-flight requests, one of each for a cluster.

Within one process the pool keeps both itself (`budget.Budget`,
`cache.Coalescer`). Across the Ray engine's workers they must be shared, or
four workers would each spend the whole budget and each send the request
that a duplicate prompt in another worker's page is already waiting for.
So each lives in one actor, beside the pacer actor, and each worker's pool
is given a stand-in with the methods it already calls:

- `BudgetHost` hosts the unchanged `Budget` (reserve the worst case before
  sending, settle on the answer): spend never passes the cap, counting every
  worker's requests in flight. Reservations are kept per worker, so that a
  worker that died and was restarted by Ray (its requests died with it)
  gives its reservations back (`forget`) instead of holding the budget's
  room for ever.
- `CoalescerHost`: at most one request in flight per request key across the
  cluster; the others wait for its end, then find its answer in the shared
  state's request cache (`store/requests.py`). A restarted worker's keys are
  released the same way.
- `RemoteBudget` and `RemoteCoalescer` are the workers' stand-ins. A release
  is sent after the turn's unit of work commits (`call_soon` after the
  ledger's own), so a waiter that wakes finds the answer already on record.
"""

from __future__ import annotations

import asyncio
from typing import Any

from batchgen.engine.budget import Budget
from batchgen.models import StopReason


class BudgetHost:
    """The budget actor: one `Budget` for every worker of the run."""

    def __init__(self, limit: float, spent_before: float) -> None:
        self.budget = Budget(limit, spent_before)
        self._held: dict[str, float] = {}

    async def reserve(self, worker: str, amount: float) -> tuple[bool, float]:
        """Reserve `amount`, waiting while other requests are in flight; whether it
        fits, and what is committed so far."""
        budget = self.budget
        ok = budget.reserve(amount) or await budget.wait_to_reserve(amount)
        if ok:
            self._held[worker] = self._held.get(worker, 0.0) + amount
        return ok, budget.committed

    async def settle(self, worker: str, reserved: float, actual: float) -> None:
        self._held[worker] = self._held.get(worker, 0.0) - reserved
        self.budget.settle(reserved, actual)

    async def forget(self, worker: str) -> None:
        """`worker` started afresh: what it had reserved was never sent or settled."""
        held = self._held.pop(worker, 0.0)
        if held > 0:
            self.budget.settle(held, 0.0)

    async def committed(self) -> float:
        return self.budget.committed


class RemoteBudget:
    """A worker's pool's budget: the cluster's one `BudgetHost`."""

    def __init__(self, handle: Any, limit: float, worker: str) -> None:
        self.limit = limit
        self.committed = 0.0
        self.refused = 0.0
        self._handle = handle
        self._worker = worker
        self._closed = asyncio.Event()

    def reserve(self, amount: float) -> bool:
        return False  # always asked of the actor, in `wait_to_reserve`

    async def wait_to_reserve(self, amount: float) -> bool:
        if self._closed.is_set():
            return False
        asked = asyncio.ensure_future(self._handle.reserve.remote(self._worker, amount))
        closed = asyncio.ensure_future(self._closed.wait())
        await asyncio.wait({asked, closed}, return_when=asyncio.FIRST_COMPLETED)
        closed.cancel()
        if not asked.done():
            # The pool is stopping: a reservation granted later is handed back.
            asked.add_done_callback(lambda f: self._hand_back(f, amount))
            return False
        ok, self.committed = asked.result()
        if not ok:
            self.refused = max(self.refused, amount)
        return bool(ok)

    def _hand_back(self, asked: asyncio.Future[tuple[bool, float]], amount: float) -> None:
        if not asked.cancelled() and asked.exception() is None and asked.result()[0]:
            self.settle(amount, 0.0)

    def settle(self, reserved: float, actual: float) -> None:
        self.committed += actual
        self._handle.settle.remote(self._worker, reserved, actual)

    def close(self) -> None:
        self._closed.set()

    def stop(self) -> StopReason:
        budget = Budget(self.limit, self.committed)
        budget.refused = self.refused
        return budget.stop()


class CoalescerHost:
    """The coalescer actor: one request in flight per key, across the cluster."""

    def __init__(self) -> None:
        self._inflight: dict[str, tuple[str, asyncio.Event]] = {}

    async def claim(self, worker: str, key: str) -> bool:
        """True: the caller sends and must `release`. False: the request in flight
        for this key ended; look the answer up again."""
        held = self._inflight.get(key)
        if held is None:
            self._inflight[key] = (worker, asyncio.Event())
            return True
        await held[1].wait()
        return False

    async def release(self, key: str) -> None:
        held = self._inflight.pop(key, None)
        if held is not None:
            held[1].set()

    async def forget(self, worker: str) -> None:
        """`worker` started afresh: the requests it had in flight are gone."""
        for key in [k for k, (w, _) in self._inflight.items() if w == worker]:
            await self.release(key)


class RemoteCoalescer:
    """A worker's pool's coalescer: the cluster's one `CoalescerHost`."""

    #: A claim is a round trip: another worker's request may end during it.
    recheck = True

    def __init__(self, handle: Any, worker: str) -> None:
        self._handle = handle
        self._worker = worker

    async def claim(self, key: str) -> bool:
        return bool(await self._handle.claim.remote(self._worker, key))

    def release(self, key: str) -> None:
        # After this turn's commit (the ledger's call_soon came first): a waiter
        # woken by the release finds the answer in the state.
        asyncio.get_running_loop().call_soon(self._handle.release.remote, key)
