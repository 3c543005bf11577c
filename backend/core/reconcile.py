"""Reconciliation maths: strategy holdings vs what the broker holds. Pure: no I/O, no clocks.

The broker is the truth about WHAT an account holds; the journal is the truth about WHO holds
it. :func:`reconcile` never changes attribution: every strategy row comes out as it went in,
and each disagreement becomes a visible residual row plus typed breaks.

Per (account, con_id):

* ``strategy_qty`` = Σ qty of the strategy rows (``_unattributed`` included: those are real
  executions whose owner is unknown), summed with :func:`math.fsum` so float residue never
  piles up. Strategies on opposite sides net (+100 and -40 is +60).
* ``residual`` = broker qty − strategy_qty. A row of strategy ``_residual`` is produced only
  when ``|residual| > tolerance`` (per sec_type). Below that it is float dust (1e-12) or a
  rounding of fractional shares and never shows up.
* Breaks (a key may carry several):

  - BROKER_ONLY: IB holds it, no strategy row is open (nor do rows each below the
    tolerance add up beyond it: then the strategies hold it too).
  - ARCTIC_ONLY: a strategy holds it, IB is flat (zero row, ``broker_present``) or absent.
    Detail BROKER_ALREADY_FLAT. Realized PnL stays as journaled; no exit price is invented.
  - QTY_MISMATCH: both hold it, the quantities differ beyond tolerance.
  - AVG_COST_DRIFT: see "Blended average" below.
  - UNATTRIBUTED: an open row in the unattributed strategy (fills no strategy claimed).
    A flat unattributed row is history, not a break.

Blended average (what IB's account-level ``averageCost`` is compared with)
--------------------------------------------------------------------------
Only the open rows on the SAME side as the strategies' net position count::

    blended = Σ_{i: sign(q_i) = sign(net)} |q_i| · avg_i  /  Σ_{same i} |q_i|

Why: when strategies trade against each other the account nets them, and IB's average cost of
the net position follows average-cost rules on the interleaved fills: reducing fills do not move
the average, so only the side that is still open determines it. The same-side blend is IB's
figure exactly whenever no opposite-side fill came between two same-side fills; otherwise IB's
figure is path-dependent (it depends on the order in which the strategies' fills interleaved),
which no per-strategy summary can recover. So the break carries ``netted=True`` when
opposite-side rows exist, and :attr:`Tolerances.check_netted_avg_cost` can switch the check off
for netted keys. The comparison runs only when the broker and the strategies' net are open on
the same side (an opposite side is already a QTY_MISMATCH; there is nothing to compare).

Opposite sides are not the only way IB's figure leaves the blend: whenever several strategies
have rows on a key (open or flat), a reducing fill of one of them moves the blend's weights
but not IB's average (alpha 100 @ 10, beta 100 @ 20, alpha sells 50: IB 150 @ 15, the blend
16.67), and a strategy that went in and out while another held left its fills in IB's figure.
Such breaks carry ``shared=True`` (detail SHARED, or NETTED when the sides are opposite) and
:attr:`Tolerances.check_shared_avg_cost` switches the check off for every shared key. Only a
key one strategy has ever held compares like with like. IB's ``averageCost`` also includes
the commissions of the opening fills while ours is gross (one option contract bought at 3.20
with 0.65 commission: IB 3.2065, us 3.20). So IB's figure may sit above the blend (long) or
below it (short) by up to the known commissions of the same-side rows per unit held
(:attr:`StrategyHolding.commissions`, all of the key's fills: an upper bound) before it is a
drift; commissions not known yet allow nothing.

Both averages are in price units: the IB adapter divides IB's ``averageCost`` (price x
multiplier: ES x50, equity options x100) by the multiplier before building a
:class:`~backend.core.broker.BrokerPosition`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from backend.core.broker import BrokerPosition
from backend.core.model import (
    NAN,
    QTY_TOLERANCE,
    RESIDUAL,
    UNATTRIBUTED,
    Instrument,
    _require_finite,
    _require_str,
    require_utc,
)
from backend.core.position import Position
from backend.errors import InvalidFieldError


class BreakKind(StrEnum):
    BROKER_ONLY = "BROKER_ONLY"
    ARCTIC_ONLY = "ARCTIC_ONLY"
    QTY_MISMATCH = "QTY_MISMATCH"
    AVG_COST_DRIFT = "AVG_COST_DRIFT"
    UNATTRIBUTED = "UNATTRIBUTED"
    HISTORY_GAP = "HISTORY_GAP"


class BreakDetail(StrEnum):
    NONE = ""
    BROKER_ALREADY_FLAT = "BROKER_ALREADY_FLAT"  # ARCTIC_ONLY: IB zero row or no row
    OPPOSITE_SIDE = "OPPOSITE_SIDE"  # QTY_MISMATCH: IB and the strategies' net disagree on side
    NETTED = "NETTED"  # AVG_COST_DRIFT on a key where strategies hold opposite sides
    SHARED = "SHARED"  # AVG_COST_DRIFT on a key several strategies have rows on (same side)
    EXECUTIONS_WINDOW = "EXECUTIONS_WINDOW"  # HISTORY_GAP: older than the gateway's window


FLEX_HINT = (
    "IB Gateway returns executions since midnight only: pull an IB Flex report "
    "(Trades, covering the gap) and ingest it, or confirm no trading happened in the gap"
)


@dataclass(frozen=True, slots=True)
class Tolerances:
    """When two numbers count as equal.

    ``qty`` is absolute, per sec_type (``qty_by_sec_type``) with ``qty_default`` for the rest;
    fractional shares are fine (IB goes to 4 decimals, so the default sits far below a lot).
    Average costs agree when ``|a - b| <= max(avg_cost_abs, avg_cost_rel * max(|a|, |b|))``.
    """

    qty_default: float = 1e-6
    qty_by_sec_type: Mapping[str, float] = field(default_factory=dict)
    avg_cost_rel: float = 1e-4
    avg_cost_abs: float = 1e-6
    check_netted_avg_cost: bool = True  # False: no AVG_COST_DRIFT check on netted keys
    check_shared_avg_cost: bool = True  # False: none on keys several strategies have rows on

    def __post_init__(self) -> None:
        _nonneg("qty_default", self.qty_default)
        for sec_type, tol in self.qty_by_sec_type.items():
            _nonneg(f"qty_by_sec_type[{sec_type!r}]", tol)
        _nonneg("avg_cost_rel", self.avg_cost_rel)
        _nonneg("avg_cost_abs", self.avg_cost_abs)
        # A zero tolerance would turn float dust into breaks; the model's floor is the minimum.
        object.__setattr__(self, "qty_default", max(self.qty_default, QTY_TOLERANCE))
        object.__setattr__(self, "qty_by_sec_type", {
            k: max(v, QTY_TOLERANCE) for k, v in self.qty_by_sec_type.items()})

    def qty_for(self, sec_type: str) -> float:
        return self.qty_by_sec_type.get(sec_type, self.qty_default)

    def avg_cost_close(self, a: float, b: float, shift: float = 0.0) -> bool:
        """``a`` (IB's) within tolerance of ``b`` (ours), or of ``b`` moved towards ``b +
        shift`` by up to ``shift`` (the commissions IB folds into its average)."""
        tol = max(self.avg_cost_abs, self.avg_cost_rel * max(abs(a), abs(b)))
        low, high = (b, b + shift) if shift >= 0 else (b + shift, b)
        return low - tol <= a <= high + tol

    def to_dict(self) -> dict[str, Any]:
        return {"qty_default": self.qty_default, "qty_by_sec_type": dict(self.qty_by_sec_type),
                "avg_cost_rel": self.avg_cost_rel, "avg_cost_abs": self.avg_cost_abs,
                "check_netted_avg_cost": self.check_netted_avg_cost,
                "check_shared_avg_cost": self.check_shared_avg_cost}


def _nonneg(name: str, value: object) -> None:
    if _require_finite(name, value) < 0:
        raise InvalidFieldError(name, value, "must be >= 0")


@dataclass(frozen=True, slots=True)
class StrategyHolding:
    """One strategy's holding of one instrument in one account (a ``positions`` row).

    ``avg_cost`` is in price units, NaN when flat (or unknown); ``realized_pnl`` as journaled
    (gross; NaN when unknown, e.g. on residual rows).
    """

    account: str
    strategy: str
    instrument: Instrument
    qty: float
    avg_cost: float = NAN
    realized_pnl: float = 0.0
    # Known commissions paid on this key, in the instrument's currency (all its fills, closing
    # ones and earlier round trips too: an upper bound of what the open lot's opening fills
    # paid). NaN when unknown or in another currency. Used only to bound AVG_COST_DRIFT.
    commissions: float = NAN

    def __post_init__(self) -> None:
        _require_str("account", self.account, nonempty=True)
        _require_str("strategy", self.strategy, nonempty=True)
        if not isinstance(self.instrument, Instrument):
            raise InvalidFieldError("instrument", self.instrument, "must be an Instrument")
        _require_finite("qty", self.qty)
        for name in ("avg_cost", "realized_pnl", "commissions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isinf(value):
                raise InvalidFieldError(name, value, "must be a finite number or NaN")

    @classmethod
    def from_position(cls, position: Position) -> StrategyHolding:
        return cls(account=position.key.account, strategy=position.key.strategy,
                   instrument=position.instrument, qty=position.qty,
                   avg_cost=position.avg_cost, realized_pnl=position.realized_pnl)

    @property
    def con_id(self) -> int:
        return self.instrument.con_id

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "qty": self.qty, "avg_cost": _num(self.avg_cost),
                "realized_pnl": _num(self.realized_pnl)}


@dataclass(frozen=True, slots=True)
class Break:
    """One disagreement. ``con_id`` is 0 for account-level breaks (HISTORY_GAP)."""

    kind: BreakKind
    account: str
    con_id: int
    message: str
    detail: BreakDetail = BreakDetail.NONE
    symbol: str = ""
    strategy: str = ""  # UNATTRIBUTED: the strategy holding it
    broker_qty: float = NAN
    strategy_qty: float = NAN
    residual_qty: float = NAN
    broker_avg_cost: float = NAN
    blended_avg_cost: float = NAN
    netted: bool = False  # opposite-side strategy rows on this key
    shared: bool = False  # several strategies have rows (open or flat) on this key
    broker_present: bool = False  # IB sent a row (possibly qty 0) for this key
    hint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "detail": str(self.detail), "account": self.account,
                "con_id": self.con_id, "symbol": self.symbol, "strategy": self.strategy,
                "broker_qty": _num(self.broker_qty), "strategy_qty": _num(self.strategy_qty),
                "residual_qty": _num(self.residual_qty),
                "broker_avg_cost": _num(self.broker_avg_cost),
                "blended_avg_cost": _num(self.blended_avg_cost), "netted": self.netted,
                "shared": self.shared,
                "broker_present": self.broker_present, "message": self.message,
                "hint": self.hint}


@dataclass(frozen=True, slots=True)
class KeyReconciliation:
    """Everything about one (account, con_id)."""

    account: str
    con_id: int
    instrument: Instrument  # the broker's description when IB sent one, else a strategy's
    broker: BrokerPosition | None
    strategy_rows: tuple[StrategyHolding, ...]  # exactly as given, in input order
    strategy_qty: float
    residual_qty: float  # broker qty − strategy_qty, exact (even when below tolerance)
    residual: StrategyHolding | None  # the `_residual` row, only beyond tolerance
    blended_avg_cost: float
    breaks: tuple[Break, ...]

    @property
    def broker_qty(self) -> float:
        return self.broker.qty if self.broker is not None else 0.0

    @property
    def rows(self) -> tuple[StrategyHolding, ...]:
        """The consolidated view of this key: strategy rows, then the residual row if any."""
        if self.residual is None:
            return self.strategy_rows
        return (*self.strategy_rows, self.residual)

    def to_dict(self) -> dict[str, Any]:
        b = self.broker
        return {
            "account": self.account, "con_id": self.con_id, "symbol": self.instrument.symbol,
            "sec_type": self.instrument.sec_type, "multiplier": self.instrument.multiplier,
            "broker_present": b is not None, "broker_qty": self.broker_qty,
            "broker_avg_cost": _num(b.avg_cost) if b is not None else None,
            "broker_market_price": _num(b.market_price) if b is not None else None,
            "strategy_qty": self.strategy_qty, "blended_avg_cost": _num(self.blended_avg_cost),
            "residual_qty": self.residual.qty if self.residual is not None else 0.0,
            "strategies": [r.to_dict() for r in self.strategy_rows],
            "breaks": [x.to_dict() for x in self.breaks],
        }


@dataclass(frozen=True, slots=True)
class ReconciliationResult:
    """The outcome for every (account, con_id) seen on either side, sorted by that key."""

    entries: tuple[KeyReconciliation, ...]
    tolerances: Tolerances
    extra_breaks: tuple[Break, ...] = ()  # account-level (HISTORY_GAP), added by the caller

    @property
    def breaks(self) -> tuple[Break, ...]:
        return (*self.extra_breaks, *(b for e in self.entries for b in e.breaks))

    @property
    def clean(self) -> bool:
        return not self.extra_breaks and all(not e.breaks for e in self.entries)

    @property
    def accounts(self) -> tuple[str, ...]:
        return tuple(sorted({e.account for e in self.entries}
                            | {b.account for b in self.extra_breaks}))

    @property
    def rows(self) -> tuple[StrategyHolding, ...]:
        return tuple(r for e in self.entries for r in e.rows)

    @property
    def residuals(self) -> tuple[StrategyHolding, ...]:
        return tuple(e.residual for e in self.entries if e.residual is not None)

    def for_account(self, account: str) -> ReconciliationResult:
        return ReconciliationResult(
            entries=tuple(e for e in self.entries if e.account == account),
            tolerances=self.tolerances,
            extra_breaks=tuple(b for b in self.extra_breaks if b.account == account))

    def with_breaks(self, *breaks: Break) -> ReconciliationResult:
        return ReconciliationResult(self.entries, self.tolerances, (*self.extra_breaks, *breaks))

    def break_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for b in self.breaks:
            counts[str(b.kind)] = counts.get(str(b.kind), 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes None): broker rows, strategy sums, residuals, breaks."""
        return {
            "clean": self.clean,
            "accounts": list(self.accounts),
            "tolerances": self.tolerances.to_dict(),
            "break_counts": self.break_counts(),
            "breaks": [b.to_dict() for b in self.breaks],
            "entries": [e.to_dict() for e in self.entries],
        }


def _num(x: float) -> float | None:
    """JSON has no NaN: unknown numbers become null."""
    return None if math.isnan(x) else x


def _sign(x: float, tol: float) -> int:
    return 0 if abs(x) <= tol else (1 if x > 0 else -1)


def reconcile(
    strategy_positions: Iterable[StrategyHolding | Position],
    broker_positions: Iterable[BrokerPosition],
    tolerances: Tolerances | None = None,
    *,
    unattributed_strategy: str = UNATTRIBUTED,
) -> ReconciliationResult:
    """Compare strategy holdings with the broker's positions (see the module docstring).

    Linear in the number of rows (one grouping pass, one pass per key; only the keys are sorted
    for a stable report). Raises :class:`InvalidFieldError` on a row of the reserved
    ``_residual`` strategy, a duplicate (account, strategy, con_id), or a duplicate broker
    (account, con_id) or a broker quantity that is not finite.
    """
    tol = tolerances if tolerances is not None else Tolerances()
    groups: dict[tuple[str, int], list[StrategyHolding]] = {}
    seen: set[tuple[str, str, int]] = set()
    for item in strategy_positions:
        row = StrategyHolding.from_position(item) if isinstance(item, Position) else item
        if row.strategy == RESIDUAL:
            raise InvalidFieldError("strategy", row.strategy,
                                    "is reserved for reconciliation output")
        ident = (row.account, row.strategy, row.instrument.con_id)
        if ident in seen:
            raise InvalidFieldError("strategy_positions", ident, "duplicate holding")
        seen.add(ident)
        groups.setdefault((row.account, row.instrument.con_id), []).append(row)

    brokers: dict[tuple[str, int], BrokerPosition] = {}
    for bp in broker_positions:
        key = (bp.account, bp.instrument.con_id)
        if not math.isfinite(bp.qty):
            # NaN would compare false against every tolerance and hide a break.
            raise InvalidFieldError("broker_positions.qty", (key, bp.qty), "must be finite")
        if key in brokers:
            raise InvalidFieldError("broker_positions", key, "duplicate (account, con_id)")
        brokers[key] = bp

    keys = sorted(brokers.keys() | groups.keys())
    entries = tuple(_reconcile_key(k, brokers.get(k), groups.get(k, ()), tol,
                                   unattributed_strategy) for k in keys)
    return ReconciliationResult(entries=entries, tolerances=tol)


def _reconcile_key(
    key: tuple[str, int],
    broker: BrokerPosition | None,
    rows: Iterable[StrategyHolding],
    tol: Tolerances,
    unattributed: str,
) -> KeyReconciliation:
    account, con_id = key
    rows = tuple(rows)
    # Without a broker row, the description of the first strategy by name (not by input
    # order: the tolerance and the report must not depend on how the rows came in).
    instrument = (broker.instrument if broker is not None
                  else min(rows, key=lambda r: r.strategy).instrument)
    qtol = tol.qty_for(instrument.sec_type)
    broker_qty = broker.qty if broker is not None else 0.0
    strategy_qty = math.fsum(r.qty for r in rows)
    residual_qty = broker_qty - strategy_qty
    open_rows = [r for r in rows if abs(r.qty) > qtol]
    net_side = _sign(strategy_qty, qtol)
    broker_side = _sign(broker_qty, qtol)
    netted = any(_sign(r.qty, qtol) == -net_side for r in open_rows) if net_side else False
    shared = len(rows) > 1
    blended = _blended_avg(open_rows, net_side, qtol)

    def common() -> dict[str, Any]:
        # Built only for keys that break (most keys do not).
        return {
            "account": account, "con_id": con_id, "symbol": instrument.symbol,
            "broker_qty": broker_qty, "strategy_qty": strategy_qty,
            "residual_qty": residual_qty,
            "broker_avg_cost": broker.avg_cost if broker is not None else NAN,
            "blended_avg_cost": blended, "netted": netted, "shared": shared,
            "broker_present": broker is not None}

    breaks: list[Break] = []
    residual: StrategyHolding | None = None
    # Held: a row is open, or rows each below the tolerance add up beyond it.
    held = bool(open_rows) or net_side != 0
    if abs(residual_qty) > qtol:
        if not held:
            kind, detail = BreakKind.BROKER_ONLY, BreakDetail.NONE
            msg = f"IB holds {broker_qty:g}, no strategy holds it"
        elif broker_side == 0:
            kind, detail = BreakKind.ARCTIC_ONLY, BreakDetail.BROKER_ALREADY_FLAT
            msg = (f"strategies hold {strategy_qty:g}, IB is flat "
                   f"({'zero row' if broker is not None else 'no row'}); "
                   "realized PnL stays as journaled")
        else:
            kind = BreakKind.QTY_MISMATCH
            detail = (BreakDetail.OPPOSITE_SIDE if net_side == -broker_side
                      else BreakDetail.NONE)
            msg = f"IB holds {broker_qty:g}, strategies {strategy_qty:g}"
        breaks.append(Break(kind=kind, detail=detail, message=msg, **common()))
        # The residual's own cost is known only when it is the whole broker position
        # (nothing else to subtract); otherwise a derived figure could be anything, even < 0.
        residual = StrategyHolding(
            account=account, strategy=RESIDUAL, instrument=instrument, qty=residual_qty,
            avg_cost=broker.avg_cost if broker is not None and not held else NAN,
            realized_pnl=NAN)

    broker_avg = broker.avg_cost if broker is not None else NAN
    if (broker_side != 0 and broker_side == net_side and not math.isnan(broker_avg)
            and not math.isnan(blended) and (tol.check_netted_avg_cost or not netted)
            and (tol.check_shared_avg_cost or not shared)):
        allowance = _commission_allowance(open_rows, net_side, qtol, instrument.multiplier)
        if not tol.avg_cost_close(broker_avg, blended, allowance * net_side):
            breaks.append(Break(
                kind=BreakKind.AVG_COST_DRIFT,
                detail=(BreakDetail.NETTED if netted
                        else BreakDetail.SHARED if shared else BreakDetail.NONE),
                message=(f"IB average cost {broker_avg:g} vs strategies' blended {blended:g} "
                         "(price units)" + (f", beyond the commissions' share {allowance:g}"
                                            if allowance else "")), **common()))

    for r in open_rows:
        if r.strategy == unattributed:
            breaks.append(Break(kind=BreakKind.UNATTRIBUTED, message=(
                f"{r.qty:g} held by {unattributed!r}: fills no strategy claimed"),
                **{**common(), "strategy": r.strategy}))

    return KeyReconciliation(
        account=account, con_id=con_id, instrument=instrument, broker=broker,
        strategy_rows=rows, strategy_qty=strategy_qty, residual_qty=residual_qty,
        residual=residual, blended_avg_cost=blended, breaks=tuple(breaks))


def _blended_avg(open_rows: list[StrategyHolding], net_side: int, qtol: float) -> float:
    """Qty-weighted average cost of the open rows on the net side (NaN if none or unknown)."""
    if net_side == 0:
        return NAN
    side = [r for r in open_rows if _sign(r.qty, qtol) == net_side]
    # fsum: correctly rounded, so the blend does not depend on the order of the rows.
    weight = math.fsum(abs(r.qty) for r in side)
    cost = math.fsum(abs(r.qty) * r.avg_cost for r in side)  # a NaN average poisons it
    return cost / weight if weight > 0 else NAN


def _commission_allowance(open_rows: list[StrategyHolding], net_side: int, qtol: float,
                          multiplier: float) -> float:
    """How far (price units, >= 0) commissions can move IB's average from the gross blend.

    IB's ``averageCost`` includes the commissions of the opening fills (a long costs more, a
    short's proceeds are less), ours is gross. The known commissions of the same-side rows per
    unit held bound that shift; unknown ones (NaN) add nothing, so the check stays strict.
    """
    side = [r for r in open_rows if _sign(r.qty, qtol) == net_side]
    paid = math.fsum(r.commissions for r in side if math.isfinite(r.commissions))
    units = math.fsum(abs(r.qty) for r in side) * multiplier
    return max(paid, 0.0) / units if units > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Marks and unrealized PnL


def quote_requests(result: ReconciliationResult) -> tuple[Instrument, ...]:
    """Instruments that need a market-data snapshot: open strategy rows where IB gave no price.

    IB prices only what it holds (portfolio items), so Arctic-only entries (and keys where the
    broker's row has no market price) must be quoted separately. One per con_id, sorted.
    """
    out: dict[int, Instrument] = {}
    for e in result.entries:
        if e.con_id in out:
            continue
        qtol = result.tolerances.qty_for(e.instrument.sec_type)
        has_open = any(abs(r.qty) > qtol for r in e.rows)
        priced = e.broker is not None and math.isfinite(e.broker.market_price)
        if has_open and not priced:
            out[e.con_id] = e.instrument
    return tuple(out[c] for c in sorted(out))


def con_ids_needing_quote(result: ReconciliationResult) -> tuple[int, ...]:
    return tuple(i.con_id for i in quote_requests(result))


@dataclass(frozen=True, slots=True)
class PricedRow:
    """A consolidated row with its mark. ``no_quote``: no mark came, PnL is NaN (not 0)."""

    row: StrategyHolding
    mark_price: float
    unrealized_pnl: float
    no_quote: bool
    mark_source: str  # "quote" | "broker" | "" (none needed or none came)

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "account": self.row.account, "con_id": self.row.con_id,
                "mark_price": _num(self.mark_price),
                "unrealized_pnl": _num(self.unrealized_pnl), "no_quote": self.no_quote,
                "mark_source": self.mark_source}


