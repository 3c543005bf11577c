"""Journal payloads: the text the write-ahead journal holds for each accepted message.

A fill read by the parser's fast path is journaled in a compact positional form, a JSON array
whose first element is :data:`COMPACT_FILL`::

    ["F1", exec_id, account, strategy,
     [con_id, symbol, sec_type, currency, multiplier, exchange, expiry, strike, right,
      local_symbol],
     side, qty, price, time, order_id, perm_id, order_ref, exchange,
     null | [exec_id, commission, currency, realized_pnl]]

(NaN as ``null``, the time as ISO-8601 with its UTC offset). It holds exactly the parsed
fill and report, so a replay rebuilds the same event, with every field checked again (a
journal file is input like any other). It costs one orjson call over a flat list per fill,
the instrument's part encoded once per instrument: ~0.6 us, against ~4.4 us for the canonical
dict form and its JSON (Dec 2 box). Every other message (status changes, rejects, fills
whose numbers orjson cannot encode, such as ints beyond 64 bits) is journaled in the
canonical dict form, a JSON object; journals written before the compact form hold only
those, and are replayed as they are.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

from backend.core.messages import FillMessage
from backend.core.model import NAN, SIDE_TEXT, CommissionReport, Fill, Instrument, Side
from backend.errors import InvalidFieldError, InvalidMessageError

COMPACT_FILL = "F1"
_FIELDS = 14  # elements of a compact fill entry
# id(instrument) -> (the instrument, its encoded part): the parser hands out one Instrument
# object per contract description, so identity finds it; the instrument is kept referenced,
# so its id cannot be reused while the entry lives.
_encoded: dict[int, tuple[Instrument, orjson.Fragment]] = {}


def _instrument_part(i: Instrument) -> orjson.Fragment:
    entry = _encoded.get(id(i))
    if entry is not None and entry[0] is i:
        return entry[1]
    part = orjson.Fragment(orjson.dumps([
        i.con_id, i.symbol, i.sec_type, i.currency, i.multiplier, i.exchange, i.expiry,
        i.strike, i.right, i.local_symbol]))
    if len(_encoded) > 100_000:  # a bound, not a policy: contracts are few
        _encoded.clear()
    _encoded[id(i)] = (i, part)
    return part


def compact_fill(event: FillMessage) -> str | None:
    """The compact journal payload of ``event``; None when orjson cannot encode one of its
    values (the caller journals the canonical dict form instead)."""
    f, r = event.fill, event.commission
    report = None if r is None else [
        r.exec_id, r.commission, r.currency, r.realized_pnl]  # orjson writes NaN as null
    try:
        return orjson.dumps([
            COMPACT_FILL, f.exec_id, f.account, f.strategy, _instrument_part(f.instrument),
            SIDE_TEXT[f.side], f.qty, f.price, f.time, f.order_id, f.perm_id, f.order_ref,
            f.exchange, report]).decode()
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits
        return None


def _number(value: Any, field: str) -> float:
    if value is None:
        return NAN
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFieldError(field, value, "must be a number or null")
    return float(value)


def read_compact_fill(entry: list[Any]) -> FillMessage:
    """The event of a compact fill entry, every field checked as ``Fill(...)`` checks it;
    raises InvalidInputError naming the field."""
    if len(entry) != _FIELDS:
        raise InvalidMessageError("journal entry", entry, f"a compact fill has {_FIELDS} elements")
    (_, exec_id, account, strategy, inst, side, qty, price, at, order_id, perm_id, order_ref,
     exchange, report) = entry
    if not isinstance(inst, list) or len(inst) != 10:
        raise InvalidFieldError("fill.contract", inst, "must be a list of 10 fields")
    con_id, symbol, sec_type, currency, multiplier, inst_exchange, expiry, strike, right, \
        local = inst
    instrument = Instrument(con_id, symbol, sec_type, currency, _number(multiplier, "multiplier"),
                            inst_exchange, expiry, _number(strike, "strike"), right, local)
    if not isinstance(at, str):
        raise InvalidFieldError("fill.execution.time", at, "must be ISO-8601 text")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidFieldError("fill.execution.time", at, "must be ISO-8601 text") from None
    for name, value in (("orderId", order_id), ("permId", perm_id)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidFieldError(f"fill.execution.{name}", value, "must be an integer")
    for name, value in (("orderRef", order_ref), ("exchange", exchange)):
        if not isinstance(value, str):
            raise InvalidFieldError(f"fill.execution.{name}", value, "must be a string")
    fill = Fill(exec_id, account, strategy, instrument, Side.parse(side, "fill.execution.side"),
                _number(qty, "qty"), _number(price, "price"), when, order_id, perm_id,
                order_ref, exchange)
    commission = None
    if report is not None:
        if not isinstance(report, list) or len(report) != 4:
            raise InvalidFieldError("fill.commissionReport", report, "must be a list of 4")
        commission = CommissionReport(report[0], _number(report[1], "commission"), report[2],
                                      _number(report[3], "realized_pnl"))
    return FillMessage(fill, commission)


def entry_account(payload: str) -> str:
    """The account named by a compact fill entry that does not read back ("" if none)."""
    try:
        value = json.loads(payload)
    except ValueError:
        return ""
    if isinstance(value, list) and len(value) > 2 and isinstance(value[2], str):
        return value[2]
    return ""


def read_payload(payload: str) -> Any:
    """A journal payload as written: a :class:`FillMessage` for a compact fill entry, else the
    message dict (read by json where orjson refuses: NaN literals, ints beyond 64 bits)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        value = json.loads(payload)
    if isinstance(value, list) and value and value[0] == COMPACT_FILL:
        return read_compact_fill(value)
    return value
