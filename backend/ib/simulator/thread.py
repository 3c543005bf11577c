"""Run the simulator in a background thread with its own event loop.

For code that uses ib_async's *blocking* API (``ib.connect``, ``ib.reqPositions``): that API
runs its own loop with ``run_until_complete``, so the server cannot share it::

    with SimulatorThread(scenario) as handle:
        ib = IB(); ib.connect("127.0.0.1", handle.port, clientId=1)
        handle.call(lambda sim: sim.advance_prices(1))

Scripting helpers must run on the simulator's loop: use :meth:`SimulatorThread.call`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from backend.errors import BrokerError
from backend.ib.simulator.faults import Faults
from backend.ib.simulator.scenario import Scenario
from backend.ib.simulator.server import GatewaySimulator

T = TypeVar("T")


class SimulatorThread:
    """A :class:`GatewaySimulator` served from a daemon thread."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout: float = 10.0,
    ) -> None:
        self._args = (scenario, faults, host, port)
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sim: GatewaySimulator | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ib-gateway-sim", daemon=True)

    @property
    def sim(self) -> GatewaySimulator:
        if self._sim is None:
            raise BrokerError("simulator thread is not running")
        return self._sim

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def port(self) -> int:
        return self.sim.port

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        scenario, faults, host, port = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self._sim = GatewaySimulator(scenario, faults=faults, host=host, port=port)
            await self._sim.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._sim.stop()

    def start(self) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise BrokerError(f"simulator thread did not start within {self._start_timeout}s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[GatewaySimulator], T], within: float = 10.0) -> T:
        """Run ``fn(sim)`` on the simulator's loop and return its result."""
        if self._loop is None:
            raise BrokerError("simulator thread is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(self.sim))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(within)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10.0)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
