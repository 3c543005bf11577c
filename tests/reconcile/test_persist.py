"""What a reconciliation run reads and writes, against the in-memory store twin."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from backend.core.broker import BrokerPosition
from backend.core.model import RESIDUAL, Instrument
from backend.core.reconcile import StrategyHolding, price_rows, reconcile
from backend.reconcile import persist
from backend.storage import open_store
from backend.storage.api import Store, SymbolWrite
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS, RECONCILIATION, SCHEMAS

from .conftest import positions_frame

ACCT = "DU111"
AAPL = Instrument(con_id=265598, symbol="AAPL")
ES = Instrument(con_id=495512563, symbol="ES", sec_type="FUT", multiplier=50.0)
T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def store() -> Store:
    return open_store("memory://")


def fills_frame(times: list[datetime], exec_ids: list[str], commissions: list[float]
                ) -> pd.DataFrame:
    schema = SCHEMAS[FILLS]
    n = len(times)
    data: dict[str, list[Any]] = {}
    for name, dtype in schema.items():
        if dtype == "object":
            data[name] = [""] * n
        elif dtype == "int64":
            data[name] = [0] * n
        elif dtype == "float64":
            data[name] = [1.0] * n
        else:
            data[name] = [pd.Timestamp(t).tz_convert("UTC").tz_localize(None) for t in times]
    data["exec_id"] = exec_ids
    data["exec_id_base"] = [e.rsplit(".", 1)[0] for e in exec_ids]
    data["commission"] = commissions
    index = pd.DatetimeIndex(times, name="time").as_unit("ns")
    return pd.DataFrame(data, index=index).astype(schema)


def test_read_holdings_filters_accounts_and_keeps_flat_rows(store: Store) -> None:
    store.commit([
        SymbolWrite(POSITIONS, "trend", state=positions_frame([
            {"account": ACCT, "con_id": AAPL.con_id, "symbol": "AAPL", "qty": 100.0,
             "avg_cost": 150.0},
            {"account": "DU222", "con_id": AAPL.con_id, "symbol": "AAPL", "qty": 5.0,
             "avg_cost": 151.0}])),
        SymbolWrite(POSITIONS, "carry", state=positions_frame([
            {"account": ACCT, "con_id": ES.con_id, "symbol": "ES", "sec_type": "FUT",
             "multiplier": 50.0, "qty": 0.0, "avg_cost": math.nan, "realized_pnl": 975.0}])),
    ])
    holdings = sorted(persist.read_holdings(store, [ACCT]), key=lambda h: h.strategy)
    assert [(h.strategy, h.qty, h.realized_pnl) for h in holdings] == [
        ("carry", 0.0, 975.0), ("trend", 100.0, 0.0)]
    assert holdings[0].instrument.multiplier == 50.0
    assert holdings[0].instrument.sec_type == "FUT"
    assert len(persist.read_holdings(store)) == 3


def test_last_fill_time_and_journaled_fills(store: Store) -> None:
    assert persist.last_fill_time(store, ACCT, T0) is None
    old = T0 - timedelta(days=30)  # outside the cheap recent read: the fallback finds it
    store.commit([SymbolWrite(FILLS, ACCT, rows=fills_frame([old], ["a.01"], [1.0]))])
    assert persist.last_fill_time(store, ACCT, T0) == old
    store.commit([SymbolWrite(FILLS, ACCT, rows=fills_frame(
        [T0 - timedelta(hours=2), T0 - timedelta(hours=1)], ["b.01", "c.01"],
        [1.0, math.nan]))])
    assert persist.last_fill_time(store, ACCT, T0) == T0 - timedelta(hours=1)
    assert persist.journaled_fills(store, ACCT, T0 - timedelta(hours=3)) == {
        "b.01": True, "c.01": False}


def test_portfolio_frame_round_trip(store: Store) -> None:
    rows = [StrategyHolding(ACCT, "trend", AAPL, 100.0, 150.0, 5.0),
            StrategyHolding(ACCT, "old", ES, 0.0, math.nan, 975.0)]
    result = reconcile(rows, [BrokerPosition(ACCT, AAPL, 110.0, 150.0, market_price=151.0)])
    frame = persist.portfolio_frame(price_rows(result), T0)
    store.commit([persist.portfolio_write(ACCT, frame, "run1")])
    back = store.read(PORTFOLIO, ACCT)
    # The flat strategy row stays in positions only; the residual carries its source.
    assert back["strategy"].tolist() == ["trend", RESIDUAL]
    assert back["source"].tolist() == ["ledger", "reconciliation"]
    assert back["qty"].tolist() == [100.0, 10.0]
    assert back["unrealized_pnl"].iloc[0] == pytest.approx(100.0)
    assert math.isnan(back["unrealized_pnl"].iloc[1])  # no average of its own
    assert back["timestamp"].iloc[0] == pd.Timestamp("2026-11-20 15:00")
    assert store.read_metadata(PORTFOLIO, ACCT) == {"run_id": "run1",
                                                    "source": "reconciliation"}
    empty = persist.portfolio_frame([], T0)
    assert list(empty.columns) == list(SCHEMAS[PORTFOLIO])
    store.commit([persist.portfolio_write(ACCT, empty, "run2")])
    assert store.read(PORTFOLIO, ACCT).empty


def test_report_rows_and_watermark(store: Store) -> None:
    report = {"clean": False, "value": None, "nested": {"a": [1, 2]}}
    for i, covered in enumerate((T0, None)):
        frame = persist.report_frame(report, run_id=f"r{i}", started_at=T0 + timedelta(
            minutes=i), finished_at=T0 + timedelta(minutes=i, seconds=3), gateway="gw:4002",
            outcome="breaks", breaks=2)
        store.commit([persist.report_write(ACCT, frame, covered)])
        if i == 0:
            assert persist.covered_until(store, ACCT) == T0
    back = store.read(RECONCILIATION, ACCT)
    assert back["run_id"].tolist() == ["r0", "r1"]
    assert back["breaks"].tolist() == [2, 2]
    assert json.loads(back["report"].iloc[0]) == report
    assert back["finished_at"].iloc[1] == pd.Timestamp("2026-11-20 15:01:03")
    # A write without a watermark leaves none: callers carry it over explicitly.
    assert persist.covered_until(store, ACCT) is None


def test_report_frame_refuses_nan() -> None:
    with pytest.raises(ValueError, match="JSON"):
        persist.report_frame({"x": math.nan}, run_id="r", started_at=T0, finished_at=T0,
                             gateway="", outcome="clean", breaks=0)
