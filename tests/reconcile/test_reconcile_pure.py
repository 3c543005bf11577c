"""The pure reconciliation compare (backend.core.reconcile): no I/O, real domain objects."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ib_async import Contract
from ib_async import Position as IBPosition

from backend.core.broker import BrokerPosition
from backend.core.model import RESIDUAL, UNATTRIBUTED, Fill, Instrument, PositionKey, Side
from backend.core.position import fold
from backend.core.reconcile import (
    FLEX_HINT,
    Break,
    BreakDetail,
    BreakKind,
    StrategyHolding,
    Tolerances,
    con_ids_needing_quote,
    gap_break,
    price_rows,
    quote_requests,
    reconcile,
)
from backend.errors import InvalidFieldError
from backend.ib.translate import broker_position

ACCT = "DU111"
ACCT2 = "DU222"
AAPL = Instrument(con_id=265598, symbol="AAPL")
MSFT = Instrument(con_id=272093, symbol="MSFT")
ES = Instrument(con_id=495512563, symbol="ES", sec_type="FUT", multiplier=50.0,
                expiry="20261218")
OPT = Instrument(con_id=700000001, symbol="AAPL", sec_type="OPT", multiplier=100.0,
                 expiry="20261218", strike=200.0, right="C")
T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)


def hold(strategy: str, inst: Instrument, qty: float, avg: float = math.nan,
         realized: float = 0.0, account: str = ACCT) -> StrategyHolding:
    return StrategyHolding(account=account, strategy=strategy, instrument=inst, qty=qty,
                           avg_cost=avg, realized_pnl=realized)


def broker(inst: Instrument, qty: float, avg: float = math.nan, account: str = ACCT,
           market_price: float = math.nan) -> BrokerPosition:
    return BrokerPosition(account=account, instrument=inst, qty=qty, avg_cost=avg,
                          market_price=market_price)


def fill(n: int, strategy: str, inst: Instrument, side: Side, qty: float, price: float,
         account: str = ACCT) -> Fill:
    return Fill(exec_id=f"0000e215.{n:08x}.01.01", account=account, strategy=strategy,
                instrument=inst, side=side, qty=qty, price=price,
                time=T0 + timedelta(seconds=n))


def kinds(breaks: Iterable[Break]) -> list[BreakKind]:
    return [b.kind for b in breaks]


# ---------------------------------------------------------------------------- opposite sides


def test_opposite_sides_net_and_reconcile_clean() -> None:
    rows = [hold("alpha", AAPL, 100, 10.0, realized=5.0), hold("beta", AAPL, -40, 12.0)]
    result = reconcile(rows, [broker(AAPL, 60, 10.0)])
    (entry,) = result.entries
    assert result.clean
    assert entry.strategy_qty == 60
    assert entry.residual is None
    # The net is long: only the long row determines the blended average.
    assert entry.blended_avg_cost == 10.0
    assert entry.strategy_rows == tuple(rows)
    assert entry.strategy_rows[0] is rows[0]


def test_opposite_sides_net_short() -> None:
    rows = [hold("alpha", AAPL, 30, 10.0), hold("beta", AAPL, -100, 12.0),
            hold("gamma", AAPL, -20, 13.0)]
    result = reconcile(rows, [broker(AAPL, -90, 12.2)])
    (entry,) = result.entries
    assert entry.strategy_qty == -90
    assert entry.blended_avg_cost == pytest.approx((100 * 12.0 + 20 * 13.0) / 120)
    (brk,) = result.breaks  # 12.2 vs 12.1667: drift beyond the default relative tolerance
    assert brk.kind is BreakKind.AVG_COST_DRIFT
    assert brk.detail is BreakDetail.NETTED
    assert brk.netted
    # Netted keys can be exempted: IB's average is path dependent there.
    relaxed = reconcile(rows, [broker(AAPL, -90, 12.2)],
                        Tolerances(check_netted_avg_cost=False))
    assert relaxed.clean


def test_blended_average_matches_an_account_level_fold() -> None:
    """The definition against IB's own rule: fold all fills of the account as one position."""
    fills = [
        fill(1, "alpha", AAPL, Side.BUY, 100, 10.0),
        fill(2, "alpha", AAPL, Side.BUY, 50, 11.5),
        fill(3, "beta", AAPL, Side.SELL, 40, 12.0),  # reduces the account: average unchanged
        fill(4, "beta", AAPL, Side.SELL, 10, 12.5),
    ]
    per_strategy = [fold([f for f in fills if f.strategy == s]) for s in ("alpha", "beta")]
    account_fills = [Fill(exec_id=f.exec_id, account=f.account, strategy="account",
                          instrument=f.instrument, side=f.side, qty=f.qty, price=f.price,
                          time=f.time) for f in fills]
    ib_view = fold(account_fills)
    result = reconcile(per_strategy, [broker(AAPL, ib_view.qty, ib_view.avg_cost)])
    assert ib_view.qty == 100
    assert result.entries[0].blended_avg_cost == pytest.approx(ib_view.avg_cost)
    assert result.clean


