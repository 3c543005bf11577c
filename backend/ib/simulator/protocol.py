"""TWS API wire format at server version 178: framing, value formatting and message encoders.

Every encoder returns the message as a list of text fields (field 0 is the message id); the
server frames it with :func:`frame`. Each encoder follows ib_async 2.1.0's ``decoder.py`` field by
field, because that decoder unpacks many messages with an exact field count and only *logs*
a mismatch ("Error handling fields"), so a wrong count shows up as silently missing data.
Comments give the field counts the decoder expects.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from backend.ib.simulator.scenario import (
    CommissionSpec,
    ContractSpec,
    ExecutionSpec,
    OrderSpec,
)

SERVER_VERSION = 178
# Versions the encoders can also speak (ib_async's decoder differs only in faProfile < 177 and
# pendingPriceRevision >= 178 for the messages sent here); for catching version-gated bugs.
SUPPORTED_SERVER_VERSIONS = range(170, 179)
MIN_CLIENT_VERSION = 157
# IB's "unset double" marker, as TWS writes it on the wire.
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"

Fields = list[str]


# --------------------------------------------------------------------------- framing


def frame(fields: Sequence[str]) -> bytes:
    """Length-prefixed payload of NUL-terminated fields (both directions use this)."""
    payload = b"".join(f.encode() + b"\0" for f in fields)
    return struct.pack(">I", len(payload)) + payload


def split_payload(payload: bytes) -> Fields:
    """Fields of one frame payload; the trailing empty string after the last NUL is dropped."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


class FrameBuffer:
    """Incremental frame splitter for a byte stream (handles partial and merged TCP reads)."""

    def __init__(self) -> None:
        self._data = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._data += data
        out: list[bytes] = []
        while len(self._data) >= 4:
            (size,) = struct.unpack(">I", self._data[:4])
            if len(self._data) < 4 + size:
                break
            out.append(self._data[4 : 4 + size])
            self._data = self._data[4 + size :]
        return out


def parse_version_range(text: str) -> tuple[int, int]:
    """``"v157..178 +PACEAPI"`` -> (157, 178)."""
    head = text.split(" ", 1)[0].lstrip("v")
    lo, _, hi = head.partition("..")
    return int(lo), int(hi or lo)


# --------------------------------------------------------------------------- values


def fmt_num(value: float) -> str:
    """Numbers as TWS writes them: integral values without a fraction ("100", not "100.0")."""
    if value != value:  # NaN never goes on the wire
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def fmt_price(value: float) -> str:
    """Prices always carry a decimal point ("0.0", "101.25"), as in real captures."""
    return repr(float(value))


def fmt_bool(value: bool) -> str:
    return "1" if value else "0"


