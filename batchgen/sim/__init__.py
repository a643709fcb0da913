"""A faithful, fast emulator of the Gemini image API, for tests and benchmarks.

Embed it (``async with Simulator(SimConfig()) as sim``), run it in a thread
(`SimulatorThread`) or as a process (``batchgen sim serve``). Prompts can force
exact outcomes with ``[[sim:KIND]]`` / ``[[sim:KINDxN]]`` markers (see
`batchgen.sim.faults`); quotas, latency and random faults come from
`SimConfig`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from batchgen.sim.config import SimConfig
from batchgen.sim.faults import KINDS, Latency, SpecError

if TYPE_CHECKING:
    from batchgen.sim.app import SIM_KEY, make_app
    from batchgen.sim.server import Simulator, SimulatorThread
    from batchgen.sim.stats import RequestRecord, SimStats

# The server half (aiohttp) loads on first use, so `batchgen --help` stays fast.
_LAZY = {
    "SIM_KEY": "batchgen.sim.app",
    "make_app": "batchgen.sim.app",
    "Simulator": "batchgen.sim.server",
    "SimulatorThread": "batchgen.sim.server",
    "RequestRecord": "batchgen.sim.stats",
    "SimStats": "batchgen.sim.stats",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchgen.sim' has no attribute {name!r}")


__all__ = [
    "KINDS",
    "SIM_KEY",
    "Latency",
    "RequestRecord",
    "SimConfig",
    "SimStats",
    "Simulator",
    "SimulatorThread",
    "SpecError",
    "make_app",
]
