"""A faithful, fast emulator of the Gemini image API, for tests and benchmarks.

Embed it (``async with Simulator(SimConfig()) as sim``), run it in a thread
(`SimulatorThread`) or as a process (``batchgen sim serve``). Prompts can force
exact outcomes with ``[[sim:KIND]]`` / ``[[sim:KINDxN]]`` markers (see
`batchgen.sim.faults`); quotas, latency and random faults come from
`SimConfig`.
"""

from __future__ import annotations

from batchgen.sim.app import SIM_KEY, make_app
from batchgen.sim.config import SimConfig
from batchgen.sim.faults import KINDS, Latency, SpecError
from batchgen.sim.server import Simulator, SimulatorThread
from batchgen.sim.stats import RequestRecord, SimStats

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