def price_rows(
    result: ReconciliationResult, quotes: Mapping[int, float] | None = None
) -> tuple[PricedRow, ...]:
    """Unrealized PnL of every consolidated row: ``(mark - avg) * qty * multiplier``.

    The mark is ``quotes[con_id]`` when finite (a fresh snapshot), else the broker's portfolio
    price when finite, else none: NaN PnL and ``no_quote=True``. IB's "no price" sentinel (-1)
    must be turned into NaN by the adapter. Flat rows need no mark (PnL 0). A row with an
    unknown average (a residual) gets NaN PnL even with a mark; ``no_quote`` stays False.
    """
    quotes = quotes or {}
    out: list[PricedRow] = []
    for e in result.entries:
        mark, source = NAN, ""
        q = quotes.get(e.con_id, NAN)
        if math.isfinite(q):
            mark, source = q, "quote"
        elif e.broker is not None and math.isfinite(e.broker.market_price):
            mark, source = e.broker.market_price, "broker"
        qtol = result.tolerances.qty_for(e.instrument.sec_type)
        for r in e.rows:
            if abs(r.qty) <= qtol:
                out.append(PricedRow(r, mark, 0.0, False, source))
            elif math.isnan(mark):
                out.append(PricedRow(r, NAN, NAN, True, ""))
            else:
                pnl = (mark - r.avg_cost) * r.qty * r.instrument.multiplier
                out.append(PricedRow(r, mark, pnl, False, source))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Execution-history gaps


