"""Running the simulator: in the current event loop, or in a thread.

`Simulator` is an async context manager over aiohttp's `AppRunner` and
`TCPSite`, bound to loopback on a free port by default. Handler cancellation
is on so that a client giving up on a ``hang`` frees the handler, and the
shutdown grace is short so that stopping never waits for slow answers.
`SimulatorThread` wraps the same thing for synchronous code (CLI end-to-end
tests), with its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from types import TracebackType

from aiohttp import web

from batchgen.sim.app import SIM_KEY, make_app
from batchgen.sim.config import SimConfig
from batchgen.sim.stats import SimStats


class Simulator:
    """``async with Simulator(SimConfig()) as sim: ... sim.base_url ...``"""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.app = make_app(self.config)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def stats(self) -> SimStats:
        return self.app[SIM_KEY].stats

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without a trailing slash."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,
            shutdown_timeout=self.config.shutdown_timeout_s,
            access_log=None,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        self._port = int(port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SimulatorThread:
    """A `Simulator` served from a background thread's event loop.

    `stats` is the live object, read without locking: read it once the client
    is done, or use `snapshot()` while traffic is flowing."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.simulator = Simulator(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self.simulator.base_url

    @property
    def stats(self) -> SimStats:
        return self.simulator.stats

    def snapshot(self, timeout: float = 5.0) -> SimStats:
        """A consistent copy of `stats`, taken on the server's own thread, for
        reading while requests are still being served."""
        loop = self._loop
        if loop is None or self._thread is None:
            return copy.deepcopy(self.simulator.stats)

        async def take() -> SimStats:
            return copy.deepcopy(self.simulator.stats)

        return asyncio.run_coroutine_threadsafe(take(), loop).result(timeout)

    def start(self) -> SimulatorThread:
        """Start serving; returns once the port is bound (or raises)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="batchgen-sim", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.simulator.stop()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
