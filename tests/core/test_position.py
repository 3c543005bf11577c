"""Average-cost position maths on worked examples."""

from __future__ import annotations

import math

import pytest

from backend.core.position import fold

from .factories import FUTURE, OPTION, fill


def test_trading_technologies_average_cost_example() -> None:
    # TT's "understanding P&L calculations" worked example.
    fills = [fill(1, "BUY", 12, 100), fill(2, "BUY", 17, 99)]
    pos = fold(fills)
    assert pos.qty == 29
    assert pos.avg_cost == pytest.approx(99.41379310344828, rel=1e-15)
    assert pos.realized_pnl == 0

    fills += [fill(3, "SELL", 9, 101), fill(4, "SELL", 4, 105)]
    pos = fold(fills)
    assert pos.qty == 16
    assert pos.avg_cost == pytest.approx(99.41379310344828, rel=1e-15)
    assert pos.realized_pnl == pytest.approx(36.62068965517241, rel=1e-12)

    fills.append(fill(5, "BUY", 3, 103))
    pos = fold(fills)
    assert pos.qty == 19
    assert pos.avg_cost == pytest.approx(99.98003629764065, rel=1e-12)
    assert pos.realized_pnl == pytest.approx(36.62068965517241, rel=1e-12)


def test_long_then_oversell_flips_short_at_fill_price() -> None:
    pos = fold([fill(1, "BUY", 100, 10), fill(2, "SELL", 150, 12)])
    assert pos.qty == -50
    assert pos.avg_cost == 12
    assert pos.realized_pnl == pytest.approx(200.0)


def test_short_cover_to_flat_then_long_resets_average() -> None:
    fills = [fill(1, "SELL", 10, 50), fill(2, "BUY", 10, 45)]
    pos = fold(fills)
    assert pos.qty == 0 and pos.is_flat
    assert math.isnan(pos.avg_cost)
    assert pos.realized_pnl == pytest.approx(50.0)  # short 10 @50 covered @45
    pos = fold([*fills, fill(3, "BUY", 4, 70)])
    assert pos.qty == 4
    assert pos.avg_cost == 70  # not blended with the old short's 50
    assert pos.realized_pnl == pytest.approx(50.0)


def test_short_side_pnl_sign_and_partial_cover_keeps_average() -> None:
    pos = fold([fill(1, "SELL", 10, 100), fill(2, "SELL", 10, 110), fill(3, "BUY", 5, 90)])
    assert pos.qty == -15
    assert pos.avg_cost == pytest.approx(105.0)
    assert pos.realized_pnl == pytest.approx((105 - 90) * 5)


def test_future_multiplier_in_realized_and_unrealized() -> None:
    pos = fold([fill(1, "BUY", 2, 5000, instrument=FUTURE),
                fill(2, "SELL", 1, 5010.25, instrument=FUTURE)])
    assert pos.realized_pnl == pytest.approx(10.25 * 50)
    assert pos.unrealized_pnl(5020.0) == pytest.approx((5020 - 5000) * 1 * 50)


def test_option_multiplier_in_pnl() -> None:
    pos = fold([fill(1, "BUY", 3, 2.5, instrument=OPTION),
                fill(2, "SELL", 3, 3.1, instrument=OPTION)])
    assert pos.realized_pnl == pytest.approx(0.6 * 3 * 100)
    assert pos.qty == 0


def test_unrealized_is_nan_without_mark_and_zero_when_flat() -> None:
    open_pos = fold([fill(1, "BUY", 1, 10)])
    assert math.isnan(open_pos.unrealized_pnl(float("nan")))
    flat = fold([fill(1, "BUY", 1, 10), fill(2, "SELL", 1, 11)])
    assert flat.unrealized_pnl(float("nan")) == 0.0


def test_float_residue_snaps_to_flat() -> None:
    pos = fold([fill(1, "BUY", 0.1, 10), fill(2, "BUY", 0.2, 10), fill(3, "SELL", 0.3, 11)])
    assert pos.qty == 0.0
    assert math.isnan(pos.avg_cost)


def test_fold_is_in_canonical_order_whatever_the_list_order() -> None:
    fills = [fill(3, "SELL", 150, 12), fill(1, "BUY", 100, 10)]
    pos = fold(fills)
    assert pos.qty == -50 and pos.realized_pnl == pytest.approx(200.0)
