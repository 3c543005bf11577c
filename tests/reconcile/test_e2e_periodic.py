"""The runner's periodic reconciliation against the simulator (real ib_async, real lmdb):
it never overlaps itself, and it leaves out instruments with a working order or a fresh fill."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ib_async import Contract, LimitOrder, MarketOrder, Stock

from backend.core.portfolio_manager import PortfolioManager
from backend.ib.adapter import IBAdapter
from backend.ib.simulator.examples import AAPL, ES, basic_scenario
from backend.ib.strategy_manager import StrategyManager
from backend.reconcile.job import (
    DEFAULT_GATEWAY_TZ,
    Outcome,
    RunOptions,
    RunReport,
    executions_window_start,
)
from backend.reconcile.periodic import runner_reconciler

from .conftest import ACCOUNT, CLIENT_ID, SimFactory, reports

REQ_POSITIONS = 61  # the TWS API message id of reqPositions
QUIET = 0.3
QUIET_SKIP = 600.0  # "recent" for the whole busy phase, however slow the machine


def listening(sm: Any) -> Any:
    """``sm.listening_since`` read afresh (not narrowed by an earlier assert on it)."""
    return sm.listening_since


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  (client/manager state has no event to await)
            await asyncio.sleep(0.01)


def rows_of(report: RunReport) -> set[int]:
    return {int(r["con_id"]) for r in report.accounts[0].report["rows"]}


@pytest.mark.asyncio
async def test_periodic_never_overlaps_itself(sim_factory: SimFactory, uri: str) -> None:
    sim = await sim_factory(basic_scenario())
    done: list[RunReport] = []
    async with PortfolioManager(uri) as pm, IBAdapter(request_timeout=5) as adapter:
        await adapter.connect("127.0.0.1", sim.port, CLIENT_ID, timeout=5)
        periodic, _ = runner_reconciler(
            adapter, pm, interval=0.01, quiet_seconds=QUIET, in_flight=pm.in_flight_con_ids,
            options=RunOptions(gateway="sim"), on_report=done.append)
        # Two ticks at once: the second finds the first in progress and does nothing.
        first, second = await asyncio.gather(periodic.tick(), periodic.tick())
        assert second is None
        assert first is not None
        assert first.outcome is Outcome.CLEAN
        assert (periodic.runs, periodic.overlaps_skipped) == (1, 1)

        # Runs slower (positionEnd 0.5 s late) than the interval (0.01 s): still one at a time,
        # and a tick from elsewhere during a run is skipped.
        sim.faults.delay_end["positionEnd"] = 0.5
        seen = sum(1 for m in sim.received if m and m[0] == str(REQ_POSITIONS))
        task = asyncio.create_task(periodic.run_forever())
        try:
            await sim.wait_for_request(REQ_POSITIONS, count=seen + 1)
            assert await periodic.tick() is None  # a run is waiting for positionEnd
            await until(lambda: len(done) >= 3)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert periodic.overlaps_skipped == 2
    assert all(r.outcome is Outcome.CLEAN for r in done)
    for earlier, later in itertools.pairwise(done):
        assert earlier.finished_at <= later.started_at  # no two runs overlap in time
    # One report row per finished run, in order (plus, at most, the run the cancel cut short).
    stored = [r["run_id"] for r in reports(uri)]
    assert stored[:len(done)] == [r.run_id for r in done]
    assert len(stored) - len(done) in (0, 1)


@pytest.mark.asyncio
async def test_periodic_skips_instruments_in_flight(sim_factory: SimFactory, uri: str) -> None:
    sim = await sim_factory(dataclasses.replace(basic_scenario(), open_orders=()))
    async with (PortfolioManager(uri) as pm, IBAdapter(request_timeout=5) as adapter,
                StrategyManager(request_timeout=5) as sm):
        await sm.connect("127.0.0.1", sim.port, 1, timeout=5)
        await adapter.connect("127.0.0.1", sim.port, CLIENT_ID, timeout=5)
        pm.subscribe(sm)
        # The runner's quiet window (fills seen from the StrategyManager) is long, so a slow
        # machine stays inside it, until the test ends it: no timing assumption either way.
        # From the manager only what is not durable yet counts (its own recency window would
        # also hold the fills the first run backfills).
        periodic, window = runner_reconciler(
            adapter, pm, interval=60, quiet_seconds=QUIET_SKIP,
            in_flight=lambda _: pm.in_flight_con_ids(0.0), options=RunOptions(gateway="sim"))
        sm.add_listener(window)
        baseline = await periodic.tick()  # backfills the scenario's day
        assert baseline is not None
        assert baseline.outcome is Outcome.CLEAN
        assert rows_of(baseline) >= {AAPL.con_id, ES.con_id}
        await until(lambda: not pm.in_flight_con_ids(0.0))  # the backfill is durable

        # A resting order on AAPL (limit far below the market) and a fresh fill on ES.
        [aapl] = await sm.qualify(Stock("AAPL", "SMART", "USD"))
        trade = sm.place_order("momentum", aapl, LimitOrder("BUY", 5, 100.0))
        await until(lambda: trade.orderStatus.status == "Submitted")
        await until(lambda: (ACCOUNT, AAPL.con_id) in window.busy([ACCOUNT]))
        [es] = await sm.qualify(Contract(conId=ES.con_id))
        filled = sm.place_order("carry", es, MarketOrder("BUY", 1))
        await until(lambda: bool(filled.fills))
        assert (ACCOUNT, ES.con_id) in window.busy([ACCOUNT])  # within the quiet window

        busy = await periodic.tick()
        assert busy is not None
        report = busy.accounts[0].report
        assert report["skipped"] == sorted([AAPL.con_id, ES.con_id])
        assert not rows_of(busy) & {AAPL.con_id, ES.con_id}  # left out of the compare
        assert busy.outcome is Outcome.CLEAN

        # The order is cancelled and the quiet window ends: both are compared again.
        sm.cancel_order(trade)
        await until(lambda: trade.isDone())
        window.quiet_seconds = 0.0
        await until(lambda: not window.busy([ACCOUNT]) and not pm.in_flight_con_ids(0.0))
        after = await periodic.tick()
        assert after is not None
        assert after.accounts[0].report["skipped"] == []
        assert rows_of(after) >= {AAPL.con_id, ES.con_id}
        assert after.outcome is Outcome.CLEAN  # the ES fill is journaled: broker 3 = carry 3
        assert pm.position(ACCOUNT, "carry", ES.con_id).qty == 3.0


@pytest.mark.asyncio
async def test_periodic_across_the_gateways_midnight(sim_factory: SimFactory, uri: str) -> None:
    """The gateway forgets executions at its midnight. A runner that listened across it has no
    history gap (its fills reached the journal live); once its connection is down, a run after
    midnight reports the HISTORY_GAP that a cron job would."""
    sim = await sim_factory(basic_scenario())
    now = datetime.now(UTC)
    midnight = executions_window_start(now, DEFAULT_GATEWAY_TZ) + timedelta(days=1)
    times = iter([now, now, midnight + timedelta(minutes=3), midnight + timedelta(minutes=3),
                  midnight + timedelta(minutes=8), midnight + timedelta(minutes=8)])
    async with (PortfolioManager(uri) as pm, IBAdapter(request_timeout=5) as adapter,
                StrategyManager(request_timeout=5) as sm):
        await sm.connect("127.0.0.1", sim.port, 1, timeout=5)
        await adapter.connect("127.0.0.1", sim.port, CLIENT_ID, timeout=5)
        pm.subscribe(sm)
        since = sm.listening_since
        assert since is not None
        assert since <= datetime.now(UTC)
        periodic, _ = runner_reconciler(
            adapter, pm, interval=60, quiet_seconds=0.0, options=RunOptions(gateway="sim"),
            listening_since=lambda: sm.listening_since, clock=lambda: next(times))
        first = await periodic.tick()  # before midnight: backfills the scenario's fills
        assert first is not None
        assert first.outcome is Outcome.CLEAN

        after = await periodic.tick()  # 3 minutes past midnight, the runner still listening
        assert after is not None
        report = after.accounts[0].report
        assert report["executions_window_start"] == midnight.isoformat()
        assert report["covered_until_before"] < midnight.isoformat()  # only the live feed
        assert report["listening_since"] == since.isoformat()
        assert after.outcome is Outcome.CLEAN
        assert not [b for b in report["breaks"] if b["kind"] == "HISTORY_GAP"]

        sm.disconnect()  # the runner's feed is down: nothing covers the time before midnight
        assert listening(sm) is None
        down = await periodic.tick()
        assert down is not None
        gaps = [b for b in down.accounts[0].report["breaks"] if b["kind"] == "HISTORY_GAP"]
        assert len(gaps) == 1
        assert down.outcome is Outcome.BREAKS
        assert down.accounts[0].report["listening_since"] is None

        await sm.connect("127.0.0.1", sim.port, 1, timeout=5)  # coverage starts afresh
        again = listening(sm)
        assert again is not None
        assert again > since
