"""Queue messages -> domain events, and back to JSON (pure; ib_async is never imported).

A message is a mapping with a ``type``:

* ``{"type": "fill", "strategy": str, "trade": Trade | None, "fill": Fill}``
* ``{"type": "status_change", "strategy": str, "trade": Trade, "status": str}``

``trade`` and ``fill`` are ib_async objects or plain nested mappings with ib_async's field names
(``fill.execution.shares``, ``trade.order.orderRef`` ...): fields are read by name from either
(duck typing). Times are datetimes or ISO-8601 text; a time without an offset is UTC (that is
what ib_async produces). See docs/events.md for the whole contract.

Parsing either returns a :class:`FillMessage`/:class:`StatusMessage` or raises
:class:`InvalidMessageError` (structure: unknown type, missing field) or
:class:`InvalidFieldError` (a value), naming the field path (``fill.execution.shares``) and the
value. :func:`canonical` turns a parsed event back into the dict form, fully resolved (the
write-ahead journal stores that form; parsing it again gives the same event).
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple

from backend.core.model import (
    NAN,
    UNATTRIBUTED,
    CommissionReport,
    Fill,
    Instrument,
    Side,
    parse_exec_id,
    trusted_fill,
    trusted_report,
)
from backend.errors import InvalidFieldError, InvalidMessageError

FILL = "fill"
STATUS_CHANGE = "status_change"
MESSAGE_TYPES = (FILL, STATUS_CHANGE)

# ib_async marks "no value" doubles with sys.float_info.max (UNSET_DOUBLE).
_UNSET_LIMIT = 1e300
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MISSING: Any = object()


class FillMessage(NamedTuple):
    """A parsed ``fill`` message; ``commission`` is None when the report has not arrived."""

    fill: Fill
    commission: CommissionReport | None


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A parsed ``status_change`` message: one row of the ``orders`` library.

    ``con_id`` may be 0: an order placed with an unqualified contract reports PendingSubmit
    before IB has named the contract. ``time`` is when the status was logged on the trade
    (its last log entry with this status), else when the message was received.
    """

    account: str
    strategy: str
    order_id: int
    perm_id: int
    client_id: int
    order_ref: str
    con_id: int
    symbol: str
    sec_type: str
    side: str
    order_type: str
    total_qty: float
    filled_qty: float
    remaining_qty: float
    avg_fill_price: float
    lmt_price: float
    status: str
    why_held: str
    time: datetime
    # The full contract description when qualified (for the canonical form); not identity.
    instrument: Instrument | None = dataclasses.field(default=None, compare=False)

    @property
    def event_key(self) -> str:
        """Identity of the status event inside its account (see docs/events.md).

        (order, status, filled quantity): a re-sent status with the same fill progress is the
        same event (a cancel/replace changing price or quantity updates its row); a new status
        or new fill progress is a new event.
        """
        order = f"p{self.perm_id}" if self.perm_id else f"c{self.client_id}o{self.order_id}"
        return f"{order}|{self.status}|{self.filled_qty!r}"

    def content(self) -> tuple[object, ...]:
        """Everything but the time: equal content = an identical re-send (a no-op)."""
        return (self.strategy, self.order_id, self.perm_id, self.client_id, self.order_ref,
                self.con_id, self.symbol, self.sec_type, self.side, self.order_type,
                _nan_none(self.total_qty), _nan_none(self.filled_qty),
                _nan_none(self.remaining_qty), _nan_none(self.avg_fill_price),
                _nan_none(self.lmt_price), self.status, self.why_held)


Parsed = FillMessage | StatusMessage


def _nan_none(x: float) -> float | None:
    return None if math.isnan(x) else x


# ------------------------------------------------------------------- field access
# Types known not to be mappings (ib_async dataclasses): skips an ABC check per field.
_ATTRIBUTE_TYPES: set[type] = set()


