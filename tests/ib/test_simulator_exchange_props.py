"""Property tests of the simulator's exchange (pure state, no sockets)."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.ib.simulator.examples import AAPL, AAPL_C, ES, basic_scenario
from backend.ib.simulator.exchange import Exchange, FillEvent
from backend.ib.simulator.scenario import OrderSpec

CON_IDS = (AAPL.con_id, ES.con_id, AAPL_C.con_id)

Op = tuple[str, int, str, int, str, float, int, int]
ops_strategy = st.tuples(
    st.sampled_from(("place", "place", "step", "cancel")),
    st.sampled_from(CON_IDS),
    st.sampled_from(("BUY", "SELL")),
    st.integers(1, 7),  # quantity
    st.sampled_from(("MKT", "LMT")),
    st.floats(-0.05, 0.05),  # limit offset from the current price
    st.integers(1, 3),  # price steps
    st.integers(0, 30),  # which order to cancel
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(ops_strategy, max_size=30), chunk=st.sampled_from((0.0, 2.0)))
def test_positions_equal_replay_of_fills(ops: list[Op], chunk: float) -> None:
    ex = Exchange(dataclasses.replace(basic_scenario(), max_fill_qty=chunk))
    start = {k: v.qty for k, v in ex.positions.items()}
    start_realized = {k: v.realized_pnl for k, v in ex.positions.items()}
    seen_before = len(ex.executions)
    fills = []
    for i, (kind, con_id, action, qty, order_type, offset, steps, victim) in enumerate(ops):
        if kind == "place":
            px = ex.price(con_id) or 1.0
            order = OrderSpec(
                1000 + i, 0, 1, "DU1234567", con_id, action, float(qty), order_type,
                lmt_price=round(px * (1 + offset), 2),
            )  # fmt: skip
            events = ex.place(order)
        elif kind == "step":
            events = ex.advance(steps)
        else:
            events = ex.cancel(1, 1000 + victim)
        fills += [e.execution for e in events if isinstance(e, FillEvent)]

    assert ex.executions[seen_before:] == fills
    expected = defaultdict(float, start)
    for f in fills:
        expected[(f.account, f.con_id)] += f.shares if f.side == "BOT" else -f.shares
    for key, pos in ex.positions.items():
        assert math.isclose(pos.qty, expected[key], abs_tol=1e-9)
        if pos.qty == 0:
            assert pos.avg_cost == 0
    # the commission reports' realized PnL (net of fees) adds up to the positions' realized
    realized = defaultdict(float, start_realized)
    for f in fills:
        assert f.commission is not None
        if f.commission.realized_pnl is not None:
            realized[(f.account, f.con_id)] += f.commission.realized_pnl + f.commission.commission
    for key, pos in ex.positions.items():
        assert math.isclose(pos.realized_pnl, realized[key], rel_tol=1e-9, abs_tol=1e-6)
    # every order's filled quantity is the sum of its fills, never above its size
    by_perm: dict[int, float] = defaultdict(float)
    for f in fills:
        by_perm[f.perm_id] += f.shares
    for o in ex.orders.values():
        assert o.filled <= o.total_qty
        if o.perm_id in by_perm:
            assert math.isclose(o.filled, by_perm[o.perm_id])
    # exec ids are unique and in IB's dotted form
    ids = [e.exec_id for e in ex.executions]
    assert len(ids) == len(set(ids))
    assert all(len(i.split(".")) == 4 for i in ids)
    assert all(f.commission is not None and f.commission.commission >= 1.0 for f in fills)
