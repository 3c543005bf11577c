"""The whole chain live: strategies place orders through the StrategyManager (real ib_async
client over TCP) against the IB Gateway simulator; the PortfolioManager consumes its queue and
persists to real lmdb://."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ib_async import Contract, LimitOrder, MarketOrder

from backend.core.portfolio_manager import PortfolioManager
from backend.ib.simulator import GatewaySimulator, Scenario
from backend.ib.strategy_manager import StrategyManager
from backend.storage.schema import FILLS, ORDERS, PORTFOLIO, POSITIONS

from .ib_objects import read

ACCOUNT = "DU1111111"
STK = 265598


def scenario() -> Scenario:
    return Scenario.from_dict({
        "accounts": [ACCOUNT],
        "contracts": [{"con_id": STK, "symbol": "AAPL", "sec_type": "STK",
                       "primary_exchange": "NASDAQ"}],
        "price_paths": {STK: [100.0, 101.0, 99.0]},
        "max_fill_qty": 4,  # every order fills in parts
    })


async def until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_strategy_manager_to_arctic_end_to_end(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    async with GatewaySimulator(scenario(), port=0) as sim:
        sm = StrategyManager(request_timeout=2.0)
        await sm.connect("127.0.0.1", sim.port, 1, timeout=2.0)
        try:
            async with PortfolioManager(uri) as pm:
                pm.subscribe(sm)
                (contract,) = await sm.qualify(Contract(conId=STK))
                long_trade = sm.place_order("long_side", contract, MarketOrder("BUY", 10))
                short_trade = sm.place_order("short_side", contract, MarketOrder("SELL", 6))
                resting = sm.place_order("long_side", contract, LimitOrder("BUY", 5, 50.0))
                await until(lambda: long_trade.isDone() and short_trade.isDone())
                await until(lambda: all(
                    f.commissionReport.execId for t in (long_trade, short_trade)
                    for f in t.fills))
                await until(lambda: sm.message_queue.empty())
                sm.cancel_order(resting)
                await until(lambda: resting.isDone())
                await until(lambda: sm.message_queue.empty())
                await pm.flush()
                long_qty = pm.positions_frame("long_side")["qty"].tolist()
        finally:
            sm.disconnect()
    fills = read(uri, FILLS, ACCOUNT)
    assert len(fills) == 3 + 2  # 10 = 4+4+2, 6 = 4+2: every part once
    assert fills["exec_id_base"].is_unique
    assert fills["commission"].notna().all()  # each re-published with its report
    assert sorted(fills.groupby("strategy")["qty"].sum().items()) == [
        ("long_side", 10.0), ("short_side", 6.0)]
    assert long_qty == [10.0]
    assert read(uri, POSITIONS, "long_side")["qty"].tolist() == [10.0]
    assert read(uri, POSITIONS, "short_side")["qty"].tolist() == [-6.0]
    assert read(uri, POSITIONS, "short_side")["commissions_pending"].tolist() == [0]
    port = read(uri, PORTFOLIO, ACCOUNT).set_index("strategy")["qty"].to_dict()
    assert port == {"long_side": 10.0, "short_side": -6.0}
    orders = read(uri, ORDERS, ACCOUNT)
    assert orders["event_key"].is_unique
    assert set(orders["status"]) >= {"Filled", "Cancelled"}
    assert set(orders["strategy"]) == {"long_side", "short_side"}