def account_fold(fills: list[Fill]) -> tuple[float, float]:
    """IB's view: every fill of the account folded as one position (qty, average)."""
    pos = fold([Fill(exec_id=f.exec_id, account=f.account, strategy="account",
                     instrument=f.instrument, side=f.side, qty=f.qty, price=f.price,
                     time=f.time) for f in fills])
    return pos.qty, pos.avg_cost


def test_same_side_strategies_drift_is_labelled_shared_not_a_plain_drift() -> None:
    """Two strategies long the same stock; one trims. IB's average does not move on the trim,
    the blend re-weights: the gap is how the fills interleaved, not a wrong book."""
    fills = [fill(1, "alpha", AAPL, Side.BUY, 100, 10.0),
             fill(2, "beta", AAPL, Side.BUY, 100, 20.0),
             fill(3, "alpha", AAPL, Side.SELL, 50, 12.0)]
    per_strategy = [fold([f for f in fills if f.strategy == s]) for s in ("alpha", "beta")]
    qty, avg = account_fold(fills)
    assert (qty, avg) == (150, 15.0)
    result = reconcile(per_strategy, [broker(AAPL, qty, avg)])
    (brk,) = result.breaks
    assert brk.kind is BreakKind.AVG_COST_DRIFT
    assert brk.blended_avg_cost == pytest.approx(50 / 3)
    assert brk.detail is BreakDetail.SHARED
    assert brk.shared
    assert not brk.netted
    assert brk.to_dict()["shared"] is True
    assert reconcile(per_strategy, [broker(AAPL, qty, avg)],
                     Tolerances(check_shared_avg_cost=False)).clean
    # The opposite-side switch alone does not hide a same-side (shared) key.
    assert not reconcile(per_strategy, [broker(AAPL, qty, avg)],
                         Tolerances(check_netted_avg_cost=False)).clean


def test_a_flat_strategy_row_makes_the_key_shared() -> None:
    """beta traded in and out while alpha held: IB's average still carries beta's fills."""
    fills = [fill(1, "alpha", AAPL, Side.BUY, 100, 10.0),
             fill(2, "beta", AAPL, Side.BUY, 100, 20.0),
             fill(3, "beta", AAPL, Side.SELL, 100, 21.0)]
    per_strategy = [fold([f for f in fills if f.strategy == s]) for s in ("alpha", "beta")]
    qty, avg = account_fold(fills)
    result = reconcile(per_strategy, [broker(AAPL, qty, avg)])
    (brk,) = result.breaks
    assert brk.detail is BreakDetail.SHARED
    assert brk.shared


def test_single_strategy_drift_is_plain() -> None:
    result = reconcile([hold("alpha", AAPL, 10, 10.0)], [broker(AAPL, 10, 11.0)],
                       Tolerances(check_shared_avg_cost=False, check_netted_avg_cost=False))
    (brk,) = result.breaks
    assert brk.kind is BreakKind.AVG_COST_DRIFT
    assert brk.detail is BreakDetail.NONE
    assert not brk.shared


def test_opposite_sides_are_shared_and_the_shared_switch_covers_them() -> None:
    rows = [hold("alpha", AAPL, 30, 10.0), hold("beta", AAPL, -100, 12.0)]
    result = reconcile(rows, [broker(AAPL, -70, 12.5)])
    (brk,) = result.breaks
    assert brk.detail is BreakDetail.NETTED
    assert brk.netted and brk.shared
    assert reconcile(rows, [broker(AAPL, -70, 12.5)],
                     Tolerances(check_shared_avg_cost=False)).clean


