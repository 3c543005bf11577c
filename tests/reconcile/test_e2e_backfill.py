"""A runner outage: fills executed at the gateway while no PortfolioManager listened arrive
through the job's backfill exactly once; the next run feeds none."""

from __future__ import annotations

import asyncio

from ib_async import MarketOrder, Stock

from backend.core.portfolio_manager import PortfolioManager
from backend.ib.adapter import IBAdapter
from backend.ib.simulator import GatewaySimulator, SimulatorThread
from backend.ib.simulator.examples import AAPL, ES, basic_scenario
from backend.ib.strategy_manager import StrategyManager
from backend.reconcile.job import ALL_EXECUTIONS
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS

from .conftest import (
    ACCOUNT,
    fill_ids,
    read,
    reports,
    residual_rows,
    run_cli,
    simulator,
    versions,
)

RUNNER_CLIENT_ID = 1


async def _runner_session(uri: str, port: int) -> str:
    """The runner: a StrategyManager feeding a PortfolioManager; one order filled live.
    Returns the exec_id of that fill."""
    async with PortfolioManager(uri) as pm, StrategyManager(request_timeout=5) as sm:
        await sm.connect("127.0.0.1", port, RUNNER_CLIENT_ID, timeout=5)
        pm.subscribe(sm)
        [contract] = await sm.qualify(Stock("AAPL", "SMART", "USD"))
        trade = sm.place_order("momentum", contract, MarketOrder("BUY", 10))
        async with asyncio.timeout(10):
            while not (trade.isDone() and trade.fills  # noqa: ASYNC110  (no event to await)
                       and pm.durable == pm.received
                       and pm.position(ACCOUNT, "momentum", AAPL.con_id).qty == 110.0):
                await asyncio.sleep(0.02)
            await pm.flush()
        return str(trade.fills[0].execution.execId)


def _outage_fills(gw: SimulatorThread) -> list[str]:
    """Fills at the gateway while nothing of ours is connected (e.g. a manual TWS order)."""
    def push(sim: GatewaySimulator) -> list[str]:
        assert sim.connected_client_ids == []
        return [sim.push_live_fill(AAPL.con_id, "SLD", 40, 152.0, order_ref="momentum").exec_id,
                sim.push_live_fill(ES.con_id, "BOT", 1, 5012.0, order_ref="carry").exec_id]
    return gw.call(push)


def test_outage_fills_backfilled_once(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        baseline = run_cli(uri, gw.port)  # the journal starts complete (the scenario's day)
        assert baseline.code == 0, baseline.err
        live_id = asyncio.run(_runner_session(uri, gw.port))
        journaled = fill_ids(uri)
        assert live_id in journaled
        assert len(journaled) == 5

        missed = _outage_fills(gw)
        fills_versions = versions(uri, FILLS)
        first = run_cli(uri, gw.port)
        after_first = fill_ids(uri)
        versions_after_first = versions(uri, FILLS)
        second = run_cli(uri, gw.port)

    # The first run after the outage feeds exactly the two missed fills, then is clean.
    assert first.code == 0, (first.out, first.err)
    assert sorted(after_first) == sorted([*journaled, *missed])
    assert versions(uri, FILLS) != fills_versions
    report = reports(uri)[-2]
    assert report["backfill"] == {"fetched": 7, "new": 2, "fed": 2}
    assert report["outcome"] == "clean"
    momentum = read(uri, POSITIONS, "momentum")
    aapl = momentum[(momentum["account"] == ACCOUNT) & (momentum["con_id"] == AAPL.con_id)]
    assert aapl["qty"].tolist() == [70.0]  # 100 + 10 live - 40 during the outage
    carry = read(uri, POSITIONS, "carry")
    assert carry[carry["con_id"] == ES.con_id]["qty"].tolist() == [3.0]

    # The second run finds every execution journaled: nothing fed, nothing written to fills.
    assert second.code == 0, second.err
    assert reports(uri)[-1]["backfill"] == {"fetched": 7, "new": 0, "fed": 0}
    assert fill_ids(uri) == after_first
    assert versions(uri, FILLS) == versions_after_first


async def _yesterdays_runner(uri: str, port: int) -> int:
    """A runner that journaled the scenario's fills (2026-11-20) and then stopped listening:
    the journal's coverage ends at its last fill, before the gateway's executions window."""
    async with PortfolioManager(uri) as pm, IBAdapter(request_timeout=5) as adapter:
        await adapter.connect("127.0.0.1", port, RUNNER_CLIENT_ID, timeout=5)
        snap = await adapter.snapshot(executions_since=ALL_EXECUTIONS)
        fed = await pm.ingest_backfill(snap.executions)
        await pm.flush()
        return fed


def test_gap_before_the_executions_window_is_a_break_with_a_hint(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        assert asyncio.run(_yesterdays_runner(uri, gw.port)) == 4
        run = run_cli(uri, gw.port)
    assert run.code == 1, (run.out, run.err)
    assert "HISTORY_GAP/EXECUTIONS_WINDOW account" in run.out
    assert "Flex" in run.out
    report = reports(uri)[-1]
    [gap] = report["breaks"]
    assert gap["kind"] == "HISTORY_GAP"
    assert "Flex report" in gap["hint"]
    assert report["covered_until_before"].startswith("2026-11-20T16:00:00")
    assert report["backfill"] == {"fetched": 4, "new": 0, "fed": 0}  # nothing else to ingest
    assert residual_rows(read(uri, PORTFOLIO, ACCOUNT)).empty  # the holdings agree
