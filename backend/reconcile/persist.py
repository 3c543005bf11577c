"""What a reconciliation run reads from and writes to storage, through the Store protocol only.

Reads: the strategy holdings of an account (``positions``: one symbol per strategy, one row
per (account, con_id)), the time of the account's last journaled fill (``fills/<account>``),
the exec_ids already journaled since a time, and the coverage watermark (metadata of
``reconciliation/<account>``).

Writes: the consolidated view ``portfolio/<account>`` (the whole symbol, a new version per run,
so ``as_of`` gives its history) and one report row in ``reconciliation/<account>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from backend.core.model import RESIDUAL, Instrument, is_flat, require_utc
from backend.core.reconcile import PricedRow, StrategyHolding
from backend.storage.api import Store, SymbolWrite
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS, RECONCILIATION, SCHEMAS

# Metadata key on reconciliation/<account>: up to when the account's journal is known complete
# (the broker snapshot time of the last run that backfilled successfully).
COVERED_UNTIL = "covered_until"
# How far back the cheap reads look before falling back to a whole-column read.
RECENT = timedelta(days=7)


def _naive_utc(t: datetime) -> pd.Timestamp:
    return pd.Timestamp(require_utc("time", t)).tz_convert("UTC").tz_localize(None)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def holdings_from_frame(frame: pd.DataFrame, strategy: str,
                        account: str | None = None) -> list[StrategyHolding]:
    """``positions/<strategy>`` rows as holdings (of ``account`` only, when given)."""
    if account is not None:
        frame = frame[frame["account"] == account]
    cols = ("account", "con_id", "symbol", "sec_type", "currency", "multiplier", "qty",
            "avg_cost", "realized_pnl", "commissions", "commission_currency")
    out: list[StrategyHolding] = []
    for acct, con_id, symbol, sec_type, ccy, mult, qty, avg, realized, fees, fee_ccy in zip(
            *(frame[c].tolist() for c in cols), strict=True):
        inst = Instrument(con_id=int(con_id), symbol=_text(symbol),
                          sec_type=_text(sec_type) or "STK", currency=_text(ccy),
                          multiplier=float(mult))
        out.append(StrategyHolding(
            account=str(acct), strategy=strategy, instrument=inst,
            qty=0.0 if is_flat(float(qty)) else float(qty), avg_cost=float(avg),
            realized_pnl=float(realized),
            # in another currency they say nothing about a price-unit average
            commissions=float(fees) if _text(fee_ccy) == inst.currency else math.nan))
    return out


def read_holdings(store: Store, accounts: Iterable[str] | None = None) -> list[StrategyHolding]:
    """Every strategy's holdings (flat rows included: their realized PnL is reported)."""
    wanted = set(accounts) if accounts is not None else None
    out: list[StrategyHolding] = []
    for strategy in store.list_symbols(POSITIONS):
        if strategy == RESIDUAL:
            continue  # never a strategy; refuse to feed it back into the compare
        frame = store.read(POSITIONS, strategy)
        if wanted is not None:
            frame = frame[frame["account"].isin(wanted)]
        out.extend(holdings_from_frame(frame, strategy))
    return out


def last_fill_time(store: Store, account: str, now: datetime) -> datetime | None:
    """The latest execution time journaled for ``account`` (None when it has no fills)."""
    # The index is the execution time (plus nanosecond offsets that make equal times unique).
    start = _naive_utc(now - RECENT).tz_localize("UTC")
    frame = store.read(FILLS, account, columns=["exec_id"], date_range=(start, None))
    if frame.empty:
        frame = store.read(FILLS, account, columns=["exec_id"])
    if frame.empty:
        return None
    # Down to microseconds (datetime's resolution): the index carries nanosecond offsets.
    last = pd.Timestamp(frame.index.max()).tz_convert("UTC").floor("us")
    return last.to_pydatetime()


def journaled_fills(store: Store, account: str, since: datetime) -> dict[str, bool]:
    """Exec_ids of ``account`` journaled at or after ``since`` -> whether the commission is
    known (a backfill may bring a commission that was missing)."""
    start = _naive_utc(since).tz_localize("UTC") - pd.Timedelta(seconds=1)
    frame = store.read(FILLS, account, columns=["exec_id", "commission"],
                       date_range=(start, None))
    return {str(e): not math.isnan(c) for e, c in
            zip(frame["exec_id"].tolist(), frame["commission"].tolist(), strict=True)}


