"""Hypothesis properties of the ledger: determinism, order independence, conservation."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.core.ledger import Ledger
from backend.core.model import CommissionReport, Fill, PositionKey, Side

from .factories import FUTURE, OPTION, STOCK, T0

INSTRUMENTS = (STOCK, FUTURE, OPTION)
PROPERTY = settings(max_examples=1000, deadline=None)


_QTY = st.one_of(st.integers(1, 500).map(float),
                 st.floats(0.0001, 50, allow_nan=False).map(lambda q: round(q, 4)))
_ROW = st.tuples(
    st.sampled_from(INSTRUMENTS),
    st.integers(1, 3),  # revisions of this execution (corrections)
    st.sampled_from(("DU1", "DU2")),
    st.sampled_from(("a", "b")),
    st.sampled_from(list(Side)),
    st.lists(st.tuples(_QTY, st.floats(0.01, 1000).map(lambda p: round(p, 2))),
             min_size=3, max_size=3),
    st.integers(0, 8),  # few distinct seconds: equal times must order by exec_id
    st.one_of(st.none(), st.floats(0, 5).map(lambda c: round(c, 2))),
)


@st.composite
def fill_sets(draw: st.DrawFn) -> tuple[list[Fill], list[CommissionReport]]:
    """Fills (some executions corrected up to twice) and commission reports."""
    rows = draw(st.lists(_ROW, min_size=1, max_size=20))
    fills: list[Fill] = []
    reports: list[CommissionReport] = []
    for i, (instrument, revisions, account, strategy, side, qps, second, comm) in enumerate(rows):
        for rev in range(1, revisions + 1):
            qty, price = qps[rev - 1]
            fills.append(Fill(
                exec_id=f"0000e215.{i:08x}.01.{rev:02x}", account=account, strategy=strategy,
                instrument=instrument, side=side, qty=qty, price=price,
                time=T0 + timedelta(seconds=second + rev - 1),
            ))
        if comm is not None:
            reports.append(CommissionReport(fills[-1].exec_id, comm, "USD"))
    return fills, reports


def live_of(fills: list[Fill]) -> list[Fill]:
    best: dict[tuple[str, str], Fill] = {}
    for f in fills:
        ident = (f.account, f.exec_id_base)
        if ident not in best or f.revision > best[ident].revision:
            best[ident] = f
    return list(best.values())


def run(events: list[Fill | CommissionReport]) -> Ledger:
    ledger = Ledger()
    for e in events:
        if isinstance(e, Fill):
            ledger.apply_fill(e)
        else:
            ledger.apply_commission(e)
    return ledger


def state(ledger: Ledger) -> dict[PositionKey, object]:
    return {p.key: p for p in ledger.positions()}


def commissions_close(a: Ledger, b: Ledger) -> bool:
    for key in state(a):
        ca, cb = a.commissions(key), b.commissions(key)
        if ca.pending != cb.pending or [c for c, _ in ca.by_currency] != [
                c for c, _ in cb.by_currency]:
            return False
        if not all(math.isclose(x, y, abs_tol=1e-9)
                   for (_, x), (_, y) in zip(ca.by_currency, cb.by_currency, strict=True)):
            return False
    return True


@PROPERTY
@given(fill_sets())
def test_replay_is_deterministic(data: tuple[list[Fill], list[CommissionReport]]) -> None:
    fills, reports = data
    events: list[Fill | CommissionReport] = [*fills, *reports]
    assert state(run(events)) == state(run(events))


@PROPERTY
@given(fill_sets(), st.data())
def test_any_permutation_and_duplication_gives_the_same_state(
    data: tuple[list[Fill], list[CommissionReport]], draw: st.DataObject
) -> None:
    fills, reports = data
    canonical = run([*sorted(live_of(fills), key=Fill.sort_key), *reports])
    events: list[Fill | CommissionReport] = [*fills, *reports]
    dup_idx = draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    events += [events[i] for i in dup_idx]  # duplicates
    events = draw.draw(st.permutations(events))
    shuffled = run(events)
    assert state(shuffled) == state(canonical)
    assert commissions_close(shuffled, canonical)


@PROPERTY
@given(fill_sets())
def test_net_qty_is_sum_of_signed_live_fill_qty(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    expected: dict[PositionKey, float] = defaultdict(float)
    for f in live_of(fills):
        expected[f.key] += f.signed_qty
    for key, qty in expected.items():
        pos = ledger.position(key)
        assert pos is not None
        assert math.isclose(pos.qty, qty, abs_tol=1e-6)


@PROPERTY
@given(fill_sets(), st.floats(0.01, 1000))
def test_realized_plus_unrealized_equals_cash_flow_pnl(
    data: tuple[list[Fill], list[CommissionReport]], mark: float
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    cash: dict[PositionKey, float] = defaultdict(float)
    for f in live_of(fills):
        cash[f.key] -= f.signed_qty * f.price * f.instrument.multiplier
    for key, flow in cash.items():
        pos = ledger.position(key)
        assert pos is not None
        held = 0.0 if pos.is_flat else pos.qty * mark * pos.instrument.multiplier
        total = pos.realized_pnl + pos.unrealized_pnl(mark)
        scale = sum(f.qty * max(f.price, mark) * f.instrument.multiplier
                    for f in live_of(fills) if f.key == key)
        assert math.isclose(total, flow + held, rel_tol=1e-9, abs_tol=1e-9 * scale + 1e-9)


@PROPERTY
@given(fill_sets())
def test_average_stays_within_prices_that_opened_the_current_side(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
    for f in live_of(fills):
        by_key[f.key].append(f)
    for key, key_fills in by_key.items():
        # Independent walk: which fills opened the side the position is on now?
        qty, opened = 0.0, []
        for f in sorted(key_fills, key=Fill.sort_key):
            new = qty + f.signed_qty
            if abs(new) < 1e-9:
                qty, opened = 0.0, []
                continue
            if abs(qty) < 1e-9 or (new > 0) != (qty > 0):
                opened = [f.price]  # opened from flat, or flipped by this fill
            elif abs(new) > abs(qty):
                opened.append(f.price)  # increased
            qty = new
        pos = ledger.position(key)
        assert pos is not None
        if opened:
            assert min(opened) <= pos.avg_cost <= max(opened)
        else:
            assert pos.is_flat and math.isnan(pos.avg_cost)