def _get(obj: Any, name: str, path: str, default: Any = _MISSING) -> Any:
    kind = type(obj)
    if kind is dict:
        value = obj.get(name, _MISSING)
    elif kind in _ATTRIBUTE_TYPES:
        value = getattr(obj, name, _MISSING)
    elif isinstance(obj, Mapping):
        value = obj.get(name, _MISSING)
    else:
        if len(_ATTRIBUTE_TYPES) < 256:
            _ATTRIBUTE_TYPES.add(kind)
        value = getattr(obj, name, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise InvalidMessageError(f"{path}.{name}" if path else name, None, "missing")
        return default
    return value


def _obj(parent: Any, name: str, path: str) -> Any:
    value = _get(parent, name, path)
    where = f"{path}.{name}" if path else name
    if value is None or isinstance(value, str | int | float | bool):
        raise InvalidMessageError(where, value, "must be an object or a mapping")
    return value


def _str(parent: Any, name: str, path: str, default: Any = _MISSING) -> str:
    # ib_async objects (known attribute types): one getattr, no helper call.
    value = (getattr(parent, name, _MISSING) if type(parent) in _ATTRIBUTE_TYPES
             else _MISSING)
    if value is _MISSING:
        value = _get(parent, name, path, default)
    if type(value) is str:
        return value
    if not isinstance(value, str):
        raise InvalidFieldError(f"{path}.{name}", value, "must be a string")
    return value


def _int(parent: Any, name: str, path: str, default: Any = _MISSING) -> int:
    value = (getattr(parent, name, _MISSING) if type(parent) in _ATTRIBUTE_TYPES
             else _MISSING)
    if value is _MISSING:
        value = _get(parent, name, path, default)
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise InvalidFieldError(f"{path}.{name}", value, "must be an integer")
    return value


def _num(parent: Any, name: str, path: str, default: Any = _MISSING) -> float:
    """A float; ib_async's UNSET_DOUBLE and None read as NaN (unknown)."""
    value = (getattr(parent, name, _MISSING) if type(parent) in _ATTRIBUTE_TYPES
             else _MISSING)
    if value is _MISSING:
        value = _get(parent, name, path, default)
    if type(value) is float:
        if value >= _UNSET_LIMIT:
            return NAN
        if value - value != 0.0 and not math.isnan(value):  # +-inf
            raise InvalidFieldError(f"{path}.{name}", value, "must be finite")
        return value
    if value is None:
        return NAN
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidFieldError(f"{path}.{name}", value, "must be a number")
    out = float(value)
    if out >= _UNSET_LIMIT:
        return NAN
    if math.isinf(out):
        raise InvalidFieldError(f"{path}.{name}", value, "must be finite")
    return out


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidFieldError(field, value, "must be an ISO-8601 time") from None
    if not isinstance(value, datetime):
        raise InvalidFieldError(field, value, "must be a datetime or ISO-8601 text")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=UTC)  # declared zone: naive message times are UTC
    out: datetime = value.astimezone(UTC)
    return out


# ---------------------------------------------------------------------- instruments
_instruments: dict[tuple[object, ...], Instrument] = {}


# Contract fields an Instrument is made of, in the order of the cache key below.
_CONTRACT_FIELDS = ("conId", "symbol", "secType", "currency", "multiplier", "exchange",
                    "lastTradeDateOrContractMonth", "strike", "right", "localSymbol")
_read_contract = operator.attrgetter(*_CONTRACT_FIELDS)
# Raw field values of contract OBJECTS already validated -> their Instrument: an ib_async
# Contract is read with one C-level attrgetter and one dict lookup instead of ten checked reads.
_by_raw: dict[tuple[Any, ...], Instrument] = {}


