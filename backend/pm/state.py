"""The PortfolioManager's in-memory books: the ledger plus the indexes and row caches that make
each persisted batch a targeted update (no I/O here; the manager persists what this returns).

Folding a message returns nothing; it records what changed in a :class:`Dirty` set. Building a
batch turns a Dirty set into rows from the CURRENT state, so a batch that failed to persist is
simply merged back and rebuilt later (the latest state wins, nothing is lost).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend.core.ledger import CommissionOutcome, FillOutcome, Ledger
from backend.core.messages import FillMessage, StatusMessage
from backend.core.model import RESIDUAL, PositionKey, utc_now
from backend.errors import ConflictingFillError
from backend.pm.rows import (
    FillEntry,
    Row,
    order_row,
    portfolio_row,
    position_row,
    reject_row,
)
from backend.storage.schema import UNKNOWN_ACCOUNT_SYMBOL


@dataclass
class Dirty:
    """What changed since the last durable batch."""

    # (account, exec_id_base) -> (live fill, its report, seq, received at: epoch s), as last
    # changed
    fills: dict[tuple[str, str], FillEntry] = field(default_factory=dict)
    # (account, event_key) -> (event, seq, recorded_at)
    orders: dict[tuple[str, str], tuple[StatusMessage, int, datetime]] = field(
        default_factory=dict)
    # symbol -> reject rows
    rejects: dict[str, list[Row]] = field(default_factory=dict)
    strategies: set[str] = field(default_factory=set)
    # account -> con_ids whose portfolio rows must be recomputed
    portfolio: dict[str, set[int]] = field(default_factory=dict)
    seq: int = 0  # highest journal seq folded in
    receipt: int = 0  # highest receipt number folded in
    retry: bool = False  # a commit of (part of) this batch failed before

    def has_writes(self) -> bool:
        return self.has_facts() or self.has_state()

    def has_facts(self) -> bool:
        return bool(self.fills or self.orders or self.rejects)

    def has_state(self) -> bool:
        return bool(self.strategies or self.portfolio)

    def take_state(self, older: Dirty) -> None:
        """Move ``older``'s state markers (positions/portfolio) in here, older first."""
        self.strategies |= older.strategies
        for account, cons in older.portfolio.items():
            self.portfolio.setdefault(account, set()).update(cons)
        older.strategies, older.portfolio = set(), {}
        self.seq = max(self.seq, older.seq)
        self.receipt = max(self.receipt, older.receipt)

    def merge_newer(self, newer: Dirty) -> None:
        self.fills.update(newer.fills)
        self.orders.update(newer.orders)
        for symbol, rows in newer.rejects.items():
            self.rejects.setdefault(symbol, []).extend(rows)
        self.strategies |= newer.strategies
        for account, cons in newer.portfolio.items():
            self.portfolio.setdefault(account, set()).update(cons)
        self.seq = max(self.seq, newer.seq)
        self.receipt = max(self.receipt, newer.receipt)


@dataclass(frozen=True)
class Batch:
    """Rows to persist, per library and symbol, and the watermark they carry."""

    fills: dict[str, list[FillEntry]]
    orders: dict[str, tuple[list[Row], list[datetime]]]
    rejects: dict[str, tuple[list[Row], list[datetime]]]
    positions: dict[str, list[Row]]
    portfolio: dict[str, list[Row]]
    seq: int


