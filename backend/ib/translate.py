"""Pure translation of ib_async objects into the core types. No I/O, no event loop.

Identity is ``conId`` (and the account): the same instrument arrives with different fields
per source (a position has no exchange, a portfolio item has ``primaryExchange``, an execution
carries its venue), so nothing here joins or keys on symbols or on ib_async's ``Contract``.

Units: IB's ``averageCost`` is price x multiplier; core types hold price units, so
:func:`broker_position` divides. Unknown numbers become NaN, never 0 (see
:mod:`backend.core.model`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ib_async import CommissionReport as IBCommissionReport
from ib_async import Contract, PortfolioItem, Ticker
from ib_async import Fill as IBFill
from ib_async import Position as IBPosition

from backend.core.broker import BrokerExecution, BrokerPosition
from backend.core.model import (
    NAN,
    UNATTRIBUTED,
    CommissionReport,
    Fill,
    Instrument,
    Side,
    is_flat,
)
from backend.errors import InvalidFieldError

# IB's "no value" double (Double.MAX_VALUE); ib_async leaves it in some fields.
UNSET_DOUBLE_FLOOR = 1e300

# Security types whose multiplier is 1 when IB leaves the field empty. For the others
# (futures, options, ...) an empty multiplier is refused: guessing 1 would silently scale the
# PnL of a x50 future by 1/50.
_UNIT_MULTIPLIER_TYPES = frozenset({"STK", "CASH", "IND", "CRYPTO", "BOND", "CMDTY", "FUND",
                                    "CFD", "ETF", ""})

FillMessage = dict[str, Any]


def _unknown(value: float) -> bool:
    return math.isnan(value) or abs(value) >= UNSET_DOUBLE_FLOOR


def parse_multiplier(sec_type: str, text: object) -> float:
    """IB's multiplier field (a string such as ``"50"``) as a positive float."""
    raw = str(text).strip() if text is not None else ""
    if raw in ("", "0", "0.0", "?"):
        if sec_type in _UNIT_MULTIPLIER_TYPES:
            return 1.0
        raise InvalidFieldError("multiplier", text, f"missing for secType {sec_type!r}")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidFieldError("multiplier", text, "not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidFieldError("multiplier", text, "must be a positive number")
    return value


def instrument(contract: Contract) -> Instrument:
    """The core :class:`Instrument` of an ib_async ``Contract`` (needs a conId)."""
    strike = float(contract.strike or 0.0)
    if _unknown(strike):
        strike = 0.0
    return Instrument(
        con_id=int(contract.conId),
        symbol=contract.symbol or "",
        sec_type=contract.secType or "STK",
        currency=contract.currency or "",
        multiplier=parse_multiplier(contract.secType or "", contract.multiplier),
        # A position has no exchange, a portfolio item only primaryExchange.
        exchange=contract.exchange or contract.primaryExchange or "",
        expiry=contract.lastTradeDateOrContractMonth or "",
        strike=strike,
        right=contract.right or "",
        local_symbol=contract.localSymbol or "",
    )


def _price_units(average_cost: float, qty: float, multiplier: float) -> float:
    if is_flat(qty) or _unknown(average_cost):
        return NAN  # IB sends 0 for a flat row: there is no average
    return average_cost / multiplier


def broker_position(position: IBPosition, item: PortfolioItem | None = None) -> BrokerPosition:
    """One reqPositions row, enriched by the account's portfolio item for the same conId.

    ``item`` must belong to the same (account, conId); that is checked, never assumed.
    """
    inst = instrument(position.contract)
    qty = float(position.position)
    market_price = unrealized = realized = NAN
    if item is not None:
        if item.account != position.account or item.contract.conId != position.contract.conId:
            raise InvalidFieldError(
                "portfolio_item", (item.account, item.contract.conId),
                f"does not match position ({position.account!r}, {position.contract.conId})")
        market_price = _known_or_nan(item.marketPrice)
        unrealized = _known_or_nan(item.unrealizedPNL)
        realized = _known_or_nan(item.realizedPNL)
    return BrokerPosition(
        account=position.account,
        instrument=inst,
        qty=0.0 if is_flat(qty) else qty,
        avg_cost=_price_units(float(position.avgCost), qty, inst.multiplier),
        market_price=market_price,
        unrealized_pnl=unrealized,
        realized_pnl=realized,
    )


def position_from_portfolio(item: PortfolioItem) -> BrokerPosition:
    """A portfolio item as a position (for items that reqPositions did not list)."""
    inst = instrument(item.contract)
    qty = float(item.position)
    return BrokerPosition(
        account=item.account,
        instrument=inst,
        qty=0.0 if is_flat(qty) else qty,
        avg_cost=_price_units(float(item.averageCost), qty, inst.multiplier),
        market_price=_known_or_nan(item.marketPrice),
        unrealized_pnl=_known_or_nan(item.unrealizedPNL),
        realized_pnl=_known_or_nan(item.realizedPNL),
    )


def _known_or_nan(value: float) -> float:
    out = float(value)
    return NAN if _unknown(out) else out


def commission_known(fill: IBFill) -> bool:
    """True once IB's commission report for this fill arrived.

    ib_async creates every Fill with an empty ``CommissionReport()`` (execId ``""``) and
    patches it in place when the report comes, so the execId is the tell, not the amount.
    """
    report = fill.commissionReport
    return bool(report.execId) and report.execId == fill.execution.execId


def commission(report: IBCommissionReport) -> CommissionReport | None:
    """The core report, or None for ib_async's empty placeholder (not arrived yet)."""
    if not report.execId:
        return None
    amount = float(report.commission)
    realized = float(report.realizedPNL)
    # ib_async turns IB's "unset" realizedPNL into 0.0, so 0.0 cannot be told from "none":
    # it is stored as unknown (the ledger computes its own realized PnL anyway).
    return CommissionReport(
        exec_id=report.execId,
        commission=NAN if _unknown(amount) else amount,
        currency=report.currency or "",
        realized_pnl=NAN if _unknown(realized) or realized == 0.0 else realized,
    )


def fill(ib_fill: IBFill, strategy: str | None = None) -> Fill:
    """The core :class:`Fill` of an ib_async Fill.

    ``strategy`` wins when given; else the order's ``orderRef``; else ``_unattributed``.
    The time is the execution time IB reported (``execution.time``), not ib_async's
    ``Fill.time``, which is the packet arrival time for live fills.
    """
    ex = ib_fill.execution
    return Fill(
        exec_id=ex.execId,
        account=ex.acctNumber,
        strategy=strategy or ex.orderRef or UNATTRIBUTED,
        instrument=instrument(ib_fill.contract),
        side=Side.parse(ex.side),
        qty=float(ex.shares),
        price=float(ex.price),
        time=ex.time,
        order_id=int(ex.orderId or 0),
        perm_id=int(ex.permId or 0),
        order_ref=ex.orderRef or "",
        exchange=ex.exchange or "",
    )


def broker_execution(ib_fill: IBFill) -> BrokerExecution:
    report = commission(ib_fill.commissionReport) if commission_known(ib_fill) else None
    return BrokerExecution(fill=fill(ib_fill), commission=report)


def fill_message(ib_fill: IBFill, strategy: str = "", trade: object = None) -> FillMessage:
    """The queue message of docs/events.md for one fill."""
    return {"type": "fill", "strategy": strategy, "trade": trade, "fill": ib_fill}


def quote_price(ticker: Ticker) -> float:
    """The best price of a snapshot ticker: last inside bid/ask, else mid, else close; or NaN."""
    for value in (ticker.marketPrice(), ticker.close):
        price = float(value) if value is not None else NAN
        if not _unknown(price) and price > 0:
            return price
    return NAN


def account_values(rows: Iterable[tuple[str, str, str]]) -> dict[str, str]:
    """(tag, value, currency) rows as ``tag -> value``.

    A tag that comes in one currency only is keyed by the tag; a tag in several currencies
    (``CashBalance`` per currency) by ``tag:CURRENCY`` for each, so nothing is overwritten.
    """
    by_tag: dict[str, dict[str, str]] = {}
    for tag, value, currency in rows:
        by_tag.setdefault(tag, {})[currency] = value
    out: dict[str, str] = {}
    for tag, per_ccy in by_tag.items():
        if len(per_ccy) == 1:
            out[tag] = next(iter(per_ccy.values()))
        else:
            for currency, value in per_ccy.items():
                out[f"{tag}:{currency}" if currency else tag] = value
    return out