def _instrument(contract: Any, path: str, *, allow_unqualified: bool = False) -> Instrument | None:
    if type(contract) in _ATTRIBUTE_TYPES:
        try:
            raw = _read_contract(contract)
            # Exact types only: True == 1 and 1 == 1.0 must not reuse an entry validated for
            # another type (a bool conId is refused by the checked path).
            cached = _by_raw.get(raw) if _exact(raw) else None
        except (AttributeError, TypeError):  # a missing field or an unhashable value
            raw, cached = None, None
        if cached is not None:
            return cached
        inst = _checked_instrument(contract, path, allow_unqualified=allow_unqualified)
        if inst is not None and raw is not None and _exact(raw):
            if len(_by_raw) > 100_000:  # a bound, not a policy: contracts are few
                _by_raw.clear()
            _by_raw[raw] = inst
        return inst
    return _checked_instrument(contract, path, allow_unqualified=allow_unqualified)


def _exact(raw: tuple[Any, ...]) -> bool:
    """The numeric fields have ib_async's own types (other fields equal only as str)."""
    return type(raw[0]) is int and type(raw[4]) is str and type(raw[7]) is float


def _checked_instrument(contract: Any, path: str, *, allow_unqualified: bool
                        ) -> Instrument | None:
    con_id = _int(contract, "conId", path)
    if con_id <= 0:
        if allow_unqualified and con_id == 0:
            return None
        raise InvalidFieldError(f"{path}.conId", con_id, "must be a positive integer")
    raw_mult = _get(contract, "multiplier", path, "")
    if raw_mult in ("", None):
        multiplier = 1.0
    elif isinstance(raw_mult, str):
        try:
            multiplier = float(raw_mult)
        except ValueError:
            raise InvalidFieldError(f"{path}.multiplier", raw_mult, "must be a number") from None
    elif isinstance(raw_mult, int | float) and not isinstance(raw_mult, bool):
        multiplier = float(raw_mult)
    else:
        raise InvalidFieldError(f"{path}.multiplier", raw_mult, "must be a number")
    if not math.isfinite(multiplier) or multiplier <= 0:
        raise InvalidFieldError(f"{path}.multiplier", raw_mult, "must be > 0")
    ident = (
        con_id,
        _str(contract, "symbol", path, ""),
        _str(contract, "secType", path, "") or "STK",
        _str(contract, "currency", path, ""),
        multiplier,
        _str(contract, "exchange", path, ""),
        _str(contract, "lastTradeDateOrContractMonth", path, ""),
        _num(contract, "strike", path, 0.0),
        _str(contract, "right", path, ""),
        _str(contract, "localSymbol", path, ""),
    )
    cached = _instruments.get(ident)
    if cached is None:
        strike = ident[7]
        cached = Instrument(con_id, ident[1], ident[2], ident[3], multiplier, ident[5], ident[6],
                            0.0 if isinstance(strike, float) and math.isnan(strike) else strike,
                            ident[8], ident[9])
        if len(_instruments) > 100_000:  # a bound, not a policy: contracts are few
            _instruments.clear()
        _instruments[ident] = cached
    return cached


# ------------------------------------------------------------------------ parsing
def parse_message(msg: Any, *, received_at: datetime, default_account: str = "") -> Parsed:
    """Read one queue message. Raises InvalidMessageError/InvalidFieldError naming the field."""
    if not isinstance(msg, Mapping):
        raise InvalidMessageError("message", msg, "must be a mapping with a 'type'")
    kind = msg.get("type", _MISSING)
    if kind == FILL:
        return _parse_fill(msg)
    if kind == STATUS_CHANGE:
        return _parse_status(msg, received_at, default_account)
    raise InvalidMessageError("type", None if kind is _MISSING else kind,
                              f"must be one of {MESSAGE_TYPES}")


# A strategy names an ArcticDB symbol (positions/<strategy>): a name ArcticDB cannot store
# would poison every later batch, so it is refused here, at the boundary.
MAX_NAME = 100


_NAMES: set[str] = set()  # names _name accepted (accounts and strategies are few)