def test_qty_mismatch_on_opposite_side() -> None:
    result = reconcile([hold("alpha", AAPL, 50, 10.0)], [broker(AAPL, -50, 10.0)])
    (brk,) = result.breaks
    assert brk.kind is BreakKind.QTY_MISMATCH
    assert brk.detail is BreakDetail.OPPOSITE_SIDE
    assert result.residuals[0].qty == -100


def test_offsetting_strategies_with_ib_flat_are_clean() -> None:
    rows = [hold("alpha", AAPL, 100, 10.0), hold("beta", AAPL, -100, 11.0)]
    result = reconcile(rows, [])
    assert result.clean
    assert result.rows == tuple(rows)


# ---------------------------------------------------------------------------- residual rounding


def test_float_dust_never_becomes_a_residual_row() -> None:
    rows = [hold("a", AAPL, 0.1, 10.0), hold("b", AAPL, 0.2, 10.0)]
    for broker_qty in (0.3, 0.3 + 1e-12, 0.3 - 1e-12):
        result = reconcile(rows, [broker(AAPL, broker_qty, 10.0)])
        assert result.clean, broker_qty
        assert result.residuals == ()
        assert abs(result.entries[0].residual_qty) < 1e-9  # kept exactly, just not a row


def test_fractional_share_residual_is_a_row() -> None:
    result = reconcile([hold("a", AAPL, 10.25, 10.0)], [broker(AAPL, 10.5, 10.0)])
    (residual,) = result.residuals
    assert residual.strategy == RESIDUAL
    assert residual.qty == pytest.approx(0.25)
    assert math.isnan(residual.avg_cost)  # part of a position: its own cost is unknown
    assert math.isnan(residual.realized_pnl)
    assert kinds(result.breaks) == [BreakKind.QTY_MISMATCH]


def test_tolerance_per_sec_type() -> None:
    coin = Instrument(con_id=479624278, symbol="BTC", sec_type="CRYPTO")
    tol = Tolerances(qty_by_sec_type={"CRYPTO": 1e-4})
    ok = reconcile([hold("a", coin, 0.5, 90000.0)], [broker(coin, 0.50005, 90000.0)], tol)
    assert ok.clean
    off = reconcile([hold("a", coin, 0.5, 90000.0)], [broker(coin, 0.5002, 90000.0)], tol)
    assert kinds(off.breaks) == [BreakKind.QTY_MISMATCH]
    # Stocks keep the default (1e-6): the same 5e-5 difference is a break there.
    stk = reconcile([hold("a", AAPL, 0.5, 10.0)], [broker(AAPL, 0.50005, 10.0)], tol)
    assert kinds(stk.breaks) == [BreakKind.QTY_MISMATCH]


def test_tolerances_refuse_negative_and_floor_at_model_tolerance() -> None:
    with pytest.raises(InvalidFieldError, match="qty_default"):
        Tolerances(qty_default=-1.0)
    with pytest.raises(InvalidFieldError, match="avg_cost_rel"):
        Tolerances(avg_cost_rel=math.nan)
    assert Tolerances(qty_default=0.0).qty_default == 1e-9


# ---------------------------------------------------------------------------- broker / arctic only


def test_rows_each_below_tolerance_that_add_up_beyond_it_are_held() -> None:
    """Each row is dust for the sec_type, their sum is not: the strategies hold it."""
    coin = Instrument(con_id=479624278, symbol="BTC", sec_type="CRYPTO")
    tol = Tolerances(qty_by_sec_type={"CRYPTO": 1e-4})
    rows = [hold(s, coin, 6e-5, 90000.0) for s in ("a", "b", "c")]
    flat = reconcile(rows, [broker(coin, 0.0)], tol)
    (brk,) = flat.breaks
    assert brk.kind is BreakKind.ARCTIC_ONLY  # not BROKER_ONLY "IB holds 0"
    assert brk.detail is BreakDetail.BROKER_ALREADY_FLAT
    more = reconcile(rows, [broker(coin, 5e-4, 90000.0)], tol)
    (brk,) = more.breaks
    assert brk.kind is BreakKind.QTY_MISMATCH  # the strategies hold 1.8e-4 of it
    (residual,) = more.residuals
    assert residual.qty == pytest.approx(3.2e-4)
    assert math.isnan(residual.avg_cost)  # not the whole broker position: cost unknown




