"""Pytest fixtures for the IB Gateway simulator, for this project's tests and for yours.

Load it from your root ``conftest.py`` (``pytest_plugins = ["backend.ib.simulator.pytest_plugin"]``)
or with ``pytest -p backend.ib.simulator.pytest_plugin``; it needs pytest-asyncio. Then a
strategy test gets a gateway on an ephemeral 127.0.0.1 port and the real ib_async client::

    @pytest.mark.asyncio
    async def test_my_strategy(ib, sim):      # sim: basic_scenario(); ib: connected, clientId 1
        [pos] = [p for p in await ib.reqPositionsAsync() if p.contract.conId == 265598]

``ib_decoder_guard``
    Fails the test if ib_async logged "Error handling fields" (or a decoder "Error for ...")
    while it ran: ib_async drops a malformed message with only that log line. Not autouse here;
    this project's ``tests/ib`` and ``tests/reconcile`` conftests switch it on for every test.
``sim_factory``
    ``await sim_factory(scenario=None, faults=None)`` -> a started ``GatewaySimulator`` on an
    ephemeral 127.0.0.1 port; every simulator it made is stopped at teardown.
``ib_factory``
    ``ib_factory.new()`` -> a fresh ``IB`` (disconnected at teardown);
    ``await ib_factory.connect(sim, client_id=1, timeout=5, **connect_kwargs)`` -> connected IB.
``sim``
    A started simulator with ``basic_scenario()`` (one account ``DU1234567``).
``sim2``
    A started simulator with ``basic_scenario(("DU1111111", "DU2222222"))`` (two accounts).
``ib``
    An ``IB`` connected to ``sim`` with clientId 1 (``raiseSyncErrors=True``).

All fixtures are function-scoped and live in the test's own event loop (pytest-asyncio):
an ``IB`` or a simulator made in one loop is unusable in another.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from ib_async import IB

from backend.ib.simulator import Faults, GatewaySimulator, Scenario
from backend.ib.simulator.examples import basic_scenario

BAD_LOG_MARKERS = ("Error handling fields", "Error for ")

ONE_ACCOUNT = ("DU1234567",)
TWO_ACCOUNTS = ("DU1111111", "DU2222222")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def ib_decoder_guard() -> Iterator[list[logging.LogRecord]]:
    """Collect ib_async's log records; fail on any decoder error."""
    collector = _Collector()
    logger = logging.getLogger("ib_async")
    logger.addHandler(collector)
    try:
        yield collector.records
    finally:
        logger.removeHandler(collector)
    bad = [
        r.getMessage()
        for r in collector.records
        if any(marker in r.getMessage() for marker in BAD_LOG_MARKERS)
    ]
    if bad:
        pytest.fail(f"ib_async could not decode simulator messages: {bad[:3]}")


class SimFactory:
    def __init__(self) -> None:
        self.sims: list[GatewaySimulator] = []

    async def __call__(
        self, scenario: Scenario | None = None, faults: Faults | None = None
    ) -> GatewaySimulator:
        sim = GatewaySimulator(scenario or basic_scenario(), faults=faults, port=0)
        await sim.start()
        self.sims.append(sim)
        return sim

    async def close(self) -> None:
        for sim in self.sims:
            await sim.stop()


class IBFactory:
    def __init__(self) -> None:
        self.ibs: list[IB] = []

    def new(self) -> IB:
        ib = IB()
        ib.RaiseRequestErrors = True
        self.ibs.append(ib)
        return ib

    async def connect(
        self,
        sim: GatewaySimulator,
        client_id: int = 1,
        timeout: float = 5,  # noqa: ASYNC109  (ib_async's own name for it)
        **kwargs: Any,
    ) -> IB:
        ib = self.new()
        kwargs.setdefault("raiseSyncErrors", True)
        await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=timeout, **kwargs)
        return ib

    def close(self) -> None:
        for ib in self.ibs:
            ib.disconnect()


@pytest_asyncio.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    factory = SimFactory()
    try:
        yield factory
    finally:
        await factory.close()


@pytest_asyncio.fixture
async def ib_factory() -> AsyncIterator[IBFactory]:
    factory = IBFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest_asyncio.fixture
async def sim(sim_factory: SimFactory) -> GatewaySimulator:
    return await sim_factory(basic_scenario(ONE_ACCOUNT))


@pytest_asyncio.fixture
async def sim2(sim_factory: SimFactory) -> GatewaySimulator:
    return await sim_factory(basic_scenario(TWO_ACCOUNTS))


@pytest_asyncio.fixture
async def ib(sim: GatewaySimulator, ib_factory: IBFactory) -> IB:
    return await ib_factory.connect(sim, client_id=1)
