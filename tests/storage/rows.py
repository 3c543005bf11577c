"""Frames in the libraries' schemas for the storage tests (defaults for every column)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from backend.storage.schema import SCHEMAS

_DEFAULT_BY_DTYPE: dict[str, Any] = {
    "float64": 0.0,
    "int64": 0,
    "object": "",
    "datetime64[ns]": pd.Timestamp("2026-11-20 15:00:00"),
}


def ts(text: str | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp (naive text is UTC)."""
    out = pd.Timestamp(text)
    return out.tz_localize("UTC") if out.tzinfo is None else out.tz_convert("UTC")


def frame(
    library: str,
    rows: Sequence[Mapping[str, Any]],
    times: Sequence[pd.Timestamp | str] | None = None,
) -> pd.DataFrame:
    """A frame of ``library`` with the given values (every other column defaulted)."""
    schema = SCHEMAS[library]
    records = [
        {name: row.get(name, _DEFAULT_BY_DTYPE[dtype]) for name, dtype in schema.items()}
        for row in rows
    ]
    out = pd.DataFrame(records, columns=list(schema))
    for name, dtype in schema.items():
        out[name] = out[name].astype(np.dtype(dtype))
    if times is not None:
        out.index = pd.DatetimeIndex([pd.Timestamp(t) for t in times], name="time")
    return out


def fills(specs: Sequence[tuple[str, str, float]], **extra: Any) -> pd.DataFrame:
    """Fills from (time, exec_id_base, price); times are UTC strings."""
    rows = [
        {
            "exec_id": f"{base}.01",
            "exec_id_base": base,
            "revision": 1,
            "strategy": "alpha",
            "symbol": "AAPL",
            "con_id": 265598,
            "sec_type": "STK",
            "currency": "USD",
            "multiplier": 1.0,
            "side": "BUY",
            "qty": 10.0,
            "price": price,
            "commission": np.nan,
            "broker_realized_pnl": np.nan,
            "exec_time": ts(t).tz_localize(None),
            **extra,
        }
        for t, base, price in specs
    ]
    return frame("fills", rows, [ts(t) for t, _, _ in specs])


def orders(specs: Sequence[tuple[str, str, str]]) -> pd.DataFrame:
    """Order events from (time, event_key, status)."""
    rows = [
        {"event_key": key, "order_id": 7, "status": status, "side": "BUY", "total_qty": 10.0}
        for _, key, status in specs
    ]
    return frame("orders", rows, [ts(t) for t, _, _ in specs])


def rejects(specs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Rejects from (time, raw)."""
    rows = [{"raw": raw, "reason": "bad", "field": "qty"} for _, raw in specs]
    return frame("rejects", rows, [ts(t) for t, _ in specs])


def positions(qtys: Sequence[float]) -> pd.DataFrame:
    rows = [
        {"account": "U1", "symbol": f"S{i}", "con_id": i + 1, "qty": q, "avg_cost": np.nan}
        for i, q in enumerate(qtys)
    ]
    return frame("positions", rows)