def test_broker_only() -> None:
    result = reconcile([], [broker(MSFT, 25, 400.0, market_price=410.0)])
    (entry,) = result.entries
    (brk,) = entry.breaks
    assert brk.kind is BreakKind.BROKER_ONLY
    assert entry.residual is not None
    assert entry.residual.qty == 25
    assert entry.residual.avg_cost == 400.0  # the whole broker position: its cost is IB's
    assert con_ids_needing_quote(result) == ()  # IB prices what it holds
    (priced,) = price_rows(result)
    assert priced.unrealized_pnl == pytest.approx(250.0)
    assert priced.mark_source == "broker"


def test_broker_only_next_to_a_flat_strategy_row() -> None:
    flat = hold("alpha", MSFT, 0.0, realized=12.5)
    result = reconcile([flat], [broker(MSFT, 10, 400.0)])
    assert kinds(result.breaks) == [BreakKind.BROKER_ONLY]
    assert result.rows[0] is flat


@pytest.mark.parametrize("ib_row", [True, False], ids=["zero-row", "absent"])
def test_arctic_only(ib_row: bool) -> None:
    rows = [hold("alpha", AAPL, 100, 10.0, realized=42.0), hold("beta", AAPL, 20, 11.0)]
    brokers = [broker(AAPL, 0.0)] if ib_row else []
    result = reconcile(rows, brokers)
    (entry,) = result.entries
    (brk,) = entry.breaks
    assert brk.kind is BreakKind.ARCTIC_ONLY
    assert brk.detail is BreakDetail.BROKER_ALREADY_FLAT
    assert brk.broker_present is ib_row
    assert entry.residual is not None
    assert entry.residual.qty == -120
    assert entry.strategy_rows[0].realized_pnl == 42.0  # as journaled, untouched
    # No exit price is invented: without a quote the PnL is unknown, and says so.
    assert quote_requests(result) == (AAPL,)
    unpriced = price_rows(result)
    assert [p.no_quote for p in unpriced] == [True, True, True]
    assert all(math.isnan(p.unrealized_pnl) for p in unpriced)
    priced = price_rows(result, {AAPL.con_id: 12.0})
    assert [p.unrealized_pnl for p in priced[:2]] == [200.0, 20.0]
    assert all(not p.no_quote and p.mark_source == "quote" for p in priced)
    assert math.isnan(priced[2].unrealized_pnl)  # the residual has no average of its own


def test_nan_quote_is_no_quote() -> None:
    result = reconcile([hold("alpha", AAPL, 5, 10.0)], [])
    (p, _residual) = price_rows(result, {AAPL.con_id: math.nan})
    assert p.no_quote
    assert math.isnan(p.mark_price)


def test_strategy_only_key_takes_a_description_independent_of_input_order() -> None:
    """Rows that describe the same con_id differently (a stale sec_type): the tolerance and
    the report must not depend on which row came first."""
    coin = Instrument(con_id=479624278, symbol="BTC", sec_type="CRYPTO")
    stale = Instrument(con_id=479624278, symbol="BTC", sec_type="STK")
    rows = [hold("b", stale, 0.00005, 90000.0), hold("a", coin, 0.00005, 90000.0)]
    tol = Tolerances(qty_by_sec_type={"CRYPTO": 1e-3})
    forward = reconcile(rows, [], tol)
    backward = reconcile(rows[::-1], [], tol)
    assert forward.entries[0].instrument == backward.entries[0].instrument == coin
    assert forward.clean and backward.clean


# ---------------------------------------------------------------------------- multipliers