def contract11(c: ContractSpec, *, exchange: str | None = None) -> Fields:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
    localSymbol, tradingClass (the 11-field contract block of openOrder/completedOrder)."""
    return [
        str(c.con_id),
        c.symbol,
        c.sec_type,
        c.expiry,
        fmt_price(c.strike),
        c.right,
        c.multiplier,
        c.exchange if exchange is None else exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    ]


# --------------------------------------------------------------------------- connection


def handshake_reply(conn_time: str, sv: int = SERVER_VERSION) -> Fields:
    """Exactly 2 fields: ib_async takes the first 2-field message as the handshake answer."""
    return [str(sv), conn_time]


def managed_accounts(accounts: Iterable[str]) -> Fields:
    return ["15", "1", ",".join(accounts)]  # exact 3


def next_valid_id(order_id: int) -> Fields:
    return ["9", "1", str(order_id)]  # exact 3


def error(req_id: int, code: int, message: str, advanced_json: str = "") -> Fields:
    # advancedOrderRejectJson exists since sv 166 and the decoder unpacks it.
    return ["4", "2", str(req_id), str(code), message, advanced_json]


def current_time(epoch_seconds: int) -> Fields:
    return ["49", "1", str(epoch_seconds)]


# --------------------------------------------------------------------------- account


def position(account: str, c: ContractSpec, qty: float, avg_cost: float) -> Fields:
    # exact 16; real TWS leaves exchange empty in position rows.
    return [
        "61", "3", account, str(c.con_id), c.symbol, c.sec_type, c.expiry,
        fmt_price(c.strike), c.right, c.multiplier, "", c.currency, c.local_symbol,
        c.trading_class, fmt_num(qty), fmt_price(avg_cost),
    ]  # fmt: skip


def position_end() -> Fields:
    return ["62", "1"]


def account_value(key: str, value: str, currency: str, account: str) -> Fields:
    return ["6", "2", key, value, currency, account]


@dataclass(frozen=True)
class PortfolioRow:
    """One updatePortfolio row (IB's units: avg_cost = price x multiplier)."""

    account: str
    contract: ContractSpec
    qty: float
    market_price: float
    market_value: float
    avg_cost: float
    unrealized_pnl: float
    realized_pnl: float


def portfolio_value(row: PortfolioRow) -> Fields:
    c = row.contract
    # exact 20; portfolio rows carry primaryExchange where other messages have exchange.
    return [
        "7", "8", str(c.con_id), c.symbol, c.sec_type, c.expiry, fmt_price(c.strike),
        c.right, c.multiplier, c.primary_exchange, c.currency, c.local_symbol,
        c.trading_class, fmt_num(row.qty), fmt_price(row.market_price),
        fmt_price(row.market_value), fmt_price(row.avg_cost), fmt_price(row.unrealized_pnl),
        fmt_price(row.realized_pnl), row.account,
    ]  # fmt: skip


def account_time(hh_mm: str) -> Fields:
    return ["8", "1", hh_mm]


def account_download_end(account: str) -> Fields:
    return ["54", "1", account]


def account_update_multi(
    req_id: int, account: str, key: str, value: str, currency: str, model_code: str = ""
) -> Fields:
    return ["73", "1", str(req_id), account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return ["74", "1", str(req_id)]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return ["63", "1", str(req_id), account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return ["64", "1", str(req_id)]


# --------------------------------------------------------------------------- executions


def exec_details(
    req_id: int, e: ExecutionSpec, c: ContractSpec, sv: int = SERVER_VERSION
) -> Fields:
    # No version field since sv 136; pendingPriceRevision is required at sv 178 (32 fields).
    f = [
        "11", str(req_id), str(e.order_id), str(c.con_id), c.symbol, c.sec_type, c.expiry,
        fmt_price(c.strike), c.right, c.multiplier, e.exchange, c.currency, c.local_symbol,
        c.trading_class, e.exec_id, e.ib_time(), e.account, e.exchange, e.side,
        fmt_num(e.shares), fmt_price(e.price), str(e.perm_id), str(e.client_id),
        str(e.liquidation), fmt_num(e.cum_qty or e.shares), fmt_price(e.avg_price or e.price),
        e.order_ref, "", "", "", str(e.last_liquidity),
    ]  # fmt: skip
    return [*f, fmt_bool(False)] if sv >= 178 else f


def exec_details_end(req_id: int) -> Fields:
    return ["55", "1", str(req_id)]


def commission_report(exec_id: str, cr: CommissionSpec) -> Fields:
    # exact 8; an unset realized PnL / yield is IB's max double.
    realized = UNSET_DOUBLE_TEXT if cr.realized_pnl is None else fmt_price(cr.realized_pnl)
    return [
        "59", "1", exec_id, fmt_price(cr.commission), cr.currency, realized,
        UNSET_DOUBLE_TEXT, "",
    ]  # fmt: skip


# --------------------------------------------------------------------------- orders


def _order_head(o: OrderSpec) -> Fields:
    """action … goodAfterTime, shared by openOrder and completedOrder (minus ids)."""
    return [
        o.action, fmt_num(o.total_qty), o.order_type, fmt_price(o.lmt_price),
        fmt_price(o.aux_price), o.tif, "", o.account, "O", "0", o.order_ref,
    ]  # fmt: skip


@dataclass(frozen=True)
class WhatIfMargins:
    """Margin impact reported for a what-if order (IB sends these as text)."""

    init_change: float
    maint_change: float
    equity_with_loan: float
    commission: float
    currency: str = "USD"


def open_order(
    o: OrderSpec,
    c: ContractSpec,
    what_if: WhatIfMargins | None = None,
    sv: int = SERVER_VERSION,
) -> Fields:
    """135 fields at sv 178 (no version since sv 145, no faProfile since sv 177)."""
    f: Fields = ["5", str(o.order_id), *contract11(c)]
    f += _order_head(o)  # action … orderRef (11)
    f += [str(o.client_id), str(o.perm_id), "0", "0", "0", ""]  # clientId … goodAfterTime
    f += [f"0/{o.account}/{fmt_num(o.total_qty)}"]  # sharesAllocation (skipped by decoder)
    f += ["", "", ""]  # faGroup, faMethod, faPercentage
    f += [""] if sv < 177 else []  # faProfile
    f += [
        "",  # modelCode
        "",  # goodTillDate
        "0",  # rule80A
        "",  # percentOffset
        "",  # settlingFirm
        "0",  # shortSaleSlot
        "",  # designatedLocation
        "-1",  # exemptCode
        "0",  # auctionStrategy
        "", "", "", "", "",  # startingPrice, stockRefPrice, delta, stockRangeLower/Upper
        "",  # displaySize
        "0", "0", "0",  # blockOrder, sweepToFill, allOrNone
        "",  # minQty
        "3",  # ocaType
        "0", "0",  # eTradeOnly, firmQuoteOnly
        "",  # nbboPriceCap
        "0",  # parentId
        "0",  # triggerMethod
        "",  # volatility
        "0",  # volatilityType
        "None",  # deltaNeutralOrderType: TWS sends the literal "None" ...
        "",  # deltaNeutralAuxPrice
    ]  # fmt: skip
    f += ["", "", "", "", "", "", "", ""]  # ... so the decoder reads 8 delta-neutral extras
    f += ["0", "0", "", "", "", "", ""]  # continuousUpdate … comboLegsDescrip
    f += ["0", "0", "0"]  # comboLegs, orderComboLegs, smartComboRoutingParams counts
    f += ["", "", ""]  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement (unset)
    f += [""]  # hedgeType (empty: no hedgeParam)
    f += ["0", "", "IB", "0", "0"]  # optOutSmartRouting, clearing*, notHeld, dncPresent
    f += [""]  # algoStrategy (empty: no params)
    f += ["0", fmt_bool(what_if is not None), o.status]  # solicited, whatIf, status
    if what_if is None:
        f += [UNSET_DOUBLE_TEXT] * 9  # margin before/change/after
        f += ["", "", "", "", ""]  # commission, min/max, currency, warningText
    else:
        w = what_if
        eq = fmt_price(w.equity_with_loan)
        f += ["0.0", "0.0", eq]  # before
        f += [fmt_price(w.init_change), fmt_price(w.maint_change), "0.0"]  # change
        f += [fmt_price(w.init_change), fmt_price(w.maint_change), eq]  # after
        f += [fmt_price(w.commission), fmt_price(w.commission), fmt_price(w.commission)]
        f += [w.currency, ""]
    f += ["0", "0"]  # randomizeSize, randomizePrice
    f += ["0"]  # conditions count
    f += ["None", "", "", "", "", "", "", "0"]  # adjustedOrderType … adjustableTrailingUnit
    f += ["", "", ""]  # softDollarTier name, val, displayName
    f += ["", "0", "0", "0", "0"]  # cashQty … usePriceMgmtAlgo
    f += ["", "0", "0"]  # duration (159), postToAts (160), autoCancelParent (162)
    f += ["", "", "", "", ""]  # minTradeQty … midOffsetAtHalf (170)
    return f


def order_status(o: OrderSpec) -> Fields:
    # No version since sv 131: orderId, status, filled, remaining, avgFillPrice, permId,
    # parentId, lastFillPrice, clientId, whyHeld, mktCapPrice.
    return [
        "3", str(o.order_id), o.status, fmt_num(o.filled), fmt_num(o.remaining),
        fmt_price(o.avg_fill_price), str(o.perm_id), "0", fmt_price(o.last_fill_price),
        str(o.client_id), "", "0.0",
    ]  # fmt: skip


def open_order_end() -> Fields:
    return ["53", "1"]


def completed_order(o: OrderSpec, c: ContractSpec, sv: int = SERVER_VERSION) -> Fields:
    """96 fields at sv 178: no version, no orderId, no clientId."""
    f: Fields = ["101", *contract11(c)]
    f += _order_head(o)  # action … orderRef
    f += [str(o.perm_id), "0", "0", "0", ""]  # permId, outsideRth, hidden, discAmt, gAT
    f += ["", "", ""]  # faGroup, faMethod, faPercentage
    f += [""] if sv < 177 else []  # faProfile
    f += [
        "", "", "0", "", "", "0", "", "-1",  # modelCode … exemptCode
        "", "", "", "", "", "",  # startingPrice … displaySize
        "0", "0", "",  # sweepToFill, allOrNone, minQty
        "3", "0", "", "0",  # ocaType, triggerMethod, volatility, volatilityType
        "", "",  # deltaNeutralOrderType (empty: no extras), deltaNeutralAuxPrice
    ]  # fmt: skip
    f += ["0", "0", "", "", ""]  # continuousUpdate … comboLegsDescrip
    f += ["0", "0", "0"]  # comboLegs, orderComboLegs, smartComboRoutingParams counts
    f += ["", "", ""]  # scale sizes + increment (unset)
    f += [""]  # hedgeType
    f += ["", "IB", "0", "0"]  # clearingAccount, clearingIntent, notHeld, dncPresent
    f += [""]  # algoStrategy
    f += ["0", o.status, "0", "0"]  # solicited, status, randomizeSize, randomizePrice
    f += ["0"]  # conditions count
    f += [
        "", "", "", "0", "0", "",  # trailStopPrice … autoCancelDate
        fmt_num(o.filled), "0", "0", "", "0", "0",  # filledQuantity … routeMarketableToBbo
        "0",  # parentPermId
        o.completed_time, o.completed_status or o.status,
    ]  # fmt: skip
    f += ["", "", "", "", ""]  # peg fields (170)
    return f


def completed_orders_end() -> Fields:
    return ["102"]


# --------------------------------------------------------------------------- contracts, quotes


def contract_details(req_id: int, c: ContractSpec) -> Fields:
    # No version field and no mdSizeMultiplier since sv 164; size rules at the end.
    return [
        "10", str(req_id), c.symbol, c.sec_type, c.expiry, fmt_price(c.strike), c.right,
        c.exchange, c.currency, c.local_symbol, c.market_name or c.trading_class,
        c.trading_class, str(c.con_id), fmt_price(c.min_tick), c.multiplier,
        "LMT,MKT", c.exchange, "1", "0", c.long_name, c.primary_exchange, c.expiry[:6],
        "", "", "", "US/Eastern", "", "", "", "", "0",  # industry … evMultiplier, numSecIds
        "0", "", "", "", "", "", "0.0001" if c.sec_type == "CASH" else "1", "1", "1",
    ]  # fmt: skip


def contract_details_end(req_id: int) -> Fields:
    return ["52", "1", str(req_id)]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return ["58", "1", str(req_id), str(data_type)]


def tick_price(req_id: int, tick_type: int, price: float, size: float) -> Fields:
    # exact 7: version, reqId, tickType, price, size, attrMask
    return ["1", "6", str(req_id), str(tick_type), fmt_price(price), fmt_num(size), "0"]


def tick_size(req_id: int, tick_type: int, size: float) -> Fields:
    return ["2", "6", str(req_id), str(tick_type), fmt_num(size)]


def tick_snapshot_end(req_id: int) -> Fields:
    return ["57", "1", str(req_id)]
