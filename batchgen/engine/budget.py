"""budget: each request's worst case in, whether it may be sent out.

Spend never passes `--budget`, counting what earlier runs in this folder
already spent: a request's worst case is reserved before it is sent and
settled against its real cost when the answer comes, so requests in flight
together cannot pass the limit either.
"""

from __future__ import annotations

from batchgen.errors import EXIT_ABORTED
from batchgen.models import StopKind, StopReason


class Budget:
    """Reserve the worst case before sending, settle on the answer."""

    def __init__(self, limit: float | None, spent_before: float) -> None:
        self.limit = limit
        self.committed = spent_before
        self.reserved = 0.0

    def reserve(self, amount: float) -> bool:
        if self.limit is not None and self.committed + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.committed += actual

    def stop(self) -> StopReason:
        """The run's stop once a reservation was refused."""
        return StopReason(
            StopKind.BUDGET,
            f"budget ${self.limit or 0.0:.2f} reached (spent ${self.committed:.2f})",
            EXIT_ABORTED,
        )
