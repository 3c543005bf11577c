"""The real ib_async client's request/response calls against the simulator."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from ib_async import IB, Contract, ExecutionFilter, Future, MarketOrder, Option, Stock
from ib_async.wrapper import RequestError

from backend.ib.simulator import GatewaySimulator

pytestmark = pytest.mark.asyncio


async def test_positions_include_zero_rows(ib: IB) -> None:
    rows = await ib.reqPositionsAsync()
    got = {(p.account, p.contract.conId): (p.position, p.avgCost) for p in rows}
    assert got == {
        ("DU1234567", 265598): (100.0, 150.25),
        ("DU1234567", 495512563): (2.0, 250000.0),
        ("DU1234567", 272093): (0.0, 0.0),  # flat today: present in the reply
    }
    assert 272093 not in {p.contract.conId for p in ib.positions()}  # ib_async drops it


async def test_portfolio_per_account_two_accounts(sim2: GatewaySimulator, ib_factory: Any) -> None:
    ib = await ib_factory.connect(sim2, client_id=3)
    for acct in ("DU1111111", "DU2222222"):
        await ib.reqAccountUpdatesAsync(acct)
    items = {(i.account, i.contract.conId): i for i in ib.portfolio()}
    opt = items[("DU2222222", 712345678)]
    assert opt.position == -3.0
    assert opt.marketPrice == pytest.approx(5.1)
    assert opt.marketValue == pytest.approx(-3 * 5.1 * 100)
    assert opt.averageCost == pytest.approx(510.0)
    assert opt.contract.multiplier == "100"
    assert opt.contract.right == "C"
    assert items[("DU1111111", 265598)].marketPrice == pytest.approx(151.01)
    acct_msgs = [m for m in sim2.received if m[0] == "6"]
    assert [m[3] for m in acct_msgs] == ["DU1111111", "DU2222222"]


async def test_account_values_and_summary(ib: IB) -> None:
    values = {(v.tag, v.currency): v.value for v in ib.accountValues()}
    assert values[("TotalCashValue", "USD")] == "1000000.00"
    assert values[("BuyingPower", "USD")] == "4000000.00"
    summary = await ib.accountSummaryAsync("DU1234567")
    assert {s.tag for s in summary} >= {"NetLiquidation", "TotalCashValue"}


async def test_executions_with_commissions_and_filter(ib: IB) -> None:
    fills = ib.fills()
    by_id = {f.execution.execId: f for f in fills}
    es = by_id["0000e215.656d0002.01.01"]
    assert es.contract.conId == 495512563
    assert es.contract.multiplier == "50"
    assert es.execution.side == "BOT"
    assert es.execution.shares == 2.0
    assert es.execution.orderRef == "carry"
    assert es.execution.time == dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)
    assert es.commissionReport.commission == 4.5
    assert by_id["0000e215.656d0004.01.01"].commissionReport.realizedPNL == 48.0
    msft = await ib.reqExecutionsAsync(ExecutionFilter(symbol="MSFT", side="SELL"))
    assert [f.execution.execId for f in msft] == ["0000e215.656d0004.01.01"]
    later = await ib.reqExecutionsAsync(ExecutionFilter(time="20261120 15:15:00 UTC"))
    assert len(later) == 2


async def test_open_and_completed_orders(ib: IB) -> None:
    open_trades = await ib.reqAllOpenOrdersAsync()
    assert len(open_trades) == 1
    t = open_trades[0]
    assert (t.order.orderId, t.order.permId, t.order.orderRef) == (21, 900000021, "momentum")
    assert t.order.lmtPrice == 120.0
    assert t.order.totalQuantity == 50.0
    assert t.orderStatus.status == "Submitted"
    assert t.orderStatus.remaining == 50.0
    done = await ib.reqCompletedOrdersAsync(apiOnly=False)
    assert len(done) == 1
    assert done[0].orderStatus.status == "Filled"
    assert done[0].order.orderRef == "momentum"
    assert done[0].order.filledQuantity == 10.0
    assert done[0].contract.conId == 272093


async def test_contract_details_and_qualify(ib: IB) -> None:
    ib.RaiseRequestErrors = False  # unknown contract -> None instead of RequestError
    aapl, es, opt, unknown = await ib.qualifyContractsAsync(
        Stock("AAPL", "SMART", "USD"),
        Future("ES", "202612", "CME"),
        Option("AAPL", "20261218", 200, "C", "SMART"),
        Stock("NOPE", "SMART", "USD"),
    )
    assert isinstance(aapl, Contract)
    assert aapl.conId == 265598
    assert aapl.primaryExchange == "NASDAQ"
    assert isinstance(es, Contract)
    assert es.conId == 495512563
    assert es.multiplier == "50"
    assert isinstance(opt, Contract)
    assert opt.conId == 712345678
    assert unknown is None
    details = await ib.reqContractDetailsAsync(Contract(conId=495512563))
    assert details[0].longName == "E-mini S&P 500"
    assert details[0].minTick == 0.25
    ib.RaiseRequestErrors = True
    with pytest.raises(RequestError, match="200"):
        await ib.reqContractDetailsAsync(Stock("NOPE", "SMART", "USD"))


async def test_snapshot_tickers(ib: IB) -> None:
    t_aapl, t_es = await ib.reqTickersAsync(Contract(conId=265598), Contract(conId=495512563))
    assert (t_aapl.bid, t_aapl.ask, t_aapl.last) == (151.0, 151.02, 151.01)
    assert t_aapl.close == 150.0
    assert t_aapl.volume == 120000
    assert t_aapl.marketDataType == 1
    assert (t_es.bid, t_es.ask) == (5010.0, 5010.25)


async def test_current_time(ib: IB) -> None:
    now = await ib.reqCurrentTimeAsync()
    assert abs((now - dt.datetime.now(dt.UTC)).total_seconds()) < 5


@pytest.mark.parametrize("accounts", [("DU1234567",), ("DU1111111", "DU2222222")])
async def test_full_sweep_for_one_and_two_accounts(
    accounts: tuple[str, ...], sim_factory: Any, ib_factory: Any
) -> None:
    from backend.ib.simulator.examples import basic_scenario

    sim = await sim_factory(basic_scenario(accounts))
    ib = await ib_factory.connect(sim, client_id=1)
    assert ib.managedAccounts() == list(accounts)
    positions = await ib.reqPositionsAsync()
    assert {p.account for p in positions} == set(accounts)
    for acct in accounts:
        await ib.reqAccountUpdatesAsync(acct)
    assert {i.account for i in ib.portfolio()} == set(accounts)
    assert all(i.marketPrice > 0 for i in ib.portfolio())
    fills = ib.fills()
    assert {f.execution.acctNumber for f in fills} == set(accounts)
    assert all(f.commissionReport.commission > 0 for f in fills)
    assert [t.order.orderId for t in ib.openTrades()] == [21]
    done = await ib.reqCompletedOrdersAsync(apiOnly=False)
    assert [t.orderStatus.status for t in done] == ["Filled"]
    (ticker,) = await ib.reqTickersAsync(Contract(conId=712345678))
    assert (ticker.bid, ticker.ask) == (5.0, 5.2)
    (details,) = await ib.reqContractDetailsAsync(Contract(conId=712345678))
    assert details.contract is not None
    assert (details.contract.strike, details.contract.right) == (200.0, "C")


@pytest.mark.parametrize("server_version", [170, 176, 177, 178])
async def test_older_server_versions_decode_cleanly(
    server_version: int, ib_factory: Any
) -> None:
    from backend.ib.simulator.examples import basic_scenario

    async with GatewaySimulator(basic_scenario(), server_version=server_version) as sim:
        ib = await ib_factory.connect(sim, client_id=1)
        try:
            assert ib.client.serverVersion() == server_version
            assert len(ib.fills()) == 4
            assert [t.order.orderRef for t in ib.openTrades()] == ["momentum"]
            done = await ib.reqCompletedOrdersAsync(apiOnly=False)
            assert done[0].order.filledQuantity == 10.0
            trade = ib.placeOrder(Contract(conId=265598, exchange="SMART"), MarketOrder("BUY", 3))
            async with asyncio.timeout(5):
                while not (trade.isDone() and trade.fills):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            assert trade.fills[0].execution.shares == 3.0
        finally:
            ib.disconnect()
