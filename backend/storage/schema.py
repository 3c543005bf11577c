"""Fixed schemas of the libraries: column names, order and dtypes.

Dtypes follow ArcticDB's static-schema rules (see docs/storage.md): ``float64`` with NaN for
unknown numbers, ``int64`` for ids and counts, ``object`` columns holding ``str`` only (never
None) for text, ``datetime64[ns]`` naive-UTC for timestamps stored as columns. Journal
libraries carry a tz-aware UTC DatetimeIndex named ``time``; state libraries a RangeIndex.
"""

from __future__ import annotations

from typing import Final

# Library names
FILLS: Final = "fills"
ORDERS: Final = "orders"
POSITIONS: Final = "positions"
PORTFOLIO: Final = "portfolio"
REJECTS: Final = "rejects"
RECONCILIATION: Final = "reconciliation"

JOURNAL_LIBRARIES: Final = (FILLS, ORDERS, REJECTS, RECONCILIATION)
STATE_LIBRARIES: Final = (POSITIONS, PORTFOLIO)
LIBRARIES: Final = JOURNAL_LIBRARIES + STATE_LIBRARIES

INDEX_NAME: Final = "time"
UNKNOWN_ACCOUNT_SYMBOL: Final = "_unknown"

# Key column of keyed journal libraries: a committed row with a stored key replaces that row.
KEY_COLUMNS: Final[dict[str, str]] = {FILLS: "exec_id_base", ORDERS: "event_key"}

F8, I8, STR, TS = "float64", "int64", "object", "datetime64[ns]"

SCHEMAS: Final[dict[str, dict[str, str]]] = {
    FILLS: {
        "exec_id": STR,
        "exec_id_base": STR,
        "revision": I8,
        "order_id": I8,
        "perm_id": I8,
        "order_ref": STR,
        "strategy": STR,
        "symbol": STR,
        "con_id": I8,
        "sec_type": STR,
        "currency": STR,
        "multiplier": F8,
        "expiry": STR,
        "strike": F8,
        "right": STR,
        "exchange": STR,
        "side": STR,
        "qty": F8,
        "price": F8,
        "commission": F8,  # NaN until the report arrives
        "commission_currency": STR,
        "broker_realized_pnl": F8,  # NaN unless reported
        "recorded_at": TS,
        "seq": I8,  # write-ahead journal sequence number (the watermark)
        # The execution time exactly as received (the index may carry nanosecond offsets that
        # make equal times unique): the ledger's dedupe compares it after a restart.
        "exec_time": TS,
    },
    ORDERS: {
        # identity of the status event; a re-sent event with changed fields replaces its row
        "event_key": STR,
        "order_id": I8,
        "perm_id": I8,
        "client_id": I8,
        "order_ref": STR,
        "strategy": STR,
        "con_id": I8,
        "symbol": STR,
        "sec_type": STR,
        "side": STR,
        "order_type": STR,
        "total_qty": F8,
        "filled_qty": F8,
        "remaining_qty": F8,
        "avg_fill_price": F8,
        "lmt_price": F8,
        "status": STR,
        "why_held": STR,
        "recorded_at": TS,
        "seq": I8,
    },
    POSITIONS: {
        "account": STR,
        "symbol": STR,
        "con_id": I8,
        "sec_type": STR,
        "currency": STR,
        "multiplier": F8,
        "qty": F8,  # signed
        "avg_cost": F8,  # price units; NaN when flat
        "realized_pnl": F8,  # gross of commissions
        "commissions": F8,  # known commissions (NaN when mixed currencies)
        "commission_currency": STR,
        "commissions_pending": I8,  # fills whose commission report has not arrived
        "unrealized_pnl": F8,
        "mark_price": F8,
        "fill_count": I8,
        "last_updated": TS,
        "last_exec_id": STR,
        # Price range of the fills that opened the current side (NaN when flat): with qty,
        # avg_cost and realized_pnl, the whole fold state, so a restart restores the position
        # without refolding its fills.
        "open_price_min": F8,
        "open_price_max": F8,
        "watermark": I8,
    },
    PORTFOLIO: {
        "timestamp": TS,
        "strategy": STR,  # a strategy name, or "_residual" for reconciliation rows
        "con_id": I8,
        "symbol": STR,
        "sec_type": STR,
        "currency": STR,
        "multiplier": F8,
        "qty": F8,
        "avg_cost": F8,
        "realized_pnl": F8,
        "unrealized_pnl": F8,
        "mark_price": F8,
        "source": STR,  # "ledger" or "reconciliation"
    },
    REJECTS: {
        "raw": STR,  # the message as text (JSON where possible)
        "reason": STR,
        "field": STR,
        "received_at": TS,
        "seq": I8,
    },
    RECONCILIATION: {
        "run_id": STR,
        "started_at": TS,
        "finished_at": TS,
        "gateway": STR,
        "outcome": STR,  # clean | breaks | failed
        "report": STR,  # the full report as JSON (broker rows, strategy sums, residuals, breaks)
        "breaks": I8,
    },
}