def _name(value: str, field: str) -> str:
    if value in _NAMES:
        return value
    if len(value) > MAX_NAME or not value.isprintable():
        raise InvalidFieldError(field, value, f"must be printable and at most {MAX_NAME} chars")
    if len(_NAMES) < 10_000:  # a bound, not a policy
        _NAMES.add(value)
    return value


def _strategy(msg: Mapping[str, Any], order_refs: tuple[str, ...]) -> str:
    strategy = msg.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise InvalidFieldError("strategy", strategy, "must be a string")
    if strategy:
        return _name(strategy, "strategy")
    for ref in order_refs:
        if ref:
            return _name(ref, "orderRef")
    return UNATTRIBUTED


# ib_async objects: their fields read with one C-level attrgetter each.
_read_execution = operator.attrgetter("execId", "acctNumber", "side", "shares", "price", "time",
                                      "orderRef", "orderId", "permId", "exchange")
_read_report = operator.attrgetter("execId", "commission", "currency", "realizedPNL")
_SIDES = {"BOT": Side.BUY, "BUY": Side.BUY, "SLD": Side.SELL, "SELL": Side.SELL}


def _known_name(value: object) -> bool:
    """A non-empty str that :func:`_name` accepts (the same rule, no exception raised)."""
    if type(value) is not str or not value:
        return False
    if value in _NAMES:
        return True
    try:
        _name(value, "")
    except InvalidFieldError:
        return False
    return True


def fast_fill(msg: Mapping[str, Any]) -> FillMessage | None:
    """The fill of an ib_async message whose every field has ib_async's own type and a value
    the checked path accepts as it is; None for anything else (the checked path then reads
    it, and raises naming the field). About half the checked path's cost."""
    fill: Any = msg.get("fill")
    if type(fill) not in _ATTRIBUTE_TYPES:
        return None
    try:
        execution, contract, report = fill.execution, fill.contract, fill.commissionReport
        if type(execution) not in _ATTRIBUTE_TYPES:
            return None
        (exec_id, account, side_raw, qty, price, at, exec_ref, order_id, perm_id,
         exchange) = _read_execution(execution)
        side = _SIDES.get(side_raw) if type(side_raw) is str else None
        if (side is None or type(exec_id) is not str or not exec_id
                or not _known_name(account) or type(qty) is not float
                or not 0.0 < qty < _UNSET_LIMIT or type(price) is not float
                or not 0.0 < price < _UNSET_LIMIT or type(at) is not datetime
                or at.tzinfo is not UTC or at == _EPOCH or type(exec_ref) is not str
                or type(order_id) is not int or type(perm_id) is not int
                or type(exchange) is not str):
            return None
        trade = msg.get("trade")
        order_ref = ""
        if trade is not None:
            if type(trade) not in _ATTRIBUTE_TYPES:
                return None
            order = trade.order
            if order is not None:
                if type(order) not in _ATTRIBUTE_TYPES or type(order.orderRef) is not str:
                    return None
                order_ref = order.orderRef
        strategy = msg.get("strategy")
        if not strategy:
            if strategy is not None and type(strategy) is not str:
                return None
            strategy = order_ref or exec_ref or UNATTRIBUTED
        if not _known_name(strategy):
            return None
        commission = None
        if report is not None:
            if type(report) not in _ATTRIBUTE_TYPES:
                return None
            rid, comm, currency, pnl = _read_report(report)
            if type(rid) is not str or type(currency) is not str:
                return None
            if rid:
                if (type(comm) is not float or type(pnl) is not float
                        or (comm - comm != 0.0 and not math.isnan(comm))  # +-inf
                        or (pnl - pnl != 0.0 and not math.isnan(pnl))):
                    return None
                if rid != exec_id:  # what CommissionReport(...) checks (raises ValueError)
                    parse_exec_id(rid)
                commission = trusted_report(
                    rid, NAN if comm >= _UNSET_LIMIT else comm, currency,
                    NAN if pnl >= _UNSET_LIMIT else pnl)
        instrument = _instrument(contract, "fill.contract")
        assert instrument is not None
        return FillMessage(trusted_fill(exec_id, account, strategy, instrument, side, qty, price,
                                        at, order_id, perm_id, order_ref or exec_ref, exchange),
                           commission)
    except (AttributeError, TypeError, ValueError):  # ValueError: InvalidInputError too
        return None


