"""budget: each request's worst case in, whether it may be sent out.

Spend never passes `--budget`, counting what earlier runs in this folder
already spent: a request's worst case is reserved before it is sent and
settled against its real cost when the answer comes, so requests in flight
together cannot pass the limit either.

A request whose worst case does not fit while others are in flight waits
for them to settle: their reservations are worst cases (two images each), and
what they really cost usually leaves room for more. The budget is *reached*
only when nothing is in flight and the next request's worst case does not fit
in what is left: stopping earlier (at 64 requests in flight, the worst cases
of a few dollars' worth) said "budget $1.00 reached" with $0.46 spent.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from batchgen.errors import EXIT_ABORTED
from batchgen.models import StopKind, StopReason


class Reserves(Protocol):
    """What the pool asks of its budget: a `Budget` in this process, or the Ray
    engine's `RemoteBudget` in front of the one `Budget` of a whole cluster."""

    def reserve(self, amount: float) -> bool: ...

    async def wait_to_reserve(self, amount: float) -> bool: ...

    def settle(self, reserved: float, actual: float) -> None: ...

    def close(self) -> None: ...

    def stop(self) -> StopReason: ...


class Budget:
    """Reserve the worst case before sending, settle on the answer."""

    def __init__(self, limit: float | None, spent_before: float) -> None:
        self.limit = limit
        self.committed = spent_before
        self.reserved = 0.0
        #: The worst case of the request that did not fit (0: none was refused).
        self.refused = 0.0
        self._closed = False
        self._waiting = 0
        self._settled = asyncio.Event()

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.committed + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    async def wait_to_reserve(self, amount: float) -> bool:
        """After `reserve` said no: wait for requests in flight to settle and try
        again; False once nothing is in flight and it still does not fit (or `close`)."""
        while not self.reserve(amount):
            if self.reserved <= 1e-12 or self._closed:
                self.refused = max(self.refused, amount)
                return False
            settled = self._settled
            self._waiting += 1
            try:
                await settled.wait()
            finally:
                self._waiting -= 1
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.committed += actual
        if self._waiting:
            # Wake the requests waiting for room; later waiters wait on a fresh event.
            settled, self._settled = self._settled, asyncio.Event()
            settled.set()

    def close(self) -> None:
        """The run is stopping: nobody waits for room any more."""
        self._closed = True
        self._settled.set()

    def stop(self) -> StopReason:
        """The run's stop once a request did not fit with nothing in flight."""
        return StopReason(StopKind.BUDGET, self.reached(), EXIT_ABORTED)

    def reached(self, spent: float | None = None) -> str:
        """The sentence for people: the limit, what is spent (`spent`, when the
        caller knows the final figure), and the reservation that did not fit."""
        limit = self.limit or 0.0
        spent = self.committed if spent is None else spent
        left = max(0.0, limit - spent)
        return (
            f"budget ${limit:.2f} reached: ${spent:.2f} spent in this folder, "
            f"${left:.2f} left; the next request reserves up to ${self.refused:.2f} "
            "(its worst case) before it is sent"
        )