def covered_until(store: Store, account: str) -> datetime | None:
    meta = store.read_metadata(RECONCILIATION, account)
    text = meta.get(COVERED_UNTIL) if meta else None
    if not isinstance(text, str) or not text:
        return None
    return pd.Timestamp(text).tz_convert("UTC").to_pydatetime()


def portfolio_frame(rows: Iterable[PricedRow], at: datetime) -> pd.DataFrame:
    """The consolidated ``portfolio/<account>`` frame: open strategy rows and residual rows.

    Flat strategy rows are left out (``portfolio`` holds open rows only; ``positions`` keeps
    the flat ones with their realized PnL).
    """
    stamp = _naive_utc(at)
    records: list[dict[str, Any]] = []
    for p in rows:
        r = p.row
        if r.strategy != RESIDUAL and is_flat(r.qty):
            continue
        inst = r.instrument
        records.append({
            "timestamp": stamp, "strategy": r.strategy, "con_id": inst.con_id,
            "symbol": inst.symbol, "sec_type": inst.sec_type, "currency": inst.currency,
            "multiplier": inst.multiplier, "qty": r.qty, "avg_cost": r.avg_cost,
            "realized_pnl": r.realized_pnl, "unrealized_pnl": p.unrealized_pnl,
            "mark_price": p.mark_price,
            "source": "reconciliation" if r.strategy == RESIDUAL else "ledger"})
    schema = SCHEMAS[PORTFOLIO]
    if not records:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in schema.items()})
    frame = pd.DataFrame.from_records(records, columns=list(schema))
    return frame.astype(schema)


def carried_residuals(store: Store, account: str, con_ids: Iterable[int]) -> pd.DataFrame:
    """The ``_residual`` rows of ``portfolio/<account>`` for ``con_ids``, as last written.

    A run that leaves a key out of the compare (a working order, a fresh fill) has not
    reconciled it: its last residual is carried, with the time it was measured, instead of
    being cleared as if resolved.
    """
    wanted = set(con_ids)
    schema = SCHEMAS[PORTFOLIO]
    frame = store.read(PORTFOLIO, account) if wanted else pd.DataFrame()
    if frame.empty:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in schema.items()})
    keep = (frame["strategy"] == RESIDUAL) & frame["con_id"].isin(wanted)
    return frame.loc[keep, list(schema)].reset_index(drop=True).astype(schema)


def with_carried(frame: pd.DataFrame, carried: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (this run's residual rows) plus the carried ones (no empty concat)."""
    if carried.empty:
        return frame
    if frame.empty:
        return carried
    return pd.concat([frame, carried], ignore_index=True).astype(SCHEMAS[PORTFOLIO])


def report_frame(report: Mapping[str, Any], *, run_id: str, started_at: datetime,
                 finished_at: datetime, gateway: str, outcome: str,
                 breaks: int) -> pd.DataFrame:
    """One ``reconciliation`` row (indexed by the run's start) carrying the report as JSON."""
    text = json.dumps(report, allow_nan=False, default=str, sort_keys=True)
    started = require_utc("started_at", started_at)
    index = pd.DatetimeIndex([pd.Timestamp(started)], name="time").as_unit("ns")
    return pd.DataFrame({
        "run_id": [run_id], "started_at": [_naive_utc(started_at)],
        "finished_at": [_naive_utc(finished_at)], "gateway": [gateway], "outcome": [outcome],
        "report": [text], "breaks": [int(breaks)]}, index=index).astype(SCHEMAS[RECONCILIATION])


def report_write(account: str, frame: pd.DataFrame,
                 covered: datetime | None) -> SymbolWrite:
    meta = {COVERED_UNTIL: require_utc("covered", covered).isoformat()} if covered else None
    return SymbolWrite(library=RECONCILIATION, symbol=account, rows=frame, metadata=meta)


def portfolio_write(account: str, frame: pd.DataFrame, run_id: str) -> SymbolWrite:
    return SymbolWrite(library=PORTFOLIO, symbol=account, state=frame,
                       metadata={"run_id": run_id, "source": "reconciliation"})


def json_safe(value: float) -> float | None:
    return None if math.isnan(value) else value