def _parse_fill(msg: Mapping[str, Any]) -> FillMessage:
    fast = fast_fill(msg)
    return fast if fast is not None else _checked_fill(msg)


def _checked_fill(msg: Mapping[str, Any]) -> FillMessage:
    fill = _obj(msg, "fill", "")
    execution = _obj(fill, "execution", "fill")
    p = "fill.execution"
    exec_id = _str(execution, "execId", p)
    if not exec_id:
        raise InvalidFieldError(f"{p}.execId", exec_id, "must not be empty")
    account = _get(execution, "acctNumber", p)
    if not isinstance(account, str) or not account:
        raise InvalidFieldError(f"{p}.acctNumber", account, "must be a non-empty string")
    _name(account, f"{p}.acctNumber")
    side_raw = _get(execution, "side", p)
    try:
        side = Side.parse(side_raw, f"{p}.side")
    except InvalidFieldError:
        raise InvalidFieldError(f"{p}.side", side_raw, "must be BOT/BUY or SLD/SELL") from None
    qty = _num(execution, "shares", p)
    if not qty > 0:  # also catches NaN
        raise InvalidFieldError(f"{p}.shares", _get(execution, "shares", p), "must be > 0")
    price = _num(execution, "price", p)
    if not price > 0:
        raise InvalidFieldError(f"{p}.price", _get(execution, "price", p), "must be > 0")
    at = _time(_get(execution, "time", p), f"{p}.time")
    if at == _EPOCH:
        raise InvalidFieldError(f"{p}.time", at, "missing (ib_async's epoch default)")
    instrument = _instrument(_obj(fill, "contract", "fill"), "fill.contract")
    assert instrument is not None
    exec_ref = _str(execution, "orderRef", p, "")
    trade = msg.get("trade")
    order_ref = ""
    if trade is not None:
        order = _get(trade, "order", "trade", None)
        if order is not None:
            order_ref = _str(order, "orderRef", "trade.order", "")
    strategy = _strategy(msg, (order_ref, exec_ref))
    try:
        parsed = Fill(exec_id=exec_id, account=account, strategy=strategy, instrument=instrument,
                      side=side, qty=qty, price=price, time=at,
                      order_id=_int(execution, "orderId", p, 0),
                      perm_id=_int(execution, "permId", p, 0),
                      order_ref=order_ref or exec_ref,
                      exchange=_str(execution, "exchange", p, ""))
    except InvalidFieldError as exc:
        raise InvalidFieldError(f"{p}.{exc.field}", exc.value, exc.reason) from None
    return FillMessage(parsed, _commission(_get(fill, "commissionReport", "fill", None)))


def _commission(report: Any) -> CommissionReport | None:
    if report is None:
        return None
    p = "fill.commissionReport"
    exec_id = _str(report, "execId", p, "")
    if not exec_id:
        return None  # ib_async's empty CommissionReport(): not arrived yet
    try:
        return CommissionReport(exec_id=exec_id, commission=_num(report, "commission", p, None),
                                currency=_str(report, "currency", p, ""),
                                realized_pnl=_num(report, "realizedPNL", p, None))
    except InvalidFieldError as exc:
        raise InvalidFieldError(f"{p}.{exc.field}", exc.value, exc.reason) from None


