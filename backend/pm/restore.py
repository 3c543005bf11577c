"""Restart from stored positions rows, checked against ``fills``; refold only what disagrees.

``fills`` is the source of truth; ``positions`` rows are derived from it and carry the journal
watermark of the batch that wrote them. On a restart every (account, strategy, con_id) key
found in ``fills`` is either

* **restored** from its positions row, its fills left unread (:meth:`Ledger.restore`: they
  are read the first time a re-delivered duplicate, a correction, an out-of-order fill or a
  late commission report needs them), when the row provably holds the fold of exactly those
  fills: no fill of the key is newer than the row's watermark, the fill count and the last
  exec_id in canonical order match, the net quantity equals the sum of signed fill
  quantities, and the cash identity of the average-cost method holds::

      realized_pnl - avg_cost * qty * multiplier == -sum(signed_qty * price * multiplier)

  (within 1e-9 of the gross traded value, the float64 tolerance of a fold); or
* **refolded** from its fills (the rows of that key only), when there is no row, the row is
  of an older schema, or any check fails (a crash between the facts and the state commit, a
  correction or late report after the row was written, a hand-edited library). Its strategy
  and portfolio rows are rewritten once the manager runs. The refold runs over the stored
  columns (:func:`fold_numbers`) and the key then rests unread like a restored one; a key
  holding an execution stored twice is refolded fill by fill through the ledger instead (its
  correction rule decides which row counts).

Either way the ledger ends in the state a full replay would give (tested against one), and
recovery costs a columnar read of ``fills`` plus a dictionary entry per execution instead of
building and folding a ``Fill`` per row (docs/events.md has the numbers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backend.core.ledger import RestoredKey, row_facts_print, row_report_print
from backend.core.model import CommissionReport, Fill, PositionKey, is_flat
from backend.core.position import Position, fold_numbers
from backend.errors import SchemaMismatchError
from backend.pm.rows import fills_from_frame, instrument_of
from backend.pm.state import Books
from backend.storage.api import Store
from backend.storage.schema import FILLS, POSITIONS

_ROW_FIELDS = ("qty", "avg_cost", "realized_pnl", "fill_count", "last_exec_id",
               "open_price_min", "open_price_max", "watermark")
_REL_TOL = 1e-9


@dataclass
class RestoreStats:
    restored: int = 0  # keys restored from their positions row
    refolded: int = 0  # keys refolded from their fills
    fills: int = 0
    # strategy -> why its rows disagreed (first reason per strategy, for the log)
    reasons: dict[str, str] = field(default_factory=dict)
    # keys whose stored rows must be rewritten (refolded keys, stale rows)
    stale_strategies: set[str] = field(default_factory=set)
    stale_portfolio: set[tuple[str, int]] = field(default_factory=set)


def stored_positions(store: Store, stats: RestoreStats,
                     log: logging.LoggerAdapter  # type: ignore[type-arg]
                     ) -> dict[PositionKey, dict[str, Any]]:
    """Every positions row by key; a strategy whose symbol cannot be read as the current
    schema contributes none (its keys are refolded)."""
    rows: dict[PositionKey, dict[str, Any]] = {}
    for strategy in store.list_symbols(POSITIONS):
        try:
            frame = store.read(POSITIONS, strategy)
        except SchemaMismatchError as exc:
            log.warning("positions/%s is not of the current schema (%s): its keys are "
                        "refolded from fills", strategy, exc)
            stats.stale_strategies.add(strategy)
            continue
        cols = [frame[c].tolist() for c in ("account", "con_id", *_ROW_FIELDS)]
        for account, con_id, *values in zip(*cols, strict=True):
            rows[PositionKey(account, strategy, int(con_id))] = dict(
                zip(_ROW_FIELDS, values, strict=True))
    return rows


def _disagreement(row: dict[str, Any] | None, n: int, top_seq: int, last_exec_id: str,
                  net_qty: float, cash: float, gross: float, multiplier: float) -> str | None:
    """Why this positions row is not the fold of these fills, or None when it is."""
    if row is None:
        return "no positions row"
    if top_seq > row["watermark"]:
        return f"a fill (seq={top_seq}) is newer than the row's watermark={row['watermark']}"
    if row["fill_count"] != n:
        return f"fill_count={row['fill_count']} but {n} fills are stored"
    if row["last_exec_id"] != last_exec_id:
        return f"last_exec_id={row['last_exec_id']!r} but the last fill is {last_exec_id!r}"
    qty, avg, realized = row["qty"], row["avg_cost"], row["realized_pnl"]
    if not math.isclose(qty, net_qty, rel_tol=_REL_TOL, abs_tol=1e-9):
        return f"qty={qty} but the fills sum to {net_qty}"
    held = 0.0 if is_flat(qty) else avg * qty * multiplier
    if not math.isclose(realized - held, -cash, rel_tol=_REL_TOL,
                        abs_tol=_REL_TOL * gross + 1e-9):
        return (f"realized_pnl={realized}, avg_cost={avg} do not match the cash flow "
                f"{-cash} of the fills")
    lo, hi = row["open_price_min"], row["open_price_max"]
    if not is_flat(qty) and not lo <= avg <= hi:
        # The fold keeps the average inside the range of the opening prices. NaN bounds are a
        # row written before positions carried them (an older schema): restored, they would
        # stay NaN for good, unlike the fold's.
        return (f"avg_cost={avg} is not inside open_price_min={lo}, open_price_max={hi}"
                + (" (a row of an older schema)" if math.isnan(lo) or math.isnan(hi) else ""))
    return None


def _loader(frame: pd.DataFrame, positions: Any, account: str
            ) -> Callable[[], Iterable[tuple[Fill, CommissionReport | None]]]:
    def load() -> Iterable[tuple[Fill, CommissionReport | None]]:
        return [(f, r) for f, r, _ in fills_from_frame(frame.iloc[positions], account)]
    return load


def restore_account(frame: pd.DataFrame, account: str, books: Books,
                    rows: dict[PositionKey, dict[str, Any]], stats: RestoreStats) -> int:
    """Restore or refold every key of one account's stored fills; returns the top seq."""
    if frame.empty:
        return 0
    ledger = books.ledger
    # Canonical order (execution time, exec_id), on the raw datetime64 column (naive UTC).
    when = frame["exec_time"].to_numpy(dtype="datetime64[ns]")
    order = np.lexsort((frame["exec_id"].to_numpy(), when))
    frame = frame.iloc[order].reset_index(drop=True)
    when = when[order]
    signed = frame["qty"].to_numpy(dtype=float) * np.where(
        frame["side"].to_numpy() == "BUY", 1.0, -1.0)
    flow = signed * frame["price"].to_numpy(dtype=float) * frame["multiplier"].to_numpy(
        dtype=float)
    exec_ids = frame["exec_id"].to_numpy(dtype=object)
    bases = frame["exec_id_base"].to_numpy(dtype=object)
    revisions = frame["revision"].to_numpy()
    seqs = frame["seq"].to_numpy()
    commission = frame["commission"].to_numpy(dtype=float)
    ccys = frame["commission_currency"].to_numpy(dtype=object)
    prices = frame["price"].to_numpy(dtype=float)
    top = int(seqs.max())
    multipliers = frame["multiplier"].to_numpy(dtype=float)
    # Executions stored more than once (a hand-edited library, a correction stored beside its
    # original): the keys holding them are refolded fill by fill, through the ledger's
    # dedupe and correction rules.
    repeated = frame["exec_id_base"].duplicated(keep=False).to_numpy()
    # The executions' prints (a re-delivered copy is then recognised without reading the
    # key, Ledger.repeats_sealed), computed for a key when its first copy arrives.
    micros = when.astype("datetime64[us]").astype(np.int64)
    pnl = frame["broker_realized_pnl"].to_numpy(dtype=float)
    reported = ~np.isnan(commission)  # a report is held only with a known commission
    con_ids, sides, qtys = (frame["con_id"].to_numpy(), frame["side"].to_numpy(dtype=object),
                            frame["qty"].to_numpy(dtype=float))

    def prints(idx: Any) -> Callable[[], tuple[list[int], dict[str, int]]]:
        def compute() -> tuple[list[int], dict[str, int]]:
            facts = [row_facts_print(e, account, c, side, q, p, us)
                     for e, c, side, q, p, us in zip(
                         exec_ids[idx].tolist(), con_ids[idx].tolist(), sides[idx].tolist(),
                         qtys[idx].tolist(), prices[idx].tolist(), micros[idx].tolist(),
                         strict=True)]
            mine = idx[reported[idx]]
            reports = {e: row_report_print(c, ccy, r) for e, c, ccy, r in zip(
                exec_ids[mine].tolist(), commission[mine].tolist(), ccys[mine].tolist(),
                pnl[mine].tolist(), strict=True)}
            return facts, reports
        return compute

    groups: dict[Any, Any] = frame.groupby(["strategy", "con_id"], sort=False).indices
    for group, positions in groups.items():
        strategy, con_id = group
        idx = np.asarray(positions)
        key = PositionKey(account, str(strategy), int(con_id))
        last = int(idx[-1])  # rows are in canonical order: the key's last fill
        inst = instrument_of(frame.iloc[last])
        last_exec_id = str(exec_ids[last])
        row = rows.get(key)
        why = _disagreement(row, len(idx), int(seqs[idx].max()), last_exec_id,
                            float(signed[idx].sum()), float(flow[idx].sum()),
                            float(np.abs(flow[idx]).sum()), inst.multiplier)
        stats.fills += len(idx)
        if why is not None:
            stats.reasons.setdefault(key.strategy, f"{key}: {why}")
            stats.stale_strategies.add(key.strategy)
            stats.stale_portfolio.add((account, key.con_id))
            stats.refolded += 1
        if why is not None and repeated[idx].any():
            for fill, report, _ in fills_from_frame(frame.iloc[idx], account):
                ledger.apply_fill(fill)
                if report is not None:
                    ledger.apply_commission(report)
            books.index_existing(key)
            continue
        if why is None:
            assert row is not None
            numbers = (float(row["qty"]), float(row["avg_cost"]), float(row["realized_pnl"]),
                       float(row["open_price_min"]), float(row["open_price_max"]))
            stats.restored += 1
        else:
            # Refolded from the columns (~1 us a fill, against ~15 building and applying a
            # Fill each): the key then rests like a restored one, its fills unread.
            numbers = fold_numbers(signed[idx].tolist(), prices[idx].tolist(),
                                   multipliers[idx].tolist())
        qty, avg, realized, lo, hi = numbers
        position = Position(key=key, instrument=inst, qty=qty, avg_cost=avg,
                            realized_pnl=realized, fill_count=len(idx),
                            last_exec_id=last_exec_id, open_price_min=lo, open_price_max=hi)
        fees = commission[idx]
        known = ~np.isnan(fees)
        by_ccy: dict[str, tuple[float, int]] = {}
        if known.any():
            fee_ccys = ccys[idx][known]
            for ccy in sorted(set(fee_ccys.tolist())):
                mine = fees[known][fee_ccys == ccy]
                by_ccy[ccy] = (float(mine.sum()), len(mine))
        at = pd.Timestamp(when[last]).tz_localize("UTC").to_pydatetime()
        ledger.restore(key, RestoredKey(
            position=position, last_sort=(at, last_exec_id),
            last_price=float(prices[last]), exec_ids=exec_ids[idx].tolist(),
            bases=bases[idx].tolist(), revisions=revisions[idx].tolist(),
            commissions=by_ccy, pending=int((~known).sum()),
            load=_loader(frame, idx, account), prints=prints(idx)))
        books.index_existing(key)
    return top


def restore_fills(store: Store, books: Books,
                  log: logging.LoggerAdapter  # type: ignore[type-arg]
                  ) -> tuple[int, RestoreStats]:
    """Rebuild the ledger from ``positions`` rows checked against ``fills``; returns the
    highest seq stored in ``fills`` and what was restored, refolded and must be rewritten."""
    stats = RestoreStats()
    rows = stored_positions(store, stats, log)
    top = 0
    for account in store.list_symbols(FILLS):
        top = max(top, restore_account(store.read(FILLS, account), account, books, rows,
                                       stats))
    for key in rows.keys() - books.known_keys:  # a row whose fills are not stored
        stats.reasons.setdefault(key.strategy, f"{key}: a positions row without fills")
        stats.stale_strategies.add(key.strategy)
        stats.stale_portfolio.add((key.account, key.con_id))
    for strategy, why in sorted(stats.reasons.items()):
        log.warning("positions/%s disagrees with fills (%s): refolded from fills",
                    strategy, why)
    return top, stats
