"""ray_pacer: one `Pacer` for a whole Ray cluster, and the workers' view of it.

The API's quota is per project, the same for one machine or fifty, so every
admission of a project's requests goes through one `Pacer` (the unchanged
`limiter.Pacer`) hosted in one actor: ``--rpm N`` is then a sliding window
over the whole cluster, and the AIMD learns the project's quota once, from
every worker's 429s. N workers with a pacer each would each learn a
shrinking share of the quota and probe up by 5 % per quiet window: the
measured prototype ran at 30 % of the quota that way, 98 % with one actor.

- `PacerHost` is the actor's class (made an actor by `ray_engine`, so Ray is
  imported only there): the four methods the pool calls, on the actor's own
  event loop. Admission tickets are the actor's monotonic clock, so burst
  learning stays consistent across machines.
- The learned rate is kept in the state (`store/pg/workers.py`) as it is
  learned and read when the actor starts: a restarted actor (Ray reruns its
  constructor) does not start blind. With ``--rpm``, a restarted actor first
  pauses one window: its history of admissions is gone, and the server's
  window may already be full.
- `RemotePacer` is what each worker's pool is given: `await acquire()`, and
  fire-and-forget notes of each answer (one round trip per request, ~1 ms
  locally, far below any per-project quota).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

from batchgen.engine.limiter import Pacer
from batchgen.store.pg import PgStore


def send_jitter(window: float) -> float:
    """The allowance for grants delayed unevenly between this actor and the wire:
    with `--rpm N`, N admissions per window W + this, so that the server's window
    never holds N + 1 (seen at 2 s windows on a loaded machine: 41 of 40). Two per
    cent of W, at least 0.1 s: at the API's 60 s window, 1.2 s, 2 % of the rate."""
    return max(0.1, 0.02 * window)


class PacerHost:
    """The pacer actor of one project (one per run: its requests share one quota)."""

    def __init__(
        self,
        rpm: float | None,
        window: float,
        state: tuple[Path, str] | None,
        scope: str,
        restarted: bool | None = None,
    ) -> None:
        """`state` (output folder, state URL) keeps the learned rate under `scope`;
        `restarted`: Ray is running this constructor again after the actor died
        (None: ask Ray)."""
        if restarted is None:
            import ray

            with warnings.catch_warnings():  # a deprecation inside Ray's own property
                warnings.simplefilter("ignore")
                restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.pacer = Pacer(rpm, window=window, slow_start=True, guard=send_jitter(window))
        self._scope = scope
        self._store: PgStore | None = None
        self._saved = self.pacer.learned_quota
        if state is not None:
            self._store = PgStore(*state, lock=False)
            self._store.open()
            learned = self._store.learned_rate(scope)
            if learned is not None and rpm is None:
                self.pacer.resume(learned / window)
        if restarted and rpm is not None:
            self.pacer.paused_until = time.monotonic() + window

    async def acquire(self) -> float:
        admitted = await self.pacer.acquire()
        if self.pacer.learned_quota != self._saved:
            self._save()
        return admitted

    async def on_success(self, sent_at: float | None = None) -> None:
        self.pacer.on_success(sent_at)

    async def on_rate_limited(self, retry_after: float | None, sent_at: float | None) -> None:
        self.pacer.on_rate_limited(retry_after, sent_at)

    async def on_server_error(self) -> None:
        self.pacer.on_server_error()

    async def figures(self) -> dict[str, float | None]:
        """The pacer's rate (requests/s; None while unlimited), what it learned, 429s."""
        rate = self.pacer.rate
        return {
            "rate": None if math.isinf(rate) else rate,
            "learned_quota": self.pacer.learned_quota,
            "rate_limited": self.pacer.rate_limited,
        }

    def _save(self) -> None:
        self._saved = self.pacer.learned_quota
        store = self._store
        if store is None or math.isinf(self.pacer.rate):
            return
        with store.transaction():
            store.save_learned_rate(self._scope, self.pacer.rate * self.pacer.window)


class RemotePacer:
    """A worker's pool's pacer: the cluster's one `PacerHost`, through its actor handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def acquire(self) -> float:
        return float(await self._handle.acquire.remote())

    def on_success(self, sent_at: float | None = None) -> None:
        self._handle.on_success.remote(sent_at)

    def on_rate_limited(self, retry_after: float | None, sent_at: float | None = None) -> None:
        self._handle.on_rate_limited.remote(retry_after, sent_at)

    def on_server_error(self) -> None:
        self._handle.on_server_error.remote()