def test_avg_cost_with_multipliers_from_ib_average_cost() -> None:
    """IB's averageCost is price x multiplier; the adapter divides before BrokerPosition."""
    es_fills = [fill(1, "trend", ES, Side.BUY, 2, 5000.0), fill(2, "trend", ES, Side.BUY, 1,
                                                                5030.0)]
    opt_fills = [fill(3, "vol", OPT, Side.SELL, 5, 3.2)]
    positions = [fold(es_fills), fold(opt_fills)]

    def ib_position(inst: Instrument, qty: float, average_cost: float) -> IBPosition:
        contract = Contract(conId=inst.con_id, symbol=inst.symbol, secType=inst.sec_type,
                            multiplier=f"{inst.multiplier:g}", currency="USD",
                            lastTradeDateOrContractMonth=inst.expiry, strike=inst.strike,
                            right=inst.right)
        return IBPosition(account=ACCT, contract=contract, position=qty, avgCost=average_cost)

    es_ib_cost = 5010.0 * 50  # what IB sends for 3 ES at a 5010 average: 250500
    opt_ib_cost = 3.2 * 100
    converted = [broker_position(ib_position(ES, 3, es_ib_cost)),
                 broker_position(ib_position(OPT, -5, opt_ib_cost))]
    assert converted[0].avg_cost == pytest.approx(5010.0)
    assert converted[1].avg_cost == pytest.approx(3.2)
    assert reconcile(positions, converted).clean

    # Feeding IB's raw figure (no division) is exactly the drift the check must catch.
    raw = [BrokerPosition(account=ACCT, instrument=ES, qty=3, avg_cost=es_ib_cost),
           BrokerPosition(account=ACCT, instrument=OPT, qty=-5, avg_cost=opt_ib_cost)]
    drift = reconcile(positions, raw)
    assert kinds(drift.breaks) == [BreakKind.AVG_COST_DRIFT] * 2
    assert drift.breaks[0].blended_avg_cost == pytest.approx(5010.0)

    # Unrealized PnL is in money: (mark - avg) x qty x multiplier.
    priced = price_rows(reconcile(positions, converted), {ES.con_id: 5020.0, OPT.con_id: 3.0})
    assert [p.unrealized_pnl for p in priced] == pytest.approx([10 * 3 * 50, 0.2 * 5 * 100])


def test_avg_cost_within_tolerance_is_clean() -> None:
    result = reconcile([hold("a", ES, 2, 5000.0)], [broker(ES, 2, 5000.0 * (1 + 5e-5))])
    assert result.clean


# ---------------------------------------------------------------------------- zero-qty rows


def test_zero_qty_broker_rows() -> None:
    flat = hold("alpha", MSFT, 0.0, realized=-3.0)
    result = reconcile([flat], [broker(MSFT, 0.0), broker(AAPL, 0.0)])
    assert result.clean
    assert [e.con_id for e in result.entries] == sorted([MSFT.con_id, AAPL.con_id])
    assert result.rows == (flat,)
    assert con_ids_needing_quote(result) == ()
    assert all(p.unrealized_pnl == 0.0 and not p.no_quote for p in price_rows(result))


# ---------------------------------------------------------------------------- accounts


def test_several_accounts_are_independent() -> None:
    rows = [hold("alpha", AAPL, 100, 10.0), hold("alpha", AAPL, 50, 10.0, account=ACCT2)]
    brokers = [broker(AAPL, 100, 10.0), broker(AAPL, 80, 10.0, account=ACCT2),
               broker(MSFT, 5, 400.0, account=ACCT2)]
    result = reconcile(rows, brokers)
    assert result.accounts == (ACCT, ACCT2)
    assert result.for_account(ACCT).clean
    second = result.for_account(ACCT2)
    assert sorted(kinds(second.breaks)) == [BreakKind.BROKER_ONLY, BreakKind.QTY_MISMATCH]
    assert {r.account for r in second.rows} == {ACCT2}
    assert sorted(r.qty for r in second.residuals) == [5, 30]


# ---------------------------------------------------------------------------- unattributed


def test_unattributed_open_row_is_a_break_and_counts_toward_the_sum() -> None:
    rows = [hold("alpha", AAPL, 60, 10.0), hold(UNATTRIBUTED, AAPL, 40, 10.0),
            hold(UNATTRIBUTED, MSFT, 0.0, realized=7.0)]
    result = reconcile(rows, [broker(AAPL, 100, 10.0)])
    (brk,) = result.breaks
    assert brk.kind is BreakKind.UNATTRIBUTED
    assert brk.strategy == UNATTRIBUTED
    assert result.residuals == ()  # the unattributed fills are real: no double count


def test_custom_unattributed_name() -> None:
    result = reconcile([hold("orphans", AAPL, 1, 10.0)], [broker(AAPL, 1, 10.0)],
                       unattributed_strategy="orphans")
    assert kinds(result.breaks) == [BreakKind.UNATTRIBUTED]


# ---------------------------------------------------------------------------- input checks


