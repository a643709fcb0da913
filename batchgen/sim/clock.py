"""`SimClock`: the simulator's scaled clock for slow things (files, batches, flex).

Real batches take hours and files live 48 hours; a test cannot wait that
long. Simulated seconds run `SimConfig.time_scale` times faster than real
ones, and `advance` jumps ahead at once (from a test, or ``POST /_sim/clock``
for a simulator in another process), waking every timer whose moment has
come. Timestamps on the wire (``createTime``, ``expirationTime``) are the
wall clock at start plus simulated seconds, so they stay consistent with the
states they describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime


class SimClock:
    """Simulated seconds since the simulator started."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._origin = time.monotonic()
        self._epoch = time.time()
        self._skipped = 0.0
        self._moved = asyncio.Event()

    def now(self) -> float:
        return (time.monotonic() - self._origin) * self.scale + self._skipped

    def advance(self, seconds: float) -> float:
        """Jump `seconds` ahead (call on the simulator's event loop); the new time."""
        self._skipped += max(0.0, seconds)
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
        return self.now()

    async def wait_until(self, moment: float) -> None:
        """Return once `now()` has reached `moment`, early if `advance` gets there."""
        while (left := moment - self.now()) > 0:
            moved = self._moved
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(moved.wait(), left / self.scale)

    def timestamp(self, moment: float) -> str:
        """`moment` as Google writes times: RFC 3339, UTC, nanoseconds."""
        wall = datetime.fromtimestamp(self._epoch + moment, UTC)
        return wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond:06d}000Z"
