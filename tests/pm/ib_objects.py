"""Builders of REAL ib_async objects (Trade, Fill, Execution, CommissionReport, Contract, Order,
OrderStatus) and of the equivalent plain-dict messages, plus store readers for PM tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from ib_async import (
    CommissionReport,
    Contract,
    Execution,
    Fill,
    Order,
    OrderStatus,
    Trade,
    TradeLogEntry,
)

from backend.storage import open_store

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
ACCOUNT = "DU111"
AAPL: dict[str, Any] = {"conId": 265598, "symbol": "AAPL", "secType": "STK", "currency": "USD",
                        "exchange": "SMART"}
ES: dict[str, Any] = {"conId": 495512563, "symbol": "ES", "secType": "FUT", "currency": "USD",
                      "exchange": "CME", "multiplier": "50",
                      "lastTradeDateOrContractMonth": "20261218"}
MSFT: dict[str, Any] = {"conId": 272093, "symbol": "MSFT", "secType": "STK", "currency": "USD",
                        "exchange": "SMART"}


def exec_id(n: int, revision: int = 1) -> str:
    return f"0000e215.{n:08x}.01.{revision:02x}"


def ib_fill(n: int, side: str, qty: float, price: float, *, account: str = ACCOUNT,
            contract: dict[str, Any] | None = None, revision: int = 1,
            seconds: float | None = None, commission: float | None = None,
            order_ref: str = "", order_id: int | None = None) -> Fill:
    """ib_async Fill number ``n`` at T0 + n s; ``commission=None``: report not arrived yet."""
    eid = exec_id(n, revision)
    at = T0 + timedelta(seconds=n if seconds is None else seconds)
    execution = Execution(execId=eid, time=at, acctNumber=account, exchange="NYSE", side=side,
                          shares=qty, price=price, permId=5000 + (order_id or n),
                          orderId=order_id or n, orderRef=order_ref, cumQty=qty, avgPrice=price)
    report = CommissionReport() if commission is None else CommissionReport(
        execId=eid, commission=commission, currency="USD")
    # Fill.time is the arrival time in ib_async: deliberately NOT the execution time.
    return Fill(Contract(**(contract or AAPL)), execution, report, datetime.now(UTC))


def ib_trade(order_id: int, action: str, qty: float, *, contract: dict[str, Any] | None = None,
             status: str = "Submitted", filled: float = 0.0, lmt: float = 100.0,
             account: str = ACCOUNT, order_ref: str = "", perm_id: int | None = None,
             fills: list[Fill] | None = None, log_time: datetime | None = None) -> Trade:
    perm = 5000 + order_id if perm_id is None else perm_id
    order = Order(orderId=order_id, clientId=7, permId=perm, action=action, totalQuantity=qty,
                  orderType="LMT", lmtPrice=lmt, orderRef=order_ref, account=account)
    order_status = OrderStatus(orderId=order_id, status=status, filled=filled,
                               remaining=qty - filled, avgFillPrice=lmt if filled else 0.0,
                               permId=perm, clientId=7)
    log = [TradeLogEntry(time=log_time or T0 + timedelta(seconds=order_id), status=status)]
    return Trade(contract=Contract(**(contract or AAPL)), order=order, orderStatus=order_status,
                 fills=list(fills or []), log=log)


def fill_msg(strategy: str, fill: Any, trade: Any = None) -> dict[str, Any]:
    return {"type": "fill", "strategy": strategy, "trade": trade, "fill": fill}


def status_msg(strategy: str, trade: Any, status: str | None = None) -> dict[str, Any]:
    return {"type": "status_change", "strategy": strategy, "trade": trade,
            "status": status or trade.orderStatus.status}


def dict_fill(n: int, side: str, qty: float, price: float, *, account: str = ACCOUNT,
              contract: dict[str, Any] | None = None, revision: int = 1,
              seconds: float | None = None, commission: float | None = None,
              order_ref: str = "") -> dict[str, Any]:
    """The plain nested-dict form of a fill (ib_async's field names, ISO-8601 text times)."""
    eid = exec_id(n, revision)
    at = T0 + timedelta(seconds=n if seconds is None else seconds)
    return {
        "contract": dict(contract or AAPL),
        "execution": {"execId": eid, "time": at.isoformat(), "acctNumber": account,
                      "exchange": "NYSE", "side": side, "shares": qty, "price": price,
                      "permId": 5000 + n, "orderId": n, "orderRef": order_ref},
        "commissionReport": None if commission is None else {
            "execId": eid, "commission": commission, "currency": "USD", "realizedPNL": 0.0},
        "time": datetime.now(UTC).isoformat(),
    }


def read(uri: str, library: str, symbol: str) -> pd.DataFrame:
    """Read with a separate reader store (no lease), as a notebook would."""
    store = open_store(uri, writer=False)
    try:
        return store.read(library, symbol)
    finally:
        store.close()


VOLATILE = {"recorded_at", "seq", "watermark"}


def stable(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """A frame without run-dependent columns, sorted by ``key``, for equality checks."""
    out = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
    return out.sort_values(key).reset_index(drop=True)