def test_positions_are_accepted_as_input() -> None:
    pos = fold([fill(1, "alpha", AAPL, Side.BUY, 10, 10.0)])
    assert pos.key == PositionKey(ACCT, "alpha", AAPL.con_id)
    result = reconcile([pos], [broker(AAPL, 10, 10.0)])
    assert result.clean
    assert result.rows == (StrategyHolding.from_position(pos),)


def test_refuses_reserved_and_duplicate_rows() -> None:
    with pytest.raises(InvalidFieldError, match="strategy='_residual'"):
        reconcile([hold(RESIDUAL, AAPL, 1, 10.0)], [])
    with pytest.raises(InvalidFieldError, match="duplicate holding"):
        reconcile([hold("a", AAPL, 1, 10.0), hold("a", AAPL, 2, 10.0)], [])
    with pytest.raises(InvalidFieldError, match="duplicate"):
        reconcile([], [broker(AAPL, 1, 10.0), broker(AAPL, 2, 10.0)])
    with pytest.raises(InvalidFieldError, match="qty"):
        hold("a", AAPL, math.inf)
    with pytest.raises(InvalidFieldError, match=r"broker_positions\.qty"):
        reconcile([], [broker(AAPL, math.nan, 10.0)])


# ---------------------------------------------------------------------------- report + gaps


def test_to_dict_is_strict_json() -> None:
    result = reconcile([hold("alpha", AAPL, 100, 10.0), hold("beta", MSFT, 3, 400.0)],
                       [broker(AAPL, 90, 10.0), broker(ES, 1, 5000.0)])
    gap = gap_break(ACCT, T0 - timedelta(days=2), T0)
    assert gap is not None
    result = result.with_breaks(gap)
    text = json.dumps(result.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["clean"] is False
    assert back["break_counts"] == {"HISTORY_GAP": 1, "QTY_MISMATCH": 1, "ARCTIC_ONLY": 1,
                                    "BROKER_ONLY": 1}
    assert [e["con_id"] for e in back["entries"]] == sorted([AAPL.con_id, MSFT.con_id,
                                                            ES.con_id])
    assert back["entries"][0]["residual_qty"] == -10


def test_gap_break() -> None:
    window = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)  # the gateway's midnight in UTC
    brk = gap_break(ACCT, window - timedelta(hours=9), window)
    assert brk is not None
    assert brk.kind is BreakKind.HISTORY_GAP
    assert brk.hint == FLEX_HINT
    assert "Flex" in brk.hint
    assert gap_break(ACCT, window + timedelta(minutes=1), window) is None
    assert gap_break(ACCT, window, window) is None
    assert gap_break(ACCT, None, window) is None
    with pytest.raises(InvalidFieldError, match="covered_until"):
        gap_break(ACCT, datetime(2026, 11, 19), window)  # naive on purpose


def test_gap_break_with_a_listening_runner() -> None:
    window = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)
    covered = window - timedelta(minutes=2)  # the last run, before the gateway's midnight
    # Listening since before the last run: live fills cover the time up to midnight.
    assert gap_break(ACCT, covered, window, covered - timedelta(hours=3)) is None
    assert gap_break(ACCT, covered, window, covered) is None
    # The runner came up after the coverage ended: the time in between is a gap.
    late = gap_break(ACCT, covered, window, covered + timedelta(minutes=1))
    assert late is not None
    assert "listened since" in late.message
    # Listening that began after midnight adds nothing to the gateway's own window.
    assert gap_break(ACCT, covered, window, window + timedelta(hours=1)) is not None
    with pytest.raises(InvalidFieldError, match="listening_since"):
        gap_break(ACCT, covered, window, datetime(2026, 11, 19))  # naive on purpose


# ---------------------------------------------------------------------------- property

INSTRUMENTS = [AAPL, MSFT, ES, OPT]
qty_st = st.one_of(st.integers(-500, 500).map(float),
                   st.floats(-500, 500, allow_nan=False).map(lambda x: round(x, 4)))
holding_st = st.tuples(st.sampled_from([ACCT, ACCT2]), st.sampled_from(["a", "b", "c",
                                                                         UNATTRIBUTED]),
                       st.sampled_from(INSTRUMENTS), qty_st,
                       st.floats(1, 1000, allow_nan=False))
broker_st = st.tuples(st.sampled_from([ACCT, ACCT2]), st.sampled_from(INSTRUMENTS), qty_st,
                      st.one_of(st.just(math.nan), st.floats(1, 1000, allow_nan=False)))


