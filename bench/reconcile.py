"""Benchmark of the pure reconciliation compare (backend.core.reconcile.reconcile).

Inputs: 10,000 broker positions in 4 accounts, 50 strategies; each broker position is held by
1 to 4 strategies (some on opposite sides), about 2% of keys disagree (quantity, average cost
or broker-only), and a few hundred strategy holdings have no broker position (arctic-only).
Inputs are built before timing. Printed against two baselines measured in the same run:

* ``naive``: a bare dict-building pass (group strategy qty by (account, con_id), compare with a
  broker dict): the floor of any pure-Python compare;
* ``scaling``: the same compare (and the naive pass) on a tenth of the input: the per-row
  time of both grows alike with n (cache misses on a larger object graph, not the algorithm:
  one grouping pass and one pass per key).

The last line is a JSON object with the timings.

    .venv/bin/python bench/reconcile.py [--positions 10000] [--strategies 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable

from backend.core.broker import BrokerPosition
from backend.core.model import Instrument
from backend.core.reconcile import StrategyHolding, Tolerances, reconcile

ACCOUNTS = ("DU100001", "DU100002", "DU100003", "DU100004")


def build(n_positions: int, n_strategies: int, seed: int = 7) -> tuple[
        list[StrategyHolding], list[BrokerPosition]]:
    rng = random.Random(seed)
    strategies = [f"strat{i:02d}" for i in range(n_strategies)]
    holdings: list[StrategyHolding] = []
    brokers: list[BrokerPosition] = []
    n_broker_only = n_positions // 100
    for i in range(n_positions - n_broker_only):
        account = ACCOUNTS[i % len(ACCOUNTS)]
        fut = i % 10 == 0
        inst = Instrument(con_id=100_000 + i, symbol=f"S{i}", sec_type="FUT" if fut else "STK",
                          multiplier=50.0 if fut else 1.0)
        owners = rng.sample(strategies, rng.randint(1, 4))
        net = 0.0
        cost = 0.0
        long_qty = 0.0
        for k, strategy in enumerate(owners):
            # The first owner is long and the biggest; later ones may be short (netting).
            qty = float(rng.randint(50, 500)) if k == 0 else float(rng.randint(-40, 40) or 1)
            avg = round(rng.uniform(10, 500), 2)
            holdings.append(StrategyHolding(account=account, strategy=strategy, instrument=inst,
                                            qty=qty, avg_cost=avg, realized_pnl=0.0))
            net += qty
            if qty > 0:
                cost += qty * avg
                long_qty += qty
        broker_qty, broker_avg = net, cost / long_qty
        roll = rng.random()
        if roll < 0.005:
            broker_qty += 7  # quantity mismatch
        elif roll < 0.01:
            broker_avg *= 1.01  # average cost drift
        brokers.append(BrokerPosition(account=account, instrument=inst, qty=broker_qty,
                                      avg_cost=broker_avg, market_price=broker_avg * 1.01))
    for j in range(n_positions // 50):  # arctic-only holdings: IB is flat
        inst = Instrument(con_id=900_000 + j, symbol=f"X{j}")
        holdings.append(StrategyHolding(account=ACCOUNTS[j % len(ACCOUNTS)],
                                        strategy=strategies[j % n_strategies], instrument=inst,
                                        qty=10.0, avg_cost=20.0, realized_pnl=1.0))
    for j in range(n_broker_only):  # broker-only positions (part of the n)
        inst = Instrument(con_id=950_000 + j, symbol=f"B{j}")
        brokers.append(BrokerPosition(account=ACCOUNTS[j % len(ACCOUNTS)], instrument=inst,
                                      qty=5.0, avg_cost=30.0))
    return holdings, brokers


def naive(holdings: list[StrategyHolding], brokers: list[BrokerPosition]) -> int:
    sums: dict[tuple[str, int], float] = {}
    for h in holdings:
        key = (h.account, h.instrument.con_id)
        sums[key] = sums.get(key, 0.0) + h.qty
    by_key = {(b.account, b.instrument.con_id): b.qty for b in brokers}
    return sum(1 for k in by_key.keys() | sums.keys()
               if abs(by_key.get(k, 0.0) - sums.get(k, 0.0)) > 1e-6)


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    best = math.inf
    out: object = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--positions", type=int, default=10_000)
    ap.add_argument("--strategies", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    tol = Tolerances()
    holdings, brokers = build(args.positions, args.strategies)
    small_h, small_b = build(args.positions // 10, args.strategies)
    rows = len(holdings) + len(brokers)
    small_rows = len(small_h) + len(small_b)

    naive_s, naive_breaks = best_of(args.repeat, lambda: naive(holdings, brokers))
    naive_small_s, _ = best_of(args.repeat, lambda: naive(small_h, small_b))
    small_s, _ = best_of(args.repeat, lambda: reconcile(small_h, small_b, tol))
    rec_s, result = best_of(args.repeat, lambda: reconcile(holdings, brokers, tol))
    assert result is not None
    breaks = result.breaks  # type: ignore[attr-defined]
    per_row = rec_s / rows
    per_row_small = small_s / small_rows

    print(f"input: {len(brokers)} broker positions, {len(holdings)} strategy holdings, "
          f"{args.strategies} strategies, {len(ACCOUNTS)} accounts")
    print(f"reconcile: {rec_s * 1e3:.1f} ms  ({rows / rec_s:,.0f} rows/s), "
          f"{len(breaks)} breaks (naive pass found {naive_breaks} qty differences)")
    print(f"naive dict pass: {naive_s * 1e3:.1f} ms  -> reconcile/naive = {rec_s / naive_s:.1f}x")
    naive_scaling = (naive_s / rows) / (naive_small_s / small_rows)
    print(f"scaling: per-row time at n={rows} / at n={small_rows}: reconcile "
          f"{per_row / per_row_small:.2f}, naive dict pass {naive_scaling:.2f} "
          "(1.0 = linear; the naive pass shows the growth due to cache misses alone)")
    print(json.dumps({
        "reconcile_s": round(rec_s, 6), "broker_positions": len(brokers),
        "strategies": args.strategies, "strategy_holdings": len(holdings),
        "rows_per_s": round(rows / rec_s), "naive_s": round(naive_s, 6),
        "ratio_vs_naive": round(rec_s / naive_s, 2),
        "per_row_ratio_10x": round(per_row / per_row_small, 3),
        "naive_per_row_ratio_10x": round(naive_scaling, 3), "breaks": len(breaks),
    }))


if __name__ == "__main__":
    main()
