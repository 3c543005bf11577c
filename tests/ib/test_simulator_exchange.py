"""Orders placed through the real ib_async client fill on the simulator's exchange."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from ib_async import IB, Contract, LimitOrder, MarketOrder, Trade

from backend.ib.simulator import CommissionSpec, GatewaySimulator
from backend.ib.simulator.examples import basic_scenario

pytestmark = pytest.mark.asyncio

AAPL, ES, OPT = 265598, 495512563, 712345678


async def until(predicate: Any, within: float = 5.0) -> None:
    """Poll a client-side condition with a deadline (the client updates asynchronously)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110  (client state has no event to await)
            await asyncio.sleep(0.01)


def commissions_in(trade: Trade) -> list[float]:
    return [f.commissionReport.commission for f in trade.fills]


async def test_market_order_fills_with_commission_and_order_ref(
    sim: GatewaySimulator, ib: IB
) -> None:
    order = MarketOrder("BUY", 10)
    order.orderRef = "strat-a"
    trade = ib.placeOrder(Contract(conId=ES, exchange="CME"), order)
    await until(lambda: trade.isDone() and commissions_in(trade) == [22.5])
    assert trade.orderStatus.status == "Filled"
    assert trade.orderStatus.avgFillPrice == 5010.0
    (fill,) = trade.fills
    assert fill.execution.orderRef == "strat-a"
    assert fill.execution.shares == 10.0
    assert fill.execution.side == "BOT"
    head, seq, part, rev = fill.execution.execId.split(".")
    assert (len(head), len(seq), part, rev) == (8, 8, "01", "01")
    assert fill.contract.conId == ES  # ib_async reuses the trade's contract object
    # the exchange moved the position: 2 + 10 contracts at IB avg cost (price x 50)
    await until(lambda: {p.contract.conId: p.position for p in ib.positions()}.get(ES) == 12)
    port = {i.contract.conId: i for i in ib.portfolio()}
    assert port[ES].averageCost == pytest.approx((2 * 5000.0 + 10 * 5010.0) * 50 / 12)
    # later reqExecutions return the live fill too
    fills = await ib.reqExecutionsAsync()
    assert fill.execution.execId in {f.execution.execId for f in fills}
    assert sim.exchange.orders[(1, trade.order.orderId)].status == "Filled"


async def test_limit_order_rests_then_fills_when_price_crosses(
    sim: GatewaySimulator, ib: IB
) -> None:
    order = LimitOrder("SELL", 50, 151.4)
    order.orderRef = "strat-b"
    trade = ib.placeOrder(Contract(conId=AAPL, exchange="SMART"), order)
    await until(lambda: trade.orderStatus.status == "Submitted")
    assert trade.fills == []
    open_ids = {t.order.orderId for t in await ib.reqOpenOrdersAsync()}
    assert trade.order.orderId in open_ids
    sim.advance_prices(1, con_ids=[AAPL])  # 151.01 -> 151.5 crosses the 151.4 limit
    await until(lambda: trade.isDone() and len(commissions_in(trade)) == 1)
    assert trade.fills[0].execution.price == 151.4
    assert trade.fills[0].commissionReport.realizedPNL == pytest.approx(
        50 * (151.4 - 150.25) - 1.0
    )
    done = await ib.reqCompletedOrdersAsync(apiOnly=False)
    assert any(t.order.permId == trade.order.permId for t in done)


async def test_partial_fills_over_price_steps(sim_factory: Any, ib_factory: Any) -> None:
    scenario = dataclasses.replace(basic_scenario(), max_fill_qty=2)
    sim = await sim_factory(scenario)
    ib = await ib_factory.connect(sim, client_id=5)
    trade = ib.placeOrder(Contract(conId=OPT, exchange="SMART"), LimitOrder("BUY", 5, 5.2))
    # marketable at 5.1: the first chunk of 2 fills at once
    await until(lambda: trade.orderStatus.filled == 2)
    assert trade.orderStatus.status == "Submitted"
    assert trade.orderStatus.remaining == 3
    sim.advance_prices(1, con_ids=[OPT])  # 5.3: no longer crosses
    sim.advance_prices(1, con_ids=[OPT])  # 4.9: crosses, next chunk
    await until(lambda: trade.orderStatus.filled == 4)
    sim.advance_prices(1, con_ids=[OPT])  # 4.7
    await until(lambda: trade.isDone())
    assert [f.execution.shares for f in trade.fills] == [2.0, 2.0, 1.0]
    assert [f.execution.cumQty for f in trade.fills] == [2.0, 4.0, 5.0]
    assert len({f.execution.execId for f in trade.fills}) == 3


async def test_cancel_order(sim: GatewaySimulator, ib: IB) -> None:
    trade = ib.placeOrder(Contract(conId=AAPL, exchange="SMART"), LimitOrder("BUY", 1, 100.0))
    await until(lambda: trade.orderStatus.status == "Submitted")
    ib.cancelOrder(trade.order)
    await until(lambda: trade.orderStatus.status == "Cancelled")
    assert trade.fills == []


async def test_unsolicited_live_fill_and_streaming_quotes(sim: GatewaySimulator, ib: IB) -> None:
    ticker = ib.reqMktData(Contract(conId=AAPL, exchange="SMART"))
    await until(lambda: ticker.last == 151.01)
    sim.set_quote(AAPL, bid=160.0, ask=160.1, last=160.05)
    await until(lambda: ticker.last == 160.05 and ticker.bid == 160.0)
    e = sim.push_live_fill(AAPL, "SLD", 40, 160.0, commission=CommissionSpec(1.5))
    await until(lambda: e.exec_id in {f.execution.execId for f in ib.fills()})
    fill = next(f for f in ib.fills() if f.execution.execId == e.exec_id)
    assert fill.commissionReport.commission == 1.5
    await until(lambda: {p.contract.conId: p.position for p in ib.positions()}[AAPL] == 60)
    port = {i.contract.conId: i for i in ib.portfolio()}
    assert port[AAPL].marketPrice == 160.05
    assert ticker.contract is not None
    ib.cancelMktData(ticker.contract)


async def test_what_if_order_reports_margin_without_trading(sim: GatewaySimulator, ib: IB) -> None:
    state = await asyncio.wait_for(
        ib.whatIfOrderAsync(Contract(conId=ES, exchange="CME"), MarketOrder("BUY", 2)), 5
    )
    assert float(state.initMarginChange) == pytest.approx(2 * 5010.0 * 50 * 0.25)
    assert state.commission == 4.5
    assert all(o.order_type != "MKT" or o.con_id != ES for o in sim.exchange.open_orders())
    assert len(sim.exchange.executions) == 4  # nothing traded


async def test_global_cancel(sim: GatewaySimulator, ib: IB) -> None:
    trade = ib.placeOrder(Contract(conId=AAPL, exchange="SMART"), LimitOrder("BUY", 1, 100.0))
    await until(lambda: trade.orderStatus.status == "Submitted")
    ib.reqGlobalCancel()  # type: ignore[no-untyped-call]
    await until(lambda: trade.orderStatus.status == "Cancelled")
    assert sim.exchange.open_orders() == []