def _parse_status(msg: Mapping[str, Any], received_at: datetime,
                  default_account: str) -> StatusMessage:
    trade = _obj(msg, "trade", "")
    order = _obj(trade, "order", "trade")
    status_obj = _obj(trade, "orderStatus", "trade")
    status = msg.get("status")
    if status is None:
        status = _str(status_obj, "status", "trade.orderStatus")
    if not isinstance(status, str) or not status:
        raise InvalidFieldError("status", status, "must be a non-empty string")
    account = _get(order, "account", "trade.order", "")
    if not isinstance(account, str):
        raise InvalidFieldError("trade.order.account", account, "must be a string")
    if not account:
        for fill in _get(trade, "fills", "trade", None) or ():
            execution = _get(fill, "execution", "trade.fills[]", None)
            acct = _get(execution, "acctNumber", "", "") if execution is not None else ""
            if isinstance(acct, str) and acct:
                account = acct
                break
    account = account or default_account
    if not account:
        raise InvalidFieldError("trade.order.account", "", "no account on the order or fills")
    _name(account, "trade.order.account")
    action = _get(order, "action", "trade.order")
    try:
        side = Side.parse("SELL" if action == "SSHORT" else action, "trade.order.action")
    except InvalidFieldError:
        raise InvalidFieldError("trade.order.action", action, "must be BUY or SELL") from None
    contract = _obj(trade, "contract", "trade")
    instrument = _instrument(contract, "trade.contract", allow_unqualified=True)
    po, ps = "trade.order", "trade.orderStatus"
    at = received_at
    for entry in reversed(_get(trade, "log", "trade", None) or ()):
        if _get(entry, "status", "trade.log[]", "") == status:
            at = _time(_get(entry, "time", "trade.log[]"), "trade.log[].time")
            break
    numbers = {}
    for name, obj, path, field in (("total_qty", order, po, "totalQuantity"),
                                   ("filled_qty", status_obj, ps, "filled"),
                                   ("remaining_qty", status_obj, ps, "remaining")):
        value = _num(obj, field, path, 0.0)
        if math.isnan(value) or value < 0:
            raise InvalidFieldError(f"{path}.{field}", _get(obj, field, path), "must be >= 0")
        numbers[name] = value
    perm_id = _int(order, "permId", po, 0) or _int(status_obj, "permId", ps, 0)
    order_ref = _str(order, "orderRef", po, "")
    return StatusMessage(
        account=account,
        strategy=_strategy(msg, (order_ref,)),
        order_id=_int(order, "orderId", po, 0) or _int(status_obj, "orderId", ps, 0),
        perm_id=perm_id,
        client_id=_int(order, "clientId", po, 0) or _int(status_obj, "clientId", ps, 0),
        order_ref=order_ref,
        con_id=instrument.con_id if instrument else 0,
        symbol=instrument.symbol if instrument else _str(contract, "symbol", "trade.contract", ""),
        sec_type=instrument.sec_type if instrument else _str(contract, "secType",
                                                             "trade.contract", ""),
        side=side.value,
        order_type=_str(order, "orderType", po, ""),
        total_qty=numbers["total_qty"],
        filled_qty=numbers["filled_qty"],
        remaining_qty=numbers["remaining_qty"],
        avg_fill_price=_num(status_obj, "avgFillPrice", ps, None),
        lmt_price=_num(order, "lmtPrice", po, None),
        status=status,
        why_held=_str(status_obj, "whyHeld", ps, ""),
        time=at,
        instrument=instrument,
    )


def message_account(msg: Any) -> str | None:
    """The account a (possibly invalid) message belongs to, when one can be read."""
    try:
        fill = _get(msg, "fill", "", None)
        if fill is not None:
            acct = _get(_get(fill, "execution", ""), "acctNumber", "")
            if isinstance(acct, str) and acct:
                return _name(acct, "account")
        trade = _get(msg, "trade", "", None)
        if trade is not None:
            acct = _get(_get(trade, "order", ""), "account", "")
            if isinstance(acct, str) and acct:
                return _name(acct, "account")
    except Exception:
        return None
    return None


