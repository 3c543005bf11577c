"""Domain value objects: instruments, fills, commission reports (order status events are
:class:`backend.core.messages.StatusMessage`, parsed straight from the message).

Numeric model (stated once, used everywhere)
--------------------------------------------
Quantities, prices and money are ``float64``: that is what IB sends (ib_async 2.1.0 decodes
quantities and prices to ``float``), what ArcticDB stores without conversion, and what pandas
computes with. Round trips through ArcticDB are bit-exact. Comparisons use
:data:`QTY_TOLERANCE` for quantities (fractional shares go to 4 decimals at IB, so 1e-9 is far
below any real lot) and :data:`MONEY_REL_TOLERANCE` (relative) for prices and PnL. A position
whose absolute quantity is below :data:`QTY_TOLERANCE` after a fill is flat: it is snapped to
exactly 0.0 so float residue (0.1 + 0.2 - 0.3) never leaves a phantom position.

Unknown numbers are ``NaN``, never 0: a commission that has not arrived is NaN; a reported
commission of 0.0 is a fact.

Times are timezone-aware UTC ``datetime`` objects. Naive datetimes are refused at this layer:
the boundary (IB adapter, message parser) must declare their zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from backend.errors import InvalidExecIdError, InvalidFieldError

QTY_TOLERANCE = 1e-9
MONEY_REL_TOLERANCE = 1e-9

UNATTRIBUTED = "_unattributed"
RESIDUAL = "_residual"

NAN = float("nan")

_new = tuple.__new__  # builds a tuple subclass from checked values, no __new__ run


def is_flat(qty: float) -> bool:
    """True when ``qty`` is zero within :data:`QTY_TOLERANCE`."""
    return abs(qty) < QTY_TOLERANCE


def money_close(a: float, b: float, abs_tol: float = 1e-6) -> bool:
    """Money equality under the numeric model (NaN equals NaN: both unknown)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=MONEY_REL_TOLERANCE, abs_tol=abs_tol)


def require_utc(field: str, value: object) -> datetime:
    """Return ``value`` as an aware UTC datetime or raise naming ``field``."""
    if not isinstance(value, datetime):
        raise InvalidFieldError(field, value, "must be a datetime")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidFieldError(field, value, "must be timezone-aware (naive times are ambiguous)")
    return value.astimezone(UTC)


