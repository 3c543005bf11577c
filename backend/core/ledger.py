"""The ledger: every live fill and commission report, and the positions folded from them.

Rules (each one is tested, several as Hypothesis properties):

* Identity of an execution is (account, exec_id base). A fill whose exec_id was seen before
  with the same facts (:meth:`Fill.facts`) is a duplicate: no change. Same exec_id, other facts:
  :class:`ConflictingFillError` naming both versions; nothing changes.
* A fill whose base matches a live fill and whose revision is higher is a correction: it
  REPLACES the earlier execution (quantity, price and time may all differ) and the positions it
  touches are refolded. A lower revision arriving after its correction is stale: ignored.
* A commission report is keyed by exact exec_id, may arrive before its fill, after it, or
  never. Unknown commissions stay unknown (counted as pending), never 0. A report for an
  exec_id that is later corrected away stops counting with it.
* Canonical order: fills of one position fold in (execution time, exec_id) order. A fill that
  arrives in that order is applied incrementally; one that arrives earlier than the last applied
  fill of its position triggers a refold of that position. Hence any delivery order of the same
  set of fills yields the same state, bit for bit (commission sums, added in delivery order,
  agree within the numeric tolerance of :mod:`backend.core.model`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from backend.core.model import NAN, CommissionReport, Fill, PositionKey, parse_exec_id
from backend.core.position import Position, apply_fill, empty_position, fold
from backend.errors import ConflictingFillError


class FillOutcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CORRECTION = "correction"
    STALE = "stale"  # an older revision of an execution already corrected


class CommissionOutcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CHANGED = "changed"  # a re-sent report with other numbers: the later one wins
    IGNORED = "ignored"  # an unknown (empty) report never erases a known one


@dataclass(frozen=True, slots=True)
class FillResult:
    outcome: FillOutcome
    fill: Fill  # the live fill after this step
    replaced: Fill | None  # for a correction, the fill it replaced
    affected: tuple[PositionKey, ...]  # positions whose state changed


@dataclass(frozen=True, slots=True)
class CommissionTotals:
    """Known commissions of a position, per currency, and how many fills still lack one."""

    by_currency: tuple[tuple[str, float], ...]
    pending: int

    @property
    def total(self) -> float:
        """The sum when all known commissions share one currency; NaN when mixed or none."""
        if len(self.by_currency) != 1:
            return NAN if len(self.by_currency) > 1 or self.pending else 0.0
        return self.by_currency[0][1]

    @property
    def currency(self) -> str:
        return ",".join(ccy for ccy, _ in self.by_currency)


class Ledger:
    """In-memory state of the books. Pure: no I/O, no clocks."""

    def __init__(self) -> None:
        # (account, exec_id_base) -> live fill (highest revision seen)
        self._live: dict[tuple[str, str], Fill] = {}
        # position -> {exec_id_base: fill}
        self._by_key: dict[PositionKey, dict[str, Fill]] = {}
        self._positions: dict[PositionKey, Position] = {}
        self._last_sort: dict[PositionKey, tuple[datetime, str]] = {}
        self._commissions: dict[str, CommissionReport] = {}
        # exec_id -> live fill key, to attribute late commission reports
        self._exec_key: dict[str, PositionKey] = {}
        self._comm: dict[PositionKey, dict[str, float]] = {}
        self._pending: dict[PositionKey, int] = {}
        # con_id -> ((time, tie-break), price): the newest observation wins, ties by exec_id,
        # so marks too are independent of delivery order.
        self._marks: dict[int, tuple[tuple[datetime, str], float]] = {}

    # ----------------------------------------------------------------- fills
    def apply_fill(self, fill: Fill) -> FillResult:
        ident = (fill.account, fill.exec_id_base)
        live = self._live.get(ident)
        if live is not None:
            if live.exec_id == fill.exec_id:
                if live.facts() != fill.facts():
                    raise ConflictingFillError(fill.exec_id, live, fill)
                return FillResult(FillOutcome.DUPLICATE, live, None, ())
            if fill.revision < live.revision:
                return FillResult(FillOutcome.STALE, live, None, ())
            return self._correct(live, fill)
        self._live[ident] = fill
        key = fill.key
        self._add_to_key(key, fill)
        self._update_mark(fill)
        return FillResult(FillOutcome.NEW, fill, None, (key,))

    def _add_to_key(self, key: PositionKey, fill: Fill) -> None:
        fills = self._by_key.setdefault(key, {})
        fills[fill.exec_id_base] = fill
        self._exec_key[fill.exec_id] = key
        self._count_commission(key, fill.exec_id, +1)
        last = self._last_sort.get(key)
        sort_key = fill.sort_key()
        if last is None or sort_key > last:
            # In canonical order: apply incrementally.
            position = self._positions.get(key) or empty_position(fill)
            self._positions[key] = apply_fill(position, fill)
            self._last_sort[key] = sort_key
        else:
            self._refold(key)

    def _correct(self, old: Fill, new: Fill) -> FillResult:
        self._live[(new.account, new.exec_id_base)] = new
        old_key, new_key = old.key, new.key
        old_fills = self._by_key[old_key]
        del old_fills[old.exec_id_base]
        del self._exec_key[old.exec_id]
        self._count_commission(old_key, old.exec_id, -1)
        if old_fills:
            self._refold(old_key)
        else:
            # Its only fill was corrected away (to another key): the position is gone.
            del self._by_key[old_key]
            self._positions.pop(old_key, None)
            self._last_sort.pop(old_key, None)
        self._add_to_key(new_key, new)
        # A correction can move the price: refold so the position reflects the new facts
        # even when the corrected fill keeps its place in canonical order.
        self._refold(new_key)
        self._update_mark(new)
        affected = (old_key,) if old_key == new_key else (old_key, new_key)
        return FillResult(FillOutcome.CORRECTION, new, old, affected)

    def _refold(self, key: PositionKey) -> None:
        fills = list(self._by_key[key].values())
        position = fold(fills)
        self._positions[key] = position
        self._last_sort[key] = max(f.sort_key() for f in fills)

    # ----------------------------------------------------------- commissions
    def apply_commission(self, report: CommissionReport) -> CommissionOutcome:
        known = self._commissions.get(report.exec_id)
        if known is not None:
            if _same_report(known, report):
                return CommissionOutcome.DUPLICATE
            if not report.known and known.known:
                return CommissionOutcome.IGNORED
        elif not report.known:
            return CommissionOutcome.IGNORED
        key = self._exec_key.get(report.exec_id)
        if key is not None:
            self._count_commission(key, report.exec_id, -1)
        self._commissions[report.exec_id] = report
        if key is not None:
            self._count_commission(key, report.exec_id, +1)
        return CommissionOutcome.NEW if known is None else CommissionOutcome.CHANGED

    def _count_commission(self, key: PositionKey, exec_id: str, sign: int) -> None:
        report = self._commissions.get(exec_id)
        if report is None or not report.known:
            self._pending[key] = self._pending.get(key, 0) + sign
            return
        by_ccy = self._comm.setdefault(key, {})
        by_ccy[report.currency] = by_ccy.get(report.currency, 0.0) + sign * report.commission

    def commission_for(self, exec_id: str) -> CommissionReport | None:
        return self._commissions.get(exec_id)

    def commissions(self, key: PositionKey) -> CommissionTotals:
        by_ccy = tuple(sorted(self._comm.get(key, {}).items()))
        return CommissionTotals(by_ccy, self._pending.get(key, 0))

    # ----------------------------------------------------------------- marks
    def _update_mark(self, fill: Fill) -> None:
        self._set_mark(fill.con_id, fill.price, fill.sort_key())

    def set_mark(self, con_id: int, price: float, at: datetime) -> None:
        """Record a market price (a quote); the newest observation, fills included, wins."""
        self._set_mark(con_id, price, (at, ""))

    def _set_mark(self, con_id: int, price: float, order: tuple[datetime, str]) -> None:
        current = self._marks.get(con_id)
        if current is None or order >= current[0]:
            self._marks[con_id] = (order, price)

    def mark(self, con_id: int) -> float:
        entry = self._marks.get(con_id)
        return entry[1] if entry is not None else NAN

    # --------------------------------------------------------------- queries
    def position(self, key: PositionKey) -> Position | None:
        return self._positions.get(key)

    def positions(self) -> Iterator[Position]:
        return iter(self._positions.values())

    def keys(self) -> Iterable[PositionKey]:
        return self._positions.keys()

    def fills(self) -> Iterator[Fill]:
        return iter(self._live.values())

    def fills_of(self, key: PositionKey) -> list[Fill]:
        return sorted(self._by_key.get(key, {}).values(), key=Fill.sort_key)

    def live_fill(self, account: str, exec_id: str) -> Fill | None:
        return self._live.get((account, parse_exec_id(exec_id)[0]))

    def knows(self, account: str, exec_id: str) -> bool:
        """True when this exact exec_id (or a later revision of it) is already journaled."""
        base, revision = parse_exec_id(exec_id)
        live = self._live.get((account, base))
        return live is not None and live.revision >= revision

    def __len__(self) -> int:
        return len(self._live)


def _same_report(a: CommissionReport, b: CommissionReport) -> bool:
    def same(x: float, y: float) -> bool:
        return (math.isnan(x) and math.isnan(y)) or x == y

    return (a.currency == b.currency and same(a.commission, b.commission)
            and same(a.realized_pnl, b.realized_pnl))
