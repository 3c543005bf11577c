"""A deterministic, messy message stream in the plain-dict form (JSON-able), and helpers that
compare what two Arctic roots hold.

The stream has everything the manager must survive: fills out of time order, exact duplicates,
late commission reports (and re-sends without one), corrections, status events with re-sends and
cancel/replace modifications, two accounts, several strategies (one through orderRef only) on
shared instruments, and bad messages.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pandas as pd

from backend.storage import open_store
from backend.storage.schema import FILLS, ORDERS, PORTFOLIO, POSITIONS

from .ib_objects import AAPL, ES, MSFT, T0, dict_fill, stable

ACCOUNTS = ("DU111", "DU222")
STRATEGIES = ("alpha", "beta", "gamma", "")  # "" -> taken from orderRef "viaref"
CONTRACTS = (AAPL, ES, MSFT)


def make_stream(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    sent: list[tuple[str, dict[str, Any]]] = []  # (strategy, fill dict) already sent
    corrected: set[int] = set()
    orders: list[dict[str, Any]] = []
    k = 0
    while len(out) < n:
        r = rng.random()
        if r < 0.55 or not sent:
            k += 1
            strategy = rng.choice(STRATEGIES)
            contract = rng.choice(CONTRACTS)
            side = rng.choice(("BOT", "SLD"))
            qty = float(rng.randint(1, 20))
            price = round(rng.uniform(90, 110), 2)
            # times jitter around k seconds: deliveries are not in time order
            at = k + rng.uniform(-5, 5)
            fill = dict_fill(k, side, qty, price, account=rng.choice(ACCOUNTS), contract=contract,
                             seconds=at, commission=None if rng.random() < 0.5 else 1.0,
                             order_ref="viaref" if strategy == "" else strategy)
            sent.append((strategy, fill))
            out.append({"type": "fill", "strategy": strategy, "trade": None, "fill": fill})
        elif r < 0.65:
            strategy, fill = rng.choice(sent)  # an exact duplicate
            out.append({"type": "fill", "strategy": strategy, "trade": None, "fill": fill})
        elif r < 0.73:
            strategy, fill = rng.choice(sent)  # a late commission report (or none again)
            again = {**fill, "commissionReport": None if rng.random() < 0.3 else {
                "execId": fill["execution"]["execId"], "commission": 1.5, "currency": "USD",
                "realizedPNL": 0.0}}
            out.append({"type": "fill", "strategy": strategy, "trade": None, "fill": again})
        elif r < 0.78:
            idx = rng.randrange(len(sent))
            strategy, fill = sent[idx]
            n_base = int(fill["execution"]["execId"].split(".")[1], 16)
            if n_base in corrected:
                continue
            corrected.add(n_base)
            execution = dict(fill["execution"])
            execution["execId"] = execution["execId"][:-2] + "02"
            execution["shares"] = float(max(1.0, execution["shares"] - 1))
            execution["price"] = round(execution["price"] + 0.5, 2)
            fixed = {**fill, "execution": execution, "commissionReport": None}
            sent[idx] = (strategy, fixed)
            out.append({"type": "fill", "strategy": strategy, "trade": None, "fill": fixed})
        elif r < 0.95:
            if orders and rng.random() < 0.5:
                trade = rng.choice(orders)  # re-send, maybe modified (cancel/replace)
                if rng.random() < 0.5:
                    trade = {**trade, "order": {**trade["order"],
                                                "lmtPrice": trade["order"]["lmtPrice"] + 0.25}}
            else:
                oid = len(orders) + 1
                status = rng.choice(("Submitted", "PreSubmitted", "Filled", "Cancelled"))
                qty = float(rng.randint(1, 20))
                filled = qty if status == "Filled" else 0.0
                trade = {
                    "contract": dict(rng.choice(CONTRACTS)),
                    "order": {"orderId": oid, "clientId": 7, "permId": 9000 + oid,
                              "action": rng.choice(("BUY", "SELL")), "totalQuantity": qty,
                              "orderType": "LMT", "lmtPrice": 100.0, "orderRef": "alpha",
                              "account": rng.choice(ACCOUNTS)},
                    "orderStatus": {"status": status, "filled": filled,
                                    "remaining": qty - filled, "avgFillPrice": 0.0,
                                    "whyHeld": ""},
                    "log": [{"time": (T0 + timedelta(seconds=oid)).isoformat(),
                             "status": status}],
                }
                orders.append(trade)
            out.append({"type": "status_change", "strategy": "alpha", "trade": trade,
                        "status": trade["orderStatus"]["status"]})
        else:
            bad = dict_fill(10_000 + len(out), "BOT", rng.choice((-1.0, 0.0)), 100.0,
                            account=rng.choice(ACCOUNTS))
            out.append({"type": "fill", "strategy": "alpha", "trade": None, "fill": bad})
    return out


KEYS = {FILLS: ["exec_id_base"], ORDERS: ["event_key"], POSITIONS: ["account", "con_id"],
        PORTFOLIO: ["strategy", "con_id"]}


def snapshot(uri: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Every fills/orders/positions/portfolio symbol, without run-dependent columns."""
    store = open_store(uri, writer=False)
    try:
        out = {}
        for library in (FILLS, ORDERS, POSITIONS, PORTFOLIO):
            for symbol in store.list_symbols(library):
                frame = store.read(library, symbol)
                if library in (FILLS, ORDERS):
                    frame = frame.reset_index(drop=True)  # index times may carry ns offsets
                    frame = frame.drop(columns=["recorded_at"])
                out[(library, symbol)] = stable(frame, KEYS[library])
        return out
    finally:
        store.close()


def assert_same(left: dict[tuple[str, str], pd.DataFrame],
                right: dict[tuple[str, str], pd.DataFrame]) -> None:
    assert sorted(left) == sorted(right)
    for key in left:
        a, b = left[key], right[key]
        if key[0] == FILLS:
            assert a["exec_id_base"].is_unique, key
        if key[0] == ORDERS:
            assert a["event_key"].is_unique, key
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, obj=str(key))