def _require_finite(field: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidFieldError(field, value, "must be a number")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidFieldError(field, value, "must be finite")
    if positive and out <= 0:
        raise InvalidFieldError(field, value, "must be > 0")
    return out


def _require_str(field: str, value: object, *, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidFieldError(field, value, "must be a string")
    if nonempty and not value:
        raise InvalidFieldError(field, value, "must not be empty")
    return value


class Side(StrEnum):
    """Direction of an execution. IB's ``BOT``/``SLD`` map to BUY/SELL at the boundary."""

    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @classmethod
    def parse(cls, value: object, field: str = "side") -> Side:
        text = value.upper() if isinstance(value, str) else value
        if text in ("BUY", "BOT"):
            return cls.BUY
        if text in ("SELL", "SLD"):
            return cls.SELL
        raise InvalidFieldError(field, value, "must be BUY/BOT or SELL/SLD")


# A side's text: ``Side.BUY.value`` goes through the enum's descriptor (~0.3 us); hot paths
# that write a side per fill look it up here.
SIDE_TEXT: dict[Side, str] = {Side.BUY: "BUY", Side.SELL: "SELL"}
_BUY = Side.BUY


def parse_exec_id(exec_id: str) -> tuple[str, int]:
    """Split an IB execId into (base, revision).

    IB execIds look like ``0000e215.656d0000.01.01``. A correction repeats the execution with
    the same id up to the last dot and a higher number after it (``.01`` -> ``.02``). The
    revision is read as hexadecimal, like the rest of the id, so ``.0a`` sorts after ``.09``.
    An id without a dot is its own base with revision 0 (non-IB producers).
    """
    if not isinstance(exec_id, str) or not exec_id:
        raise InvalidExecIdError(exec_id, "must be a non-empty string")
    base, dot, tail = exec_id.rpartition(".")
    if not dot:
        return exec_id, 0
    if not base:
        raise InvalidExecIdError(exec_id, "nothing before the last dot")
    try:
        revision = int(tail, 16)
    except ValueError:
        # Not a revision suffix: the whole id is the base (some non-IB ids contain dots).
        return exec_id, 0
    return base, revision


@dataclass(frozen=True, slots=True)
class Instrument:
    """What was traded. Identity is ``con_id`` (IB's contract id); the rest is description.

    ``multiplier`` converts price units into money: 1 for stocks, e.g. 50 for ES futures and
    100 for equity options. ``expiry``/``strike``/``right`` are empty/0 for non-derivatives.
    """

    con_id: int
    symbol: str
    sec_type: str = "STK"
    currency: str = "USD"
    multiplier: float = 1.0
    exchange: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    local_symbol: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.con_id, bool) or not isinstance(self.con_id, int) or self.con_id <= 0:
            raise InvalidFieldError("con_id", self.con_id, "must be a positive integer")
        _require_str("symbol", self.symbol)
        _require_str("sec_type", self.sec_type, nonempty=True)
        _require_str("currency", self.currency)
        _require_finite("multiplier", self.multiplier, positive=True)
        _require_finite("strike", self.strike)


class PositionKey(NamedTuple):
    """A position is per (account, strategy, con_id).

    A NamedTuple, not a dataclass: it is hashed and compared several times per fill (ledger
    and book indexes), and tuple hashing/equality run in C (measured ~25% off a ledger fold).
    """

    account: str
    strategy: str
    con_id: int


class _FillFields(NamedTuple):
    exec_id: str
    account: str
    strategy: str
    instrument: Instrument
    side: Side
    qty: float
    price: float
    time: datetime
    order_id: int
    perm_id: int
    order_ref: str
    exchange: str
    # Derived from exec_id once, at construction.
    exec_id_base: str
    revision: int


class Fill(_FillFields):
    """One execution as journaled. ``qty`` is unsigned (> 0); ``side`` gives the sign.

    A tuple, not a dataclass: a fill is built and read once per execution on the ingest path,
    and a tuple is built ~20x faster than a frozen dataclass (whose ``__init__`` sets each
    field through ``object.__setattr__``). ``Fill(...)`` checks every field;
    :func:`trusted_fill` builds one from values a caller has already checked (the parser's
    fast path). The derived fields (``exec_id_base``, ``revision``) are functions of
    ``exec_id``, so tuple equality is the equality of the twelve given fields.
    """

    __slots__ = ()

    def __new__(cls, exec_id: str, account: str, strategy: str, instrument: Instrument,
                side: Side, qty: float, price: float, time: datetime, order_id: int = 0,
                perm_id: int = 0, order_ref: str = "", exchange: str = "") -> Fill:
        base, revision = parse_exec_id(exec_id)
        _require_str("account", account, nonempty=True)
        _require_str("strategy", strategy, nonempty=True)
        if not isinstance(instrument, Instrument):
            raise InvalidFieldError("instrument", instrument, "must be an Instrument")
        if not isinstance(side, Side):
            raise InvalidFieldError("side", side, "must be a Side")
        qty = _require_finite("qty", qty, positive=True)
        price = _require_finite("price", price, positive=True)
        at = require_utc("time", time)
        return tuple.__new__(cls, (exec_id, account, strategy, instrument, side, qty, price, at,
                                   order_id, perm_id, order_ref, exchange, base, revision))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(self)))

    def _replace(self, **changes: Any) -> Fill:
        """A copy with ``changes``, checked and with its derived fields recomputed (the
        tuple's own ``_replace`` would copy a stale ``exec_id_base``)."""
        return Fill(**{**dict(zip(self._fields[:12], self, strict=False)), **changes})

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(
            self._fields[:12], self, strict=False))
        return f"Fill({shown})"

    @property
    def con_id(self) -> int:
        return self.instrument.con_id

    @property
    def signed_qty(self) -> float:
        # (``Side.sign`` is a property of an enum member: an identity test is ~5x cheaper,
        # and every fold step asks for it)
        return self.qty if self.side is _BUY else -self.qty

    @property
    def key(self) -> PositionKey:
        return _new(PositionKey, (self[1], self[2], self[3].con_id))

    def facts(self) -> tuple[object, ...]:
        """What the broker says about the execution: equal facts = the same execution.

        Attribution (strategy, order_ref) and descriptive contract fields are left out: a
        re-delivery through another path (a reconciliation backfill, a replay) may attribute
        or describe it differently, and is still the same execution.
        """
        return (self.exec_id, self.account, self.instrument.con_id, self.side, self.qty,
                self.price, self.time)

    def sort_key(self) -> tuple[datetime, str]:
        """Canonical order of the ledger: execution time, then exec_id (ties are rare)."""
        return (self.time, self.exec_id)


