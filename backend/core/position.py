"""Position maths: a position is a left fold of its fills in canonical order.

Average-cost method (the one IB, TT and most OMS use for intraday books):

* Increasing the position (same side, or opening from flat): the average is the
  quantity-weighted average of the old average and the fill price.
* Reducing it: the average does not move; realized PnL is booked on the closed quantity:
  ``(exit - avg) * closed_qty * multiplier`` for a long, the negative of that for a short.
* Crossing zero in one fill: the old side is closed in full (PnL as above on the whole old
  quantity) and the remainder opens a new position at the fill price. Splitting the fill in two
  is the only way the average stays inside the price range of the fills that opened the
  current side (NautilusTrader's flip bugs #933/#963 came from blending across zero).
* Flat resets the average to NaN: a later reopen starts clean, realized PnL carries on.

Realized PnL is gross: commissions are accumulated next to it, per currency, and never mixed
in, so the broker's commission report arriving late changes nothing here.

Prices and ``avg_cost`` are in price units; money = price units x quantity x multiplier.
IB's ``averageCost`` is price x multiplier: the IB adapter divides at the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from backend.core.model import NAN, Fill, Instrument, PositionKey, is_flat


class Position(NamedTuple):
    """State of one (account, strategy, con_id) after folding its fills (a NamedTuple: one
    is built per fill, and a tuple is built several times faster than a frozen dataclass)."""

    key: PositionKey
    instrument: Instrument
    qty: float = 0.0
    avg_cost: float = NAN
    realized_pnl: float = 0.0
    fill_count: int = 0
    last_exec_id: str = ""
    # The range of prices of the fills that opened the current side; the average must stay
    # inside it (a property test checks this).
    open_price_min: float = NAN
    open_price_max: float = NAN

    @property
    def is_flat(self) -> bool:
        return is_flat(self.qty)

    def unrealized_pnl(self, mark: float) -> float:
        """``(mark - avg) * qty * multiplier``; 0 when flat, NaN when the mark is unknown."""
        if self.is_flat:
            return 0.0
        if math.isnan(mark):
            return NAN
        return (mark - self.avg_cost) * self.qty * self.instrument.multiplier


_new = tuple.__new__


def empty_position(fill: Fill) -> Position:
    return Position(key=fill.key, instrument=fill.instrument)


# What a fill changes: (qty, avg_cost, realized_pnl, open_price_min, open_price_max).
_State = tuple[float, float, float, float, float]
_EMPTY: _State = (0.0, NAN, 0.0, NAN, NAN)


def _step(state: _State, signed: float, price: float, multiplier: float) -> _State:
    """The numbers of a position after a fill of ``signed`` quantity at ``price``."""
    qty, avg, realized, lo, hi = state
    if is_flat(qty):
        # Opening from flat: the average starts at the fill price.
        return (signed, price, realized, price, price)

    if (qty > 0) == (signed > 0):
        # Increasing: weighted average of old average and new price.
        new_qty = qty + signed
        blended = (avg * abs(qty) + price * abs(signed)) / abs(new_qty)
        # Float rounding can push the blended average a hair outside [min, max]; clamp it
        # back: the exact average of prices inside the range is inside the range.
        lo, hi = min(lo, price), max(hi, price)
        return (new_qty, min(max(blended, lo), hi), realized, lo, hi)

    # Reducing, closing or flipping: book PnL on the closed quantity at the old average.
    direction = 1.0 if qty > 0 else -1.0
    closed = min(abs(signed), abs(qty))
    realized = realized + (price - avg) * closed * multiplier * direction
    new_qty = qty + signed
    if is_flat(new_qty):
        # Closed exactly: flat resets the average.
        return (0.0, NAN, realized, NAN, NAN)
    if (new_qty > 0) == (qty > 0):
        # Partial reduction: the average does not move.
        return (new_qty, avg, realized, lo, hi)
    # Flip: the remainder opens the other side at the fill price.
    return (new_qty, price, realized, price, price)


def apply_fill(position: Position, fill: Fill) -> Position:
    """Return the position after ``fill``. Pure: ``position`` is not changed."""
    (key, instrument, qty, avg, realized, count, _, lo, hi) = position
    qty, avg, realized, lo, hi = _step(
        (qty, avg, realized, lo, hi), fill.signed_qty, fill.price, instrument.multiplier)
    # The latest description of the contract wins (a later fill may carry a fuller one).
    # (tuple.__new__: the fields in Position's order, without the keyword-argument call)
    return _new(Position, (key, fill.instrument, qty, avg, realized, count + 1, fill.exec_id,
                           lo, hi))


def fold_numbers(signed: Sequence[float], prices: Sequence[float],
                 multipliers: Sequence[float]) -> _State:
    """(qty, avg_cost, realized_pnl, open_price_min, open_price_max) after fills given as
    parallel columns in canonical order: what :func:`fold` computes, without ``Fill``
    objects (a restart refolds stored fills from their columns this way). Like
    :func:`apply_fill`, each fill is booked with the multiplier of the contract as described
    before it (the first with its own)."""
    state = _EMPTY
    before = multipliers[0] if len(multipliers) else 1.0
    for qty, price, multiplier in zip(signed, prices, multipliers, strict=True):
        state = _step(state, qty, price, before)
        before = multiplier
    return state


def fold(fills: list[Fill]) -> Position:
    """Fold ``fills`` (all of one key) in canonical order from an empty position: the same
    steps as :func:`apply_fill` one fill at a time, without a ``Position`` per step."""
    if not fills:
        raise ValueError("fold needs at least one fill")
    ordered = sorted(fills, key=Fill.sort_key)
    state = _EMPTY
    instrument = ordered[0].instrument
    for fill in ordered:
        # apply_fill uses the multiplier of the contract as described before this fill
        state = _step(state, fill.signed_qty, fill.price, instrument.multiplier)
        instrument = fill.instrument
    qty, avg, realized, lo, hi = state
    return Position(key=ordered[0].key, instrument=instrument, qty=qty, avg_cost=avg,
                    realized_pnl=realized, fill_count=len(ordered),
                    last_exec_id=ordered[-1].exec_id, open_price_min=lo, open_price_max=hi)
