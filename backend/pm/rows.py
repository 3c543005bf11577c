"""Rows of the PortfolioManager's libraries, built as column lists per batch (no per-fill
DataFrame), and the way back from stored ``fills`` rows to domain fills (recovery).

Every row is a tuple in the column order of :data:`backend.storage.schema.SCHEMAS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from backend.core.ledger import CommissionTotals
from backend.core.messages import StatusMessage
from backend.core.model import NAN, SIDE_TEXT, CommissionReport, Fill, Instrument, Side
from backend.core.position import Position
from backend.storage.schema import FILLS, INDEX_NAME, ORDERS, PORTFOLIO, POSITIONS, REJECTS, SCHEMAS

FILL_COLUMNS = tuple(SCHEMAS[FILLS])
ORDER_COLUMNS = tuple(SCHEMAS[ORDERS])
POSITION_COLUMNS = tuple(SCHEMAS[POSITIONS])
PORTFOLIO_COLUMNS = tuple(SCHEMAS[PORTFOLIO])
REJECT_COLUMNS = tuple(SCHEMAS[REJECTS])

SOURCE_LEDGER = "ledger"

Row = tuple[Any, ...]


def fill_row(fill: Fill, report: CommissionReport | None, seq: int, recorded_at: datetime) -> Row:
    i = fill.instrument
    known = report is not None and report.known
    return (
        fill.exec_id, fill.exec_id_base, fill.revision, fill.order_id, fill.perm_id,
        fill.order_ref, fill.strategy, i.symbol, i.con_id, i.sec_type, i.currency,
        i.multiplier, i.expiry, i.strike, i.right, fill.exchange, fill.side.value, fill.qty,
        fill.price,
        report.commission if known and report is not None else NAN,
        report.currency if known and report is not None else "",
        report.realized_pnl if report is not None else NAN,
        recorded_at, seq, fill.time,
    )


# fill, report, seq, recorded_at (when the message was received, epoch seconds)
FillEntry = tuple[Fill, CommissionReport | None, int, float]


def epoch_column(seconds: Sequence[float]) -> Any:
    """Epoch seconds -> datetime64[ns] (naive UTC), each rounded to the microsecond exactly
    as ``datetime.fromtimestamp(x, UTC)`` rounds it (the fraction times 1e6, half to even),
    in a few vectorized steps instead of a datetime object per value."""
    values = np.asarray(seconds, dtype=np.float64)
    whole = np.floor(values)
    micros = whole.astype(np.int64) * 1_000_000 + np.rint((values - whole) * 1e6).astype(
        np.int64)
    return (micros * 1000).view("datetime64[ns]")


def fill_frame(entries: Sequence[FillEntry]) -> pd.DataFrame:
    """The ``fills`` frame of ``entries`` (the rows :func:`fill_row` gives, indexed by the
    execution times), built column by column: a fill is a tuple, so ``zip(*fills)``
    transposes them in C instead of a row tuple per fill and a transpose of those."""
    if not entries:
        return _frame(FILLS, [], pd.DatetimeIndex([], name=INDEX_NAME, tz="UTC"))
    fills, reports, seqs, recorded = zip(*entries, strict=True)
    (exec_id, _account, strategy, inst, side, qty, price, times, order_id, perm_id, order_ref,
     exchange, base, revision) = zip(*fills, strict=True)
    known = [r if r is not None and r.known else None for r in reports]
    data = {
        "exec_id": exec_id, "exec_id_base": base, "revision": revision, "order_id": order_id,
        "perm_id": perm_id, "order_ref": order_ref, "strategy": strategy,
        "symbol": [i.symbol for i in inst], "con_id": [i.con_id for i in inst],
        "sec_type": [i.sec_type for i in inst], "currency": [i.currency for i in inst],
        "multiplier": [i.multiplier for i in inst], "expiry": [i.expiry for i in inst],
        "strike": [i.strike for i in inst], "right": [i.right for i in inst],
        "exchange": exchange, "side": list(map(SIDE_TEXT.__getitem__, side)), "qty": qty,
        "price": price,
        "commission": [NAN if r is None else r.commission for r in known],
        "commission_currency": ["" if r is None else r.currency for r in known],
        "broker_realized_pnl": [NAN if r is None else r.realized_pnl for r in reports],
        "seq": seqs,
    }
    # the execution times are converted once, for the index and the exec_time column
    index = pd.DatetimeIndex(list(times), name=INDEX_NAME).tz_convert("UTC")
    columns = {name: _column(list(data[name]), dtype) if name != "recorded_at"
               else epoch_column(recorded)
               for name, dtype in SCHEMAS[FILLS].items() if name != "exec_time"}
    columns["exec_time"] = index.tz_convert(None).to_numpy()
    return pd.DataFrame(columns, index=index, copy=False)


def order_row(ev: StatusMessage, seq: int, recorded_at: datetime) -> Row:
    return (
        ev.event_key, ev.order_id, ev.perm_id, ev.client_id, ev.order_ref, ev.strategy,
        ev.con_id, ev.symbol, ev.sec_type, ev.side, ev.order_type, ev.total_qty, ev.filled_qty,
        ev.remaining_qty, ev.avg_fill_price, ev.lmt_price, ev.status, ev.why_held, recorded_at,
        seq,
    )


def reject_row(raw: str, reason: str, field: str, received_at: datetime, seq: int) -> Row:
    return (raw, reason, field, received_at, seq)


def position_row(pos: Position, totals: CommissionTotals, mark: float, last_updated: datetime,
                 watermark: int) -> Row:
    i = pos.instrument
    return (
        pos.key.account, i.symbol, i.con_id, i.sec_type, i.currency, i.multiplier, pos.qty,
        pos.avg_cost, pos.realized_pnl, totals.total, totals.currency, totals.pending,
        pos.unrealized_pnl(mark), mark, pos.fill_count, last_updated, pos.last_exec_id,
        pos.open_price_min, pos.open_price_max, watermark,
    )


def portfolio_row(pos: Position, mark: float, timestamp: datetime) -> Row:
    i = pos.instrument
    return (
        timestamp, pos.key.strategy, i.con_id, i.symbol, i.sec_type, i.currency, i.multiplier,
        pos.qty, pos.avg_cost, pos.realized_pnl, pos.unrealized_pnl(mark), mark, SOURCE_LEDGER,
    )


def _column(values: list[Any], dtype: str) -> Any:
    if dtype == "datetime64[ns]":
        # aware UTC datetimes -> naive UTC (the stored convention), in one vectorized step
        return pd.DatetimeIndex(values).tz_convert(None).to_numpy()
    if dtype == "object":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=dtype)


def _frame(library: str, rows: Sequence[Row], index: Any) -> pd.DataFrame:
    schema = SCHEMAS[library]
    cols = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in schema]
    data = {name: _column(col, dtype) if col else np.empty(0, dtype=dtype)
            for (name, dtype), col in zip(schema.items(), cols, strict=True)}
    return pd.DataFrame(data, index=index, copy=False)


def journal_frame(library: str, rows: Sequence[Row], times: Sequence[datetime]) -> pd.DataFrame:
    """A journal-library frame (fills, orders, rejects) indexed by ``times`` (aware UTC)."""
    index = pd.DatetimeIndex(list(times), name=INDEX_NAME).tz_convert("UTC")
    return _frame(library, rows, index)


def state_frame(library: str, rows: Sequence[Row]) -> pd.DataFrame:
    """A state-library frame (positions, portfolio) with a RangeIndex."""
    return _frame(library, rows, pd.RangeIndex(len(rows)))


def frame_rows(frame: pd.DataFrame, library: str) -> list[Row]:
    """Rows of a stored state frame, in schema order (timestamps as aware UTC datetimes)."""
    names = tuple(SCHEMAS[library])
    cols: list[list[Any]] = []
    for name in names:
        col = frame[name]
        if SCHEMAS[library][name] == "datetime64[ns]":
            cols.append(list(pd.DatetimeIndex(pd.to_datetime(col, utc=True)).to_pydatetime()))
        else:
            cols.append(col.tolist())
    return list(zip(*cols, strict=True)) if cols and len(frame) else []


def _instrument(con_id: Any, symbol: str, sec_type: str, currency: str, multiplier: Any,
                expiry: str, strike: Any, right: str) -> Instrument:
    return Instrument(int(con_id), symbol, sec_type, currency, float(multiplier),
                      expiry=expiry, strike=float(strike), right=right)


def instrument_of(row: pd.Series) -> Instrument:
    """The instrument of one stored ``fills`` row."""
    return _instrument(row["con_id"], row["symbol"], row["sec_type"], row["currency"],
                       row["multiplier"], row["expiry"], row["strike"], row["right"])


def fills_from_frame(frame: pd.DataFrame, account: str
                     ) -> Iterator[tuple[Fill, CommissionReport | None, int]]:
    """Stored ``fills`` rows -> (fill, commission report or None, seq), in canonical order."""
    if frame.empty:
        return
    times = pd.to_datetime(frame["exec_time"], utc=True)
    order = np.lexsort((frame["exec_id"].to_numpy(), times.to_numpy()))
    frame = frame.iloc[order]
    exec_times = pd.DatetimeIndex(pd.to_datetime(frame["exec_time"], utc=True)).to_pydatetime()
    instruments: dict[tuple[Any, ...], Instrument] = {}
    cols = [frame[c].tolist() for c in (
        "exec_id", "order_id", "perm_id", "order_ref", "strategy", "symbol", "con_id",
        "sec_type", "currency", "multiplier", "expiry", "strike", "right", "exchange", "side",
        "qty", "price", "commission", "commission_currency", "broker_realized_pnl", "seq")]
    for (exec_id, order_id, perm_id, order_ref, strategy, symbol, con_id, sec_type, currency,
         multiplier, expiry, strike, right, exchange, side, qty, price, commission, ccy,
         broker_pnl, seq), at in zip(zip(*cols, strict=True), exec_times, strict=True):
        ident = (con_id, symbol, sec_type, currency, multiplier, expiry, strike, right)
        inst = instruments.get(ident)
        if inst is None:
            inst = instruments[ident] = _instrument(*ident)
        when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        fill = Fill(exec_id=exec_id, account=account, strategy=strategy, instrument=inst,
                    side=Side(side), qty=float(qty), price=float(price), time=when,
                    order_id=int(order_id), perm_id=int(perm_id), order_ref=order_ref,
                    exchange=exchange)
        report = None
        if not math.isnan(commission) or not math.isnan(broker_pnl):
            report = CommissionReport(exec_id, float(commission), ccy, float(broker_pnl))
        yield fill, report, int(seq)
