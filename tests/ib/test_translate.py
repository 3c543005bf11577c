"""translate.py on real ib_async objects built directly (no connection needed)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from ib_async import CommissionReport as IBCommissionReport
from ib_async import Contract, Execution, PortfolioItem, Ticker
from ib_async import Fill as IBFill
from ib_async import Position as IBPosition

from backend.core.model import UNATTRIBUTED, Side
from backend.errors import InvalidFieldError
from backend.ib import translate

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def es_future() -> Contract:
    return Contract(conId=495512563, symbol="ES", secType="FUT", currency="USD",
                    multiplier="50", lastTradeDateOrContractMonth="20261218",
                    localSymbol="ESZ6", exchange="CME")


def spy_option() -> Contract:
    return Contract(conId=700001, symbol="SPY", secType="OPT", currency="USD",
                    multiplier="100", lastTradeDateOrContractMonth="20261218", strike=600.0,
                    right="C", primaryExchange="CBOE")


def ib_fill(contract: Contract, exec_id: str = "0000e215.656d0000.01.01", side: str = "BOT",
            shares: float = 2.0, price: float = 5000.25, order_ref: str = "",
            report: IBCommissionReport | None = None) -> IBFill:
    ex = Execution(execId=exec_id, time=T0, acctNumber="DU1", exchange="CME", side=side,
                   shares=shares, price=price, permId=77, clientId=3, orderId=12,
                   orderRef=order_ref)
    # A live fill's Fill.time is the packet arrival time: deliberately different here.
    return IBFill(contract, ex, report or IBCommissionReport(), datetime(2030, 1, 1, tzinfo=UTC))


def test_instrument_keeps_identity_and_multiplier() -> None:
    inst = translate.instrument(es_future())
    assert (inst.con_id, inst.sec_type, inst.multiplier, inst.expiry) == (
        495512563, "FUT", 50.0, "20261218")
    opt = translate.instrument(spy_option())
    assert (opt.multiplier, opt.strike, opt.right, opt.exchange) == (100.0, 600.0, "C", "CBOE")
    stk = translate.instrument(Contract(conId=1, symbol="AAPL", secType="STK", currency="USD"))
    assert stk.multiplier == 1.0


def test_missing_multiplier_of_a_derivative_is_refused_not_guessed() -> None:
    with pytest.raises(InvalidFieldError, match="multiplier"):
        translate.instrument(Contract(conId=2, symbol="ES", secType="FUT", multiplier=""))
    with pytest.raises(InvalidFieldError, match="multiplier"):
        translate.parse_multiplier("OPT", "abc")


def test_position_avg_cost_is_converted_to_price_units() -> None:
    row = IBPosition("DU1", es_future(), 3.0, 250_012.5)  # IB: price x 50
    pos = translate.broker_position(row)
    assert pos.avg_cost == pytest.approx(5000.25)
    assert (pos.account, pos.con_id, pos.qty) == ("DU1", 495512563, 3.0)
    assert math.isnan(pos.market_price)


def test_zero_position_row_is_kept_as_flat_with_unknown_average() -> None:
    pos = translate.broker_position(IBPosition("DU1", spy_option(), 0.0, 0.0))
    assert pos.qty == 0.0
    assert math.isnan(pos.avg_cost)


def test_portfolio_item_enriches_the_same_account_and_con_id_only() -> None:
    c = spy_option()
    item = PortfolioItem(c, -2.0, 4.5, -900.0, 510.0, 120.0, 0.0, "DU1")
    pos = translate.broker_position(IBPosition("DU1", c, -2.0, 510.0), item)
    assert (pos.market_price, pos.unrealized_pnl, pos.avg_cost) == (4.5, 120.0, 5.1)
    other_account = item._replace(account="DU2")
    with pytest.raises(InvalidFieldError, match="portfolio_item"):
        translate.broker_position(IBPosition("DU1", c, -2.0, 510.0), other_account)
    # Same symbol, other conId: never joined.
    other = Contract(conId=700002, symbol="SPY", secType="OPT", multiplier="100")
    with pytest.raises(InvalidFieldError, match="portfolio_item"):
        translate.broker_position(IBPosition("DU1", other, -2.0, 510.0), item)


def test_fill_uses_execution_time_and_order_ref() -> None:
    f = translate.fill(ib_fill(es_future(), order_ref="mean_rev"))
    assert f.time == T0
    assert (f.strategy, f.order_ref, f.side, f.qty, f.price) == (
        "mean_rev", "mean_rev", Side.BUY, 2.0, 5000.25)
    assert (f.account, f.perm_id, f.order_id, f.instrument.multiplier) == ("DU1", 77, 12, 50.0)
    assert translate.fill(ib_fill(es_future(), side="SLD")).strategy == UNATTRIBUTED
    assert translate.fill(ib_fill(es_future()), strategy="given").strategy == "given"


def test_commission_placeholder_is_unknown_not_zero() -> None:
    placeholder = ib_fill(es_future())
    assert not translate.commission_known(placeholder)
    assert translate.broker_execution(placeholder).commission is None
    report = IBCommissionReport(execId="0000e215.656d0000.01.01", commission=2.5,
                                currency="USD", realizedPNL=0.0)
    done = ib_fill(es_future(), report=report)
    assert translate.commission_known(done)
    got = translate.broker_execution(done).commission
    assert got is not None
    assert (got.commission, got.currency) == (2.5, "USD")
    assert math.isnan(got.realized_pnl)  # ib_async folds IB's "unset" into 0.0


def test_commission_unset_double_is_unknown() -> None:
    report = IBCommissionReport(execId="a.b.01.01", commission=1.7976931348623157e308,
                                currency="USD", realizedPNL=12.5)
    got = translate.commission(report)
    assert got is not None
    assert math.isnan(got.commission)
    assert got.realized_pnl == 12.5


def test_fill_message_shape() -> None:
    f = ib_fill(es_future())
    assert translate.fill_message(f) == {"type": "fill", "strategy": "", "trade": None,
                                         "fill": f}


def ticker(**values: float) -> Ticker:
    t = Ticker(contract=es_future())  # its __post_init__ resets every price: set them after
    for name, value in values.items():
        setattr(t, name, value)
    return t


def test_quote_price_prefers_last_inside_spread_then_mid_then_close() -> None:
    sizes = {"bidSize": 5.0, "askSize": 5.0}
    assert translate.quote_price(ticker(bid=10.0, ask=11.0, last=10.5, **sizes)) == 10.5
    assert translate.quote_price(ticker(bid=10.0, ask=11.0, last=12.0, **sizes)) == 10.5
    assert translate.quote_price(ticker(close=9.0)) == 9.0
    assert translate.quote_price(ticker(last=-1.0, close=9.5)) == 9.5  # -1: IB's "no price"
    assert math.isnan(translate.quote_price(ticker()))


def test_account_values_keep_every_currency() -> None:
    rows = [("NetLiquidation", "100", "USD"), ("CashBalance", "5", "USD"),
            ("CashBalance", "7", "EUR")]
    assert translate.account_values(rows) == {
        "NetLiquidation": "100", "CashBalance:USD": "5", "CashBalance:EUR": "7"}
