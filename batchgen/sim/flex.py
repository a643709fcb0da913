"""The Flex tier: ``"serviceTier": "flex"`` on a generateContent body.

Half price for capacity that is not guaranteed: the model answers the same,
but after minutes rather than seconds (`SimConfig.flex_latency`, in simulated
seconds, so `SimConfig.time_scale` brings it down to what a test can wait
for) and a share of requests (`SimConfig.flex_shed_rate`) is shed with 429
or 503. Only models whose catalogue entry offers flex take it; the 400 for
the others is `batchgen.sim.served.check`'s. Shedding is a hash of the seed,
the prompt and its occurrence, like the fault table, so a seeded run repeats.
"""

from __future__ import annotations

import random

from batchgen.sim.clock import SimClock
from batchgen.sim.config import SimConfig
from batchgen.sim.faults import Latency, fault_draw
from batchgen.sim.stats import SimStats

#: Mixed into the seed so that flex draws are not the fault table's draws.
_SALT = 0xF1E8


class FlexTier:
    """Latency and shedding of flex requests for one simulator."""

    def __init__(self, config: SimConfig, clock: SimClock) -> None:
        self.latency = Latency.parse(config.flex_latency)
        self.shed_rate = config.flex_shed_rate
        self.clock = clock
        self._seed = config.seed ^ _SALT
        self._rng = random.Random(self._seed)

    def shed(self, prompt: str, occurrence: int, stats: SimStats) -> str | None:
        """``"429"`` or ``"503"`` for a request the tier sheds, else None (half each)."""
        if self.shed_rate <= 0.0:
            return None
        draw = fault_draw(self._seed, prompt, occurrence)
        if draw >= self.shed_rate:
            return None
        kind = "429" if draw < self.shed_rate / 2 else "503"
        stats.injected[f"flex-{kind}"] += 1
        return kind

    def delay(self) -> float:
        """Real seconds to wait before answering a flex request."""
        return self.latency.sample(self._rng) / self.clock.scale