@settings(max_examples=300, deadline=None)
@given(holdings=st.lists(holding_st, max_size=30), brokers=st.lists(broker_st, max_size=10))
def test_property_sum_plus_residual_is_broker(
    holdings: list[tuple[str, str, Instrument, float, float]],
    brokers: list[tuple[str, Instrument, float, float]],
) -> None:
    rows, broker_rows = build_inputs(holdings, brokers)
    bps = {(b.account, b.con_id): b for b in broker_rows}
    tol = Tolerances()
    result = reconcile(rows, broker_rows, tol)

    out_rows = [r for r in result.rows if r.strategy != RESIDUAL]
    # Passed through unchanged: the very same objects, each once.
    assert len(out_rows) == len(rows)
    assert {id(r) for r in out_rows} == {id(r) for r in rows}
    seen = set()
    for e in result.entries:
        seen.add((e.account, e.con_id))
        broker_qty = bps[(e.account, e.con_id)].qty if (e.account, e.con_id) in bps else 0.0
        residual = e.residual.qty if e.residual is not None else 0.0
        total = math.fsum(r.qty for r in e.strategy_rows) + residual
        assert abs(total - broker_qty) <= tol.qty_for(e.instrument.sec_type)
        assert e.residual is None or abs(e.residual.qty) > tol.qty_for(e.instrument.sec_type)
        qty_breaks = [b for b in e.breaks if b.kind in (
            BreakKind.BROKER_ONLY, BreakKind.ARCTIC_ONLY, BreakKind.QTY_MISMATCH)]
        assert len(qty_breaks) == (1 if e.residual is not None else 0)
    assert seen == {(r.account, r.con_id) for r in rows} | set(bps)
    json.dumps(result.to_dict(), allow_nan=False)


def build_inputs(holdings: list[tuple[str, str, Instrument, float, float]],
                 brokers: list[tuple[str, Instrument, float, float]],
                 ) -> tuple[list[StrategyHolding], list[BrokerPosition]]:
    rows: dict[tuple[str, str, int], StrategyHolding] = {}
    for account, strategy, inst, qty, avg in holdings:
        rows[(account, strategy, inst.con_id)] = hold(strategy, inst, qty,
                                                      avg if qty else math.nan, account=account)
    bps: dict[tuple[str, int], BrokerPosition] = {}
    for account, inst, qty, avg in brokers:
        bps[(account, inst.con_id)] = broker(inst, qty, avg, account=account)
    return list(rows.values()), list(bps.values())


def canonical(result_dict: dict[str, object]) -> str:
    """The report with each key's strategy rows sorted (they come out in input order)."""
    entries = result_dict["entries"]
    assert isinstance(entries, list)
    for e in entries:
        e["strategies"] = sorted(e["strategies"], key=lambda r: r["strategy"])
    return json.dumps(result_dict, allow_nan=False, sort_keys=True)


