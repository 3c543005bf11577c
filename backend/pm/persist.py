"""Turn a built :class:`~backend.pm.state.Batch` into ONE ``Store.commit`` (one write per symbol).

Runs in a worker thread. Column lists become DataFrames here, off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from backend.core.model import RESIDUAL
from backend.pm.rows import Row, fill_frame, frame_rows, journal_frame, state_frame
from backend.storage.api import Store, SymbolWrite
from backend.storage.schema import FILLS, ORDERS, PORTFOLIO, POSITIONS, REJECTS

WRITER = "portfolio_manager"
_STRATEGY_AT = 1  # position of "strategy" in a portfolio row


def _residual_rows(store: Store, account: str, run_id: str) -> list[Row] | None:
    """The residual rows of ``portfolio/<account>`` when its latest version was written by
    something other than a PortfolioManager (e.g. a script committing through the store);
    None when a PortfolioManager wrote it: this one (our copy is current) or an earlier run,
    whose residual rows recovery loaded (only one manager runs at a time: the lease)."""
    del run_id  # any manager's version is accounted for
    meta = store.read_metadata(PORTFOLIO, account)
    if meta is not None and meta.get("writer") == WRITER:
        return None
    frame = store.read(PORTFOLIO, account)
    return [r for r in frame_rows(frame, PORTFOLIO) if r[_STRATEGY_AT] == RESIDUAL]


def commit_batch(store: Store, batch: object, *, run_id: str, retry: bool,
                 on_residuals: Callable[[str, list[Row]], None] | None = None,
                 compact: bool = True) -> None:
    from backend.pm.state import Batch

    assert isinstance(batch, Batch)
    meta = {"watermark": batch.seq, "run_id": run_id, "writer": WRITER}
    writes: list[SymbolWrite] = [
        SymbolWrite(FILLS, account, rows=fill_frame(entries), metadata=meta)
        for account, entries in batch.fills.items() if entries]
    for library, per_symbol in ((ORDERS, batch.orders),
                                (REJECTS, batch.rejects)):
        for symbol, (rows, times) in per_symbol.items():
            if library == REJECTS and retry:
                rows, times = _unstored_rejects(store, symbol, rows, times)
            if rows:
                writes.append(SymbolWrite(library, symbol, rows=journal_frame(library, rows, times),
                                          metadata=meta))
    for strategy, rows in batch.positions.items():
        writes.append(SymbolWrite(POSITIONS, strategy, state=state_frame(POSITIONS, rows),
                                  metadata=meta))
    for account, rows in batch.portfolio.items():
        foreign = _residual_rows(store, account, run_id)
        if foreign is not None:
            rows = [r for r in rows if r[_STRATEGY_AT] != RESIDUAL] + foreign
            if on_residuals is not None:
                on_residuals(account, foreign)
        writes.append(SymbolWrite(PORTFOLIO, account, state=state_frame(PORTFOLIO, rows),
                                  metadata=meta))
    store.commit(writes, compact=compact)


def _unstored_rejects(store: Store, symbol: str, rows: list[Row], times: list[datetime]
                      ) -> tuple[list[Row], list[datetime]]:
    """Rejects are not keyed: after a failed commit, drop rows whose seq is already stored."""
    stored = set(store.read(REJECTS, symbol, columns=["seq"])["seq"].tolist())
    keep = [i for i, r in enumerate(rows) if r[-1] not in stored]
    return [rows[i] for i in keep], [times[i] for i in keep]