class Books:
    """Ledger + attribution indexes + order dedupe + portfolio rows (current state)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.orders_seen: dict[tuple[str, str], tuple[object, ...]] = {}
        self.strategy_keys: dict[str, set[PositionKey]] = {}
        self.account_con_keys: dict[tuple[str, int], set[PositionKey]] = {}
        self.known_keys: set[PositionKey] = set()
        self.con_strategies: dict[int, set[str]] = {}
        self.con_accounts: dict[int, set[str]] = {}
        # account -> (con_id, strategy) -> portfolio row (ledger rows only)
        self.portfolio: dict[str, dict[tuple[int, str], Row]] = {}
        # account -> rows kept as found (reconciliation residuals): never recomputed here
        self.residuals: dict[str, list[Row]] = {}
        self.accounts: set[str] = set()

    # ----------------------------------------------------------------- folding
    def _index(self, key: PositionKey, dirty: Dirty) -> None:
        self.index_existing(key)
        # The fill moved the instrument's mark: every book holding it gets a fresh
        # unrealized PnL, so stored state never depends on which batch wrote it last.
        dirty.strategies.update(self.con_strategies[key.con_id])
        for account in self.con_accounts[key.con_id]:
            dirty.portfolio.setdefault(account, set()).add(key.con_id)

    def fold_fill(self, msg: FillMessage, seq: int, at: float, dirty: Dirty) -> str | None:
        """Apply one parsed fill received at ``at`` (epoch seconds); returns a reject reason
        for a conflicting re-send, or None."""
        ledger = self.ledger
        fill, report = msg
        if report is not None and report.exec_id != fill.exec_id:
            report = None  # a report of another execution is not this fill's
        key = ledger.add_new(fill, report)
        if key is not None:  # the common case: a new execution, in order
            self._index(key, dirty)
            dirty.fills[(fill.account, fill.exec_id_base)] = (
                fill, ledger.held_report(fill.exec_id), seq, at)
            return None
        if ledger.restored_keys and ledger.repeats_sealed(msg.fill, msg.commission):
            return None  # a re-delivered copy of a sealed execution: no change, nothing read
        try:
            result = ledger.apply_fill(msg.fill)
        except ConflictingFillError as exc:
            return str(exc)
        if result.outcome is FillOutcome.STALE:
            return None
        live = result.fill
        changed = result.outcome is not FillOutcome.DUPLICATE
        for key in result.affected:
            self._index(key, dirty)
        if msg.commission is not None and msg.commission.exec_id == live.exec_id:
            outcome = self.ledger.apply_commission(msg.commission)
            if outcome in (CommissionOutcome.NEW, CommissionOutcome.CHANGED):
                changed = True
                dirty.strategies.add(live.strategy)
        if changed:
            dirty.fills[(live.account, live.exec_id_base)] = (
                live, ledger.held_report(live.exec_id), seq, at)
        return None

    def fold_status(self, ev: StatusMessage, seq: int, at: datetime, dirty: Dirty) -> None:
        ident = (ev.account, ev.event_key)
        content = ev.content()
        if self.orders_seen.get(ident) == content:
            return  # an identical re-send: no change
        self.orders_seen[ident] = content
        self.accounts.add(ev.account)
        dirty.orders[ident] = (ev, seq, at)

    @staticmethod
    def reject(dirty: Dirty, account: str | None, raw: str, reason: str, field_: str,
               at: datetime, seq: int) -> None:
        symbol = account or UNKNOWN_ACCOUNT_SYMBOL
        dirty.rejects.setdefault(symbol, []).append(reject_row(raw, reason, field_, at, seq))

    def touch_all(self, dirty: Dirty) -> None:
        """Mark every strategy and account for a full state rewrite (after recovery)."""
        dirty.strategies |= set(self.strategy_keys)
        for (account, con_id) in self.account_con_keys:
            dirty.portfolio.setdefault(account, set()).add(con_id)
        for account in self.residuals:
            dirty.portfolio.setdefault(account, set())

    # -------------------------------------------------------------- building
    def _last_updated(self, key: PositionKey) -> datetime:
        """Execution time of the position's last fill (in canonical order)."""
        return self.ledger.last_fill_time(key) or utc_now()

    def position_rows(self, strategy: str, watermark: int) -> list[Row]:
        rows = []
        ledger = self.ledger
        for key in sorted(self.strategy_keys.get(strategy, ()),
                          key=lambda k: (k.account, k.con_id)):
            pos = ledger.position(key)
            if pos is None:
                continue  # its only fill was corrected into another book
            rows.append(position_row(pos, ledger.commissions(key), ledger.mark(key.con_id),
                                     self._last_updated(key),
                                     watermark))
        return rows

    def update_portfolio(self, account: str, con_ids: Iterable[int]) -> None:
        """The targeted upsert: recompute the rows of these instruments only."""
        book = self.portfolio.setdefault(account, {})
        ledger = self.ledger
        for con_id in con_ids:
            mark = ledger.mark(con_id)
            for key in self.account_con_keys.get((account, con_id), ()):
                pos = ledger.position(key)
                ident = (con_id, key.strategy)
                if pos is None or pos.is_flat:
                    book.pop(ident, None)  # zero-qty rows disappear from the portfolio
                else:
                    book[ident] = portfolio_row(
                        pos, mark, self._last_updated(key))

    def rebuild_portfolio(self) -> None:
        """Every ledger row of every account's portfolio from the current state (after a
        restart: the stored symbols are rewritten whole by later targeted upserts)."""
        by_account: dict[str, set[int]] = {}
        for account, con_id in self.account_con_keys:
            by_account.setdefault(account, set()).add(con_id)
        for account, con_ids in by_account.items():
            self.update_portfolio(account, con_ids)

    def portfolio_rows(self, account: str) -> list[Row]:
        book = self.portfolio.get(account, {})
        return [book[k] for k in sorted(book)] + self.residuals.get(account, [])

    def build(self, dirty: Dirty, *, facts: bool = True, state: bool = True) -> Batch:
        fills: dict[str, list[FillEntry]] = {}
        for (account, _base), entry in (dirty.fills if facts else {}).items():
            fills.setdefault(account, []).append(entry)
        orders: dict[str, tuple[list[Row], list[datetime]]] = {}
        for (account, _key), (ev, seq, at) in (dirty.orders if facts else {}).items():
            rows, times = orders.setdefault(account, ([], []))
            rows.append(order_row(ev, seq, at))
            times.append(ev.time)
        rejects = {symbol: (rows, [r[3] for r in rows])
                   for symbol, rows in (dirty.rejects if facts else {}).items()}
        positions = {s: self.position_rows(s, dirty.seq)
                     for s in (dirty.strategies if state else ())}
        portfolio = {}
        for account, con_ids in (dirty.portfolio if state else {}).items():
            self.update_portfolio(account, con_ids)
            portfolio[account] = self.portfolio_rows(account)
        return Batch(fills, orders, rejects, positions, portfolio, dirty.seq)

    # -------------------------------------------------------------- recovery
    def keep_foreign_rows(self, account: str, rows: list[Row]) -> None:
        """Residual rows (strategy ``_residual``, written by reconciliation) of a stored
        portfolio symbol are kept as they are whenever the manager rewrites the symbol."""
        self.residuals[account] = [r for r in rows if r[1] == RESIDUAL]

    def set_residuals(self, account: str, rows: list[Row], dirty: Dirty) -> None:
        self.residuals[account] = list(rows)
        # The symbol is rewritten whole: every instrument of the account must be in the book,
        # also right after a restart, when nothing has been folded into it yet.
        dirty.portfolio.setdefault(account, set()).update(
            con_id for (acc, con_id) in self.account_con_keys if acc == account)

    def index_existing(self, key: PositionKey) -> None:
        if key in self.known_keys:
            return
        self.known_keys.add(key)
        self.strategy_keys.setdefault(key.strategy, set()).add(key)
        self.account_con_keys.setdefault((key.account, key.con_id), set()).add(key)
        self.con_strategies.setdefault(key.con_id, set()).add(key.strategy)
        self.con_accounts.setdefault(key.con_id, set()).add(key.account)
        self.accounts.add(key.account)

    def known_content(self) -> dict[tuple[str, str], Any]:
        return self.orders_seen