# Same-side rows with arbitrary averages: the blend's float sum is where order could leak in.
same_side_st = st.tuples(st.sampled_from([ACCT, ACCT2]),
                         st.sampled_from(["a", "b", "c", "d", "e", UNATTRIBUTED]),
                         st.sampled_from(INSTRUMENTS),
                         st.floats(0.0001, 500, allow_nan=False).map(lambda x: round(x, 4)),
                         st.floats(0.01, 1000, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(holdings=st.lists(st.one_of(holding_st, same_side_st), max_size=30),
       brokers=st.lists(broker_st, max_size=10), data=st.data())
def test_property_order_of_inputs_does_not_matter(
    holdings: list[tuple[str, str, Instrument, float, float]],
    brokers: list[tuple[str, Instrument, float, float]],
    data: st.DataObject,
) -> None:
    rows, bps = build_inputs(holdings, brokers)
    tol = Tolerances(qty_by_sec_type={"FUT": 0.5})
    expected = canonical(reconcile(rows, bps, tol).to_dict())
    shuffled_rows = data.draw(st.permutations(rows))
    shuffled_brokers = data.draw(st.permutations(bps))
    assert canonical(reconcile(shuffled_rows, shuffled_brokers, tol).to_dict()) == expected


@settings(max_examples=200, deadline=None)
@given(holdings=st.lists(st.one_of(holding_st, same_side_st), max_size=30),
       brokers=st.lists(broker_st, max_size=10))
def test_property_strategy_rows_come_out_as_they_went_in(
    holdings: list[tuple[str, str, Instrument, float, float]],
    brokers: list[tuple[str, Instrument, float, float]],
) -> None:
    rows, bps = build_inputs(holdings, brokers)
    before = [(r.account, r.strategy, r.instrument, r.qty, r.avg_cost, r.realized_pnl)
              for r in rows]
    result = reconcile(rows, bps)
    after = [(r.account, r.strategy, r.instrument, r.qty, r.avg_cost, r.realized_pnl)
             for r in rows]
    # NaN != NaN: compare through repr so an unknown average stays an unknown average.
    assert repr(after) == repr(before)
    for e in result.entries:
        mine = [r for r in rows if (r.account, r.con_id) == (e.account, e.con_id)]
        assert list(e.strategy_rows) == mine  # the same objects, in input order
        assert all(a is b for a, b in zip(e.strategy_rows, mine, strict=True))
        # No residual or break ever names a real strategy's row as changed.
        assert all(r.strategy == RESIDUAL for r in e.rows[len(mine):])


# ------------------------------------------------------------------ commissions in IB's average

def with_fees(row: StrategyHolding, commissions: float) -> StrategyHolding:
    return StrategyHolding(account=row.account, strategy=row.strategy, instrument=row.instrument,
                           qty=row.qty, avg_cost=row.avg_cost, realized_pnl=row.realized_pnl,
                           commissions=commissions)


def drift(rows: list[StrategyHolding], ib: BrokerPosition) -> list[Break]:
    return [b for b in reconcile(rows, [ib]).breaks if b.kind is BreakKind.AVG_COST_DRIFT]


def test_ib_average_with_the_opening_commission_is_no_drift() -> None:
    # One call bought at 3.20 with 0.65 commission: IB's averageCost 320.65 -> 3.2065.
    long = hold("vol", OPT, 1.0, 3.20)
    assert drift([with_fees(long, 0.65)], broker(OPT, 1.0, 3.2065)) == []
    # The commission not known yet: nothing is allowed, the drift shows.
    assert len(drift([long], broker(OPT, 1.0, 3.2065))) == 1
    # More than the commissions explain is a drift, and says so.
    [brk] = drift([with_fees(long, 0.65)], broker(OPT, 1.0, 3.21))
    assert "beyond the commissions' share 0.0065" in brk.message


def test_commissions_move_a_short_average_down_only() -> None:
    short = with_fees(hold("vol", OPT, -2.0, 3.20), 1.30)  # proceeds less 0.0065 per unit
    assert drift([short], broker(OPT, -2.0, 3.1935)) == []
    assert len(drift([short], broker(OPT, -2.0, 3.2065))) == 1  # the wrong way: a drift
    long = with_fees(hold("trend", AAPL, 10.0, 20.0), 1.0)  # 0.10 per share
    assert drift([long], broker(AAPL, 10.0, 20.10)) == []
    assert len(drift([long], broker(AAPL, 10.0, 19.90))) == 1


def test_commission_allowance_of_a_blend_counts_the_same_side_rows() -> None:
    # Two longs (20 @ 10 with 2.0 paid, 20 @ 10 with 0.0) and a short with a large fee: the
    # allowance is (2.0 + 0.0) / 40 = 0.05; the short's fee does not widen it.
    rows = [with_fees(hold("a", AAPL, 20.0, 10.0), 2.0),
            with_fees(hold("b", AAPL, 20.0, 10.0), 0.0),
            with_fees(hold("c", AAPL, -10.0, 9.0), 50.0)]
    tol = Tolerances(check_netted_avg_cost=True)
    assert [b for b in reconcile(rows, [broker(AAPL, 30.0, 10.05)], tol).breaks
            if b.kind is BreakKind.AVG_COST_DRIFT] == []
    assert len([b for b in reconcile(rows, [broker(AAPL, 30.0, 10.06)], tol).breaks
                if b.kind is BreakKind.AVG_COST_DRIFT]) == 1


def test_commissions_must_be_a_number() -> None:
    with pytest.raises(InvalidFieldError, match="commissions"):
        with_fees(hold("a", AAPL, 1.0, 10.0), math.inf)