def message_con_id(msg: Any) -> int | None:
    """The con_id of a (possibly unparsed) fill or status message, when one can be read."""
    try:
        holder = _get(msg, "fill", "", None) or _get(msg, "trade", "", None)
        con_id = _get(_get(holder, "contract", ""), "conId", "")
        return con_id if type(con_id) is int and con_id > 0 else None
    except Exception:
        return None


# ------------------------------------------------------------------ the dict form
def _json_num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _contract_dict(i: Instrument) -> dict[str, Any]:
    return {"conId": i.con_id, "symbol": i.symbol, "secType": i.sec_type,
            "currency": i.currency, "multiplier": i.multiplier, "exchange": i.exchange,
            "lastTradeDateOrContractMonth": i.expiry, "strike": i.strike, "right": i.right,
            "localSymbol": i.local_symbol}


def fill_message(fill: Fill, commission: CommissionReport | None) -> dict[str, Any]:
    """The canonical dict form of a fill (JSON-able; parses back to the same event)."""
    report = None
    if commission is not None:
        report = {"execId": commission.exec_id, "commission": _json_num(commission.commission),
                  "currency": commission.currency,
                  "realizedPNL": _json_num(commission.realized_pnl)}
    return {
        "type": FILL,
        "strategy": fill.strategy,
        "trade": None,
        "fill": {
            "contract": _contract_dict(fill.instrument),
            "execution": {"execId": fill.exec_id, "time": fill.time.isoformat(),
                          "acctNumber": fill.account, "exchange": fill.exchange,
                          "side": fill.side.value, "shares": fill.qty, "price": fill.price,
                          "permId": fill.perm_id, "orderId": fill.order_id,
                          "orderRef": fill.order_ref},
            "commissionReport": report,
        },
    }


def status_message(ev: StatusMessage) -> dict[str, Any]:
    """The canonical dict form of a status change (parses back to the same event)."""
    contract: dict[str, Any] = {"conId": ev.con_id, "symbol": ev.symbol, "secType": ev.sec_type}
    if ev.instrument is not None:
        contract = _contract_dict(ev.instrument)
    return {
        "type": STATUS_CHANGE,
        "strategy": ev.strategy,
        "status": ev.status,
        "trade": {
            "contract": contract,
            "order": {"orderId": ev.order_id, "clientId": ev.client_id, "permId": ev.perm_id,
                      "action": ev.side, "totalQuantity": ev.total_qty,
                      "orderType": ev.order_type, "lmtPrice": _json_num(ev.lmt_price),
                      "orderRef": ev.order_ref, "account": ev.account},
            "orderStatus": {"status": ev.status, "filled": ev.filled_qty,
                            "remaining": ev.remaining_qty,
                            "avgFillPrice": _json_num(ev.avg_fill_price),
                            "whyHeld": ev.why_held},
            "log": [{"time": ev.time.isoformat(), "status": ev.status}],
        },
    }


def canonical(event: Parsed) -> dict[str, Any]:
    if isinstance(event, FillMessage):
        return fill_message(event.fill, event.commission)
    return status_message(event)


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """ib_async objects (dataclasses, NamedTuples) and mappings -> JSON-able plain values."""
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        return obj
    if _depth > 20:
        return repr(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, Enum):
        return to_plain(obj.value, _depth + 1)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name, None), _depth + 1)
                for f in dataclasses.fields(obj)}
    fields = getattr(obj, "_fields", None)
    if isinstance(obj, tuple) and fields is not None:
        return {name: to_plain(value, _depth + 1) for name, value in zip(fields, obj, strict=True)}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_plain(v, _depth + 1) for v in obj]
    return repr(obj)


def encode_raw(msg: Any) -> str:
    """The whole message as JSON text (ib_async objects as dicts); repr when that fails."""
    try:
        return json.dumps(to_plain(msg), default=repr)
    except (TypeError, ValueError, RecursionError):
        return repr(msg)
