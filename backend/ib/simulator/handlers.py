"""Answers to client requests (client -> server message ids as ib_async's ``client.py`` sends).

Each handler takes the simulator, the session and the request's fields. Fault knobs that
replace an answer (request errors, drops) are applied by the dispatcher in ``server.py``;
End messages go through ``sim.send_end`` so they can be delayed or omitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from backend.errors import InvalidMessageError
from backend.ib.simulator import protocol as p
from backend.ib.simulator.exchange import Event
from backend.ib.simulator.faults import corrected_exec_id
from backend.ib.simulator.parse import parse_place_order
from backend.ib.simulator.scenario import ContractSpec, ExecutionSpec, OrderSpec, QuoteSpec
from backend.ib.simulator.session import Session

if TYPE_CHECKING:
    from backend.ib.simulator.server import GatewaySimulator

Handler = Callable[["GatewaySimulator", Session, list[str]], None]

# client -> server message id: (request name, handler name); name is the fault-knob key
REQUESTS: dict[int, str] = {
    1: "reqMktData",
    2: "cancelMktData",
    3: "placeOrder",
    4: "cancelOrder",
    5: "reqOpenOrders",
    6: "reqAccountUpdates",
    7: "reqExecutions",
    8: "reqIds",
    9: "reqContractDetails",
    15: "reqAutoOpenOrders",
    16: "reqAllOpenOrders",
    17: "reqManagedAccts",
    49: "reqCurrentTime",
    59: "reqMarketDataType",
    61: "reqPositions",
    62: "reqAccountSummary",
    63: "cancelAccountSummary",
    64: "cancelPositions",
    76: "reqAccountUpdatesMulti",
    77: "cancelAccountUpdatesMulti",
    58: "reqGlobalCancel",
    99: "reqCompletedOrders",
}

# request name -> index of its reqId field (for error replies); absent: reqId -1
REQ_ID_INDEX: dict[str, int] = {
    "reqMktData": 2,
    "placeOrder": 1,
    "cancelOrder": 2,
    "reqExecutions": 2,
    "reqContractDetails": 2,
    "reqAccountSummary": 2,
    "reqAccountUpdatesMulti": 2,
}


def _f(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _num(text: str, default: float = 0.0) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def match_contracts(sim: GatewaySimulator, c12: list[str]) -> list[ContractSpec]:
    """Contracts matching the 12-field block conId … tradingClass (IB's lookup, simplified)."""
    con_id, symbol, sec_type, expiry, strike, right, mult = c12[:7]
    currency, local_symbol, trading_class = c12[9], c12[10], c12[11]
    contracts = sim.exchange.contracts
    if con_id and con_id != "0":
        c = contracts.get(int(con_id))
        return [c] if c else []
    out = []
    for c in contracts.values():
        if symbol and c.symbol.upper() != symbol.upper():
            continue
        if local_symbol and c.local_symbol != local_symbol:
            continue
        if not symbol and not local_symbol:
            continue
        if sec_type and c.sec_type != sec_type:
            continue
        if currency and c.currency != currency:
            continue
        if expiry and not c.expiry.startswith(expiry):
            continue
        if _num(strike) and _num(strike) != c.strike:
            continue
        if right and right[:1].upper() != c.right[:1].upper():
            continue
        if mult and _num(mult) != c.mult:
            continue
        if trading_class and c.trading_class != trading_class:
            continue
        out.append(c)
    return out


# ------------------------------------------------------------------ account & positions


def req_positions(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    ex = sim.exchange
    for (acct, con_id), pos in ex.positions.items():
        s.send(p.position(acct, ex.contract(con_id), pos.qty, pos.avg_cost))
    s.subs.positions = True
    sim.send_end(s, "positionEnd", p.position_end())


def cancel_positions(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.subs.positions = False


def _values_for(sim: GatewaySimulator, account: str) -> list[tuple[str, str, str]]:
    values = sim.exchange.account_values
    return [(v.key, v.value, v.currency) for v in values if v.account == account]


def req_account_updates(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    subscribe = _f(fields, 2) not in ("0", "", "False")
    account = _f(fields, 3) or sim.scenario.accounts[0]
    if not subscribe:
        s.subs.account = None
        return
    s.subs.account = account  # TWS keeps one reqAccountUpdates subscription per client
    for key, value, cur in _values_for(sim, account):
        s.send(p.account_value(key, value, cur, account))
    for row in sim.exchange.portfolio_rows(account):
        s.send(p.portfolio_value(row))
    s.send(p.account_time(sim.now().strftime("%H:%M")))
    sim.send_end(s, "accountDownloadEnd", p.account_download_end(account))


def req_account_updates_multi(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    req_id = int(_f(fields, 2) or 0)
    account = _f(fields, 3)
    accounts = sim.scenario.accounts if account in ("", "All") else (account,)
    s.subs.multi[req_id] = tuple(accounts)
    for acct in accounts:
        for key, value, cur in _values_for(sim, acct):
            s.send(p.account_update_multi(req_id, acct, key, value, cur))
    sim.send_end(s, "accountUpdateMultiEnd", p.account_update_multi_end(req_id))


def cancel_account_updates_multi(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.subs.multi.pop(int(_f(fields, 2) or 0), None)


def req_account_summary(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    req_id = int(_f(fields, 2) or 0)
    tags = {t.strip() for t in _f(fields, 4).split(",") if t.strip()}
    for acct in sim.scenario.accounts:
        for key, value, cur in _values_for(sim, acct):
            if not tags or "All" in tags or key in tags:
                s.send(p.account_summary(req_id, acct, key, value, cur))
    sim.send_end(s, "accountSummaryEnd", p.account_summary_end(req_id))


def req_managed_accts(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.send(p.managed_accounts(sim.scenario.accounts))


# ------------------------------------------------------------------ executions


def _parse_filter_time(text: str) -> dt.datetime | None:
    """ExecutionFilter.time: 'yyyymmdd hh:mm:ss[ zone]' or 'yyyymmdd-hh:mm:ss' (UTC)."""
    text = text.strip()
    if not text:
        return None
    try:
        when = dt.datetime.strptime(text.replace("-", " ")[:17], "%Y%m%d %H:%M:%S")
    except ValueError:
        return None
    zone = text[18:].strip() if len(text) > 18 else ""
    tz = dt.UTC
    if zone:
        from zoneinfo import ZoneInfo

        try:
            return when.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)
        except (KeyError, ValueError):
            pass
    return when.replace(tzinfo=tz)


def exec_datetime(e: ExecutionSpec) -> dt.datetime:
    from zoneinfo import ZoneInfo

    day, clock, zone = e.ib_time().split(" ", 2)
    naive = dt.datetime.strptime(day + clock, "%Y%m%d%H:%M:%S")
    return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)


def filter_executions(sim: GatewaySimulator, fields: list[str]) -> list[ExecutionSpec]:
    client_id = int(_f(fields, 3) or 0)
    acct, since = _f(fields, 4), _parse_filter_time(_f(fields, 5))
    symbol, sec_type, exchange, side = (_f(fields, i) for i in (6, 7, 8, 9))
    side = {"BUY": "BOT", "SELL": "SLD"}.get(side.upper(), side.upper())
    out = []
    for e in sim.exchange.executions:
        c = sim.exchange.contract(e.con_id)
        if client_id and e.client_id != client_id:
            continue
        if acct and e.account != acct:
            continue
        if since and exec_datetime(e) < since:
            continue
        if symbol and c.symbol != symbol:
            continue
        if sec_type and c.sec_type != sec_type:
            continue
        if exchange and e.exchange != exchange:
            continue
        if side and e.side != side:
            continue
        out.append(e)
    return out


def with_corrections(sim: GatewaySimulator, execs: list[ExecutionSpec]) -> list[ExecutionSpec]:
    """Apply the ``exec_corrections`` knob: each listed exec is followed by its correction."""
    out: list[ExecutionSpec] = []
    for e in execs:
        out.append(e)
        fix = sim.faults.exec_corrections.get(e.exec_id)
        if fix is not None:
            out.append(
                ExecutionSpec(
                    **{
                        **e.__dict__,
                        "exec_id": corrected_exec_id(e.exec_id),
                        "shares": e.shares if fix.shares is None else fix.shares,
                        "price": e.price if fix.price is None else fix.price,
                    }
                )
            )
    return out


def req_executions(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    req_id = int(_f(fields, 2) or 0)
    execs = with_corrections(sim, filter_executions(sim, fields))
    mode = sim.faults.commission_mode
    later: list[list[str]] = []
    for e in execs:
        c = sim.exchange.contract(e.con_id)
        report = p.commission_report(e.exec_id, e.commission) if e.commission else None
        if report and mode == "before_exec":
            s.send(report)
        s.send(p.exec_details(req_id, e, c, s.server_version))
        if sim.faults.duplicate_exec_details:
            s.send(p.exec_details(req_id, e, c, s.server_version))
        if report and mode == "inline":
            s.send(report)
        elif report and mode == "after_end":
            later.append(report)
    sim.send_end(s, "execDetailsEnd", p.exec_details_end(req_id))
    if later:
        sim.send_later(s, sim.faults.commission_delay, later)


# ------------------------------------------------------------------ orders


def _send_orders(sim: GatewaySimulator, s: Session, orders: list[OrderSpec]) -> None:
    for o in orders:
        c = sim.exchange.contract(o.con_id)
        s.send(p.open_order(o, c, sv=s.server_version))
        s.send(p.order_status(o))
    sim.send_end(s, "openOrderEnd", p.open_order_end())


def req_open_orders(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    _send_orders(sim, s, sim.exchange.open_orders(s.client_id))


def req_all_open_orders(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    _send_orders(sim, s, sim.exchange.open_orders(None))


def req_auto_open_orders(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.subs.auto_bind = _f(fields, 2) not in ("0", "")


def req_completed_orders(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    for o in sim.exchange.completed:
        s.send(p.completed_order(o, sim.exchange.contract(o.con_id), s.server_version))
    sim.send_end(s, "completedOrdersEnd", p.completed_orders_end())


def place_order(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    try:
        req = parse_place_order(fields, s.server_version)
    except InvalidMessageError as exc:
        sim.error_to(s, int(_f(fields, 1) or 0), 321, f"Error validating request: {exc}")
        return
    matches = match_contracts(sim, req.contract)
    if len(matches) != 1:
        sim.error_to(s, req.order_id, 200, "No security definition has been found for the request")
        return
    order = OrderSpec(
        order_id=req.order_id,
        perm_id=0,
        client_id=s.client_id or 0,
        account=req.account or sim.scenario.accounts[0],
        con_id=matches[0].con_id,
        action=req.action,
        total_qty=req.total_qty,
        order_type=req.order_type,
        lmt_price=req.lmt_price,
        aux_price=req.aux_price,
        tif=req.tif,
        order_ref=req.order_ref,
        status="PreSubmitted",
    )
    if req.what_if:
        s.send(p.open_order(order, matches[0], what_if_margins(sim, order), s.server_version))
        return
    sim.dispatch(sim.exchange.place(order))


def what_if_margins(sim: GatewaySimulator, o: OrderSpec) -> p.WhatIfMargins:
    """A flat 25% initial / 20% maintenance margin on the order's notional."""
    c = sim.exchange.contract(o.con_id)
    px = sim.exchange.price(o.con_id) or o.lmt_price
    notional = abs(o.total_qty * px * c.mult)
    equity = next(
        (_num(v.value) for v in sim.exchange.account_values
         if v.account == o.account and v.key == "NetLiquidation"),
        0.0,
    )  # fmt: skip
    fee = sim.exchange.commission_for(o.con_id, o.total_qty)
    return p.WhatIfMargins(notional * 0.25, notional * 0.20, equity, fee)


def global_cancel(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    for o in sim.exchange.open_orders(None):
        sim.dispatch(sim.exchange.cancel(o.client_id, o.order_id))


def cancel_order(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    events: list[Event] = sim.exchange.cancel(s.client_id or 0, int(_f(fields, 2) or 0))
    sim.dispatch(events)


def req_ids(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.send(p.next_valid_id(sim.exchange.next_order_id))


# ------------------------------------------------------------------ contracts, quotes, time


def req_contract_details(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    req_id = int(_f(fields, 2) or 0)
    matches = match_contracts(sim, fields[3:15])
    if not matches:
        sim.error_to(s, req_id, 200, "No security definition has been found for the request")
        return
    for c in matches:
        s.send(p.contract_details(req_id, c))
    sim.send_end(s, "contractDetailsEnd", p.contract_details_end(req_id))


LIVE_TICKS = {"bid": 1, "ask": 2, "last": 4, "close": 9, "volume": 8}
DELAYED_TICKS = {"bid": 66, "ask": 67, "last": 68, "close": 75, "volume": 74}


def quote_ticks(req_id: int, q: QuoteSpec, md_type: int) -> list[list[str]]:
    ids = DELAYED_TICKS if md_type in (3, 4) else LIVE_TICKS
    out: list[list[str]] = []
    if q.bid is not None:
        out.append(p.tick_price(req_id, ids["bid"], q.bid, q.bid_size))
    if q.ask is not None:
        out.append(p.tick_price(req_id, ids["ask"], q.ask, q.ask_size))
    if q.last is not None:
        out.append(p.tick_price(req_id, ids["last"], q.last, q.last_size))
    if q.close is not None:
        out.append(p.tick_price(req_id, ids["close"], q.close, 0))
    if q.volume is not None:
        out.append(p.tick_size(req_id, ids["volume"], q.volume))
    return out


def req_mkt_data(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    req_id = int(_f(fields, 2) or 0)
    c12 = fields[3:15]
    i = 15
    if _f(fields, 5) == "BAG":  # secType; combo legs: count + 4 fields each
        i += 1 + 4 * int(_f(fields, 15) or 0)
    if _f(fields, i) == "1":  # delta-neutral contract: conId, delta, price
        i += 3
    snapshot = _f(fields, i + 2) == "1"
    matches = match_contracts(sim, c12)
    if len(matches) != 1:
        sim.error_to(s, req_id, 200, "No security definition has been found for the request")
        return
    con_id = matches[0].con_id
    md_type = s.subs.market_data_type or sim.scenario.market_data_type
    s.send(p.market_data_type(req_id, md_type))
    s.send_all(quote_ticks(req_id, sim.exchange.quote(con_id), md_type))
    if snapshot:
        sim.send_end(s, "tickSnapshotEnd", p.tick_snapshot_end(req_id))
    else:
        s.subs.market_data[req_id] = con_id


def cancel_mkt_data(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.subs.market_data.pop(int(_f(fields, 2) or 0), None)


def req_market_data_type(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.subs.market_data_type = int(_f(fields, 2) or 0)


def req_current_time(sim: GatewaySimulator, s: Session, fields: list[str]) -> None:
    s.send(p.current_time(int(sim.now().timestamp())))


HANDLERS: dict[str, Handler] = {
    "reqMktData": req_mkt_data,
    "cancelMktData": cancel_mkt_data,
    "placeOrder": place_order,
    "cancelOrder": cancel_order,
    "reqOpenOrders": req_open_orders,
    "reqAccountUpdates": req_account_updates,
    "reqExecutions": req_executions,
    "reqIds": req_ids,
    "reqContractDetails": req_contract_details,
    "reqAutoOpenOrders": req_auto_open_orders,
    "reqAllOpenOrders": req_all_open_orders,
    "reqManagedAccts": req_managed_accts,
    "reqCurrentTime": req_current_time,
    "reqMarketDataType": req_market_data_type,
    "reqPositions": req_positions,
    "reqAccountSummary": req_account_summary,
    "cancelAccountSummary": lambda sim, s, f: None,
    "cancelPositions": cancel_positions,
    "reqAccountUpdatesMulti": req_account_updates_multi,
    "cancelAccountUpdatesMulti": cancel_account_updates_multi,
    "reqCompletedOrders": req_completed_orders,
    "reqGlobalCancel": global_cancel,
}