_T = TypeVar("_T", bound=tuple[Any, ...])


def _rebuild(cls: type[_T], values: tuple[Any, ...]) -> _T:
    return tuple.__new__(cls, values)


def trusted_fill(exec_id: str, account: str, strategy: str, instrument: Instrument, side: Side,
                 qty: float, price: float, time: datetime, order_id: int, perm_id: int,
                 order_ref: str, exchange: str) -> Fill:
    """A :class:`Fill` of values the caller has checked as ``Fill(...)`` would (names
    non-empty str, qty and price finite float > 0, time an aware UTC datetime, exec_id a
    non-empty str): no check is repeated."""
    base, revision = parse_exec_id(exec_id)
    return _new(Fill, (exec_id, account, strategy, instrument, side, qty, price, time,
                       order_id, perm_id, order_ref, exchange, base, revision))


class _ReportFields(NamedTuple):
    exec_id: str
    commission: float
    currency: str
    realized_pnl: float


class CommissionReport(_ReportFields):
    """IB's commission report for one execId. Every number may be unknown (NaN).

    ``realized_pnl`` is IB's own figure (NaN unless reported); the ledger computes its own
    gross realized PnL and never mixes the two. A tuple for the same reason as :class:`Fill`;
    :func:`trusted_report` skips the checks.
    """

    __slots__ = ()

    def __new__(cls, exec_id: str, commission: float = NAN, currency: str = "",
                realized_pnl: float = NAN) -> CommissionReport:
        parse_exec_id(exec_id)
        for name, value in (("commission", commission), ("realized_pnl", realized_pnl)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidFieldError(name, value, "must be a number (NaN when unknown)")
            if math.isinf(value):
                raise InvalidFieldError(name, value, "must be finite or NaN")
        _require_str("currency", currency)
        return tuple.__new__(cls, (exec_id, commission, currency, realized_pnl))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), tuple(self)))

    def _replace(self, **changes: Any) -> CommissionReport:
        """A checked copy with ``changes``."""
        return CommissionReport(**{**self._asdict(), **changes})

    def __repr__(self) -> str:
        return (f"CommissionReport(exec_id={self.exec_id!r}, commission={self.commission!r}, "
                f"currency={self.currency!r}, realized_pnl={self.realized_pnl!r})")

    @property
    def known(self) -> bool:
        return not math.isnan(self.commission)


def trusted_report(exec_id: str, commission: float, currency: str,
                   realized_pnl: float) -> CommissionReport:
    """A :class:`CommissionReport` of checked values (exec_id a valid non-empty str, numbers
    float finite or NaN, currency str)."""
    return _new(CommissionReport, (exec_id, commission, currency, realized_pnl))


def utc_now() -> datetime:
    return datetime.now(UTC)