def gap_break(
    account: str, covered_until: datetime | None, window_start: datetime,
    listening_since: datetime | None = None,
) -> Break | None:
    """A HISTORY_GAP break when the journal's coverage ends before anything else begins.

    ``covered_until``: the time up to which the account's journal is known complete (the later
    of its last journaled fill and the last moment a backfilled reconciliation ran); None when
    nothing is known (a new account: there is no history to miss, and any holding shows up as
    BROKER_ONLY). ``window_start``: the earliest execution time the gateway still returns (its
    last midnight). ``listening_since``: when the runner's live connection (the
    StrategyManager's) came up, if it is up: its executions reached the journal as they
    happened, so a runner listening across the gateway's midnight leaves no gap. Executions
    between ``covered_until`` and the earlier of the other two cannot be backfilled.
    """
    _require_str("account", account, nonempty=True)
    start = require_utc("window_start", window_start)
    if listening_since is not None:
        start = min(start, require_utc("listening_since", listening_since))
    if covered_until is None:
        return None
    covered = require_utc("covered_until", covered_until)
    if covered >= start:
        return None
    listening = ("" if listening_since is None
                 else f" (the runner has listened since {listening_since.isoformat()})")
    return Break(
        kind=BreakKind.HISTORY_GAP, detail=BreakDetail.EXECUTIONS_WINDOW, account=account,
        con_id=0,
        message=(f"journal covered until {covered.isoformat()}, gateway executions start at "
                 f"{window_start.isoformat()}{listening}: executions in between cannot be "
                 "backfilled"),
        hint=FLEX_HINT)
