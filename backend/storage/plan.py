"""The persistence rules, as a plan of ArcticDB primitives (one module owns them).

Both stores execute the plans made here: :class:`~backend.storage.arctic.ArcticStore` with
ArcticDB calls, :class:`~backend.storage.memory.MemoryStore` with in-memory primitives that
mimic ArcticDB's (``append`` refuses rows before the tail; ``update`` replaces every row in its
date range). The rules:

* a symbol that does not exist is created with ``write``;
* rows after the stored tail are appended, in one ``append`` per symbol per commit;
* late rows (before the tail) and keyed corrections are ``update`` calls whose date range holds
  no stored row other than the ones being replaced: ``update`` deletes EVERY stored row in its
  range, so ranges are cut at every unchanged stored row. A run of adjacent changes with no
  unchanged row between them goes in one update (usually one timestamp);
* a correction (a row whose key is stored) removes the stored row wherever it is and inserts the
  new one at its own time; a late row never replaces a different row sharing its time, because
  new times are made unique against every stored time first (nanosecond offsets);
* rows reach ArcticDB sorted and unique, always (unsorted data poisons a symbol): the index
  is normalized by :mod:`backend.storage.index` (``to_utc_index`` and ``normalize_rows`` in
  :func:`prepare`, ``assign_unique`` against stored times in :func:`plan_journal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import SchemaMismatchError
from backend.storage.api import SymbolWrite
from backend.storage.frames import conform, empty_frame
from backend.storage.index import (
    Occupied,
    assign_unique,
    normalize_rows,
    ns_index,
    times_ns,
    to_utc_index,
)
from backend.storage.schema import JOURNAL_LIBRARIES, KEY_COLUMNS, STATE_LIBRARIES


@dataclass(frozen=True)
class Prepared:
    """One symbol's validated share of a commit (several SymbolWrites of a symbol merged)."""

    library: str
    symbol: str
    rows: pd.DataFrame | None  # journal: schema layout, UTC index sorted and unique
    # within the batch (index.normalize_rows), keys deduplicated
    state: pd.DataFrame | None  # state: schema layout, RangeIndex
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True)
class Write:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Append:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Update:
    """``update(frame, date_range=(start, end))``: replaces every stored row in the range."""

    frame: pd.DataFrame
    start: int
    end: int


@dataclass(frozen=True)
class Delete:
    """``delete_data_in_range((start, end))`` (inclusive ns bounds)."""

    start: int
    end: int


@dataclass(frozen=True)
class WriteMetadata:
    pass


Op = Write | Append | Update | Delete | WriteMetadata


@dataclass
class SymbolState:
    """What the writer knows of a stored journal symbol (enough to plan, not the rows)."""

    exists: bool
    occupied: Occupied
    keys: dict[str, int] | None  # key -> stored time (ns) for keyed libraries

    @classmethod
    def missing(cls, library: str) -> SymbolState:
        return cls(False, Occupied(), {} if library in KEY_COLUMNS else None)

    @classmethod
    def from_index(
        cls, library: str, times_ns: np.ndarray, keys: Sequence[str] | None
    ) -> SymbolState:
        occupied = Occupied(times_ns.tolist())
        key_map = None
        if library in KEY_COLUMNS:
            key_map = dict(zip(keys or [], times_ns.tolist(), strict=True))
        return cls(True, occupied, key_map)


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    after: SymbolState
    metadata: Mapping[str, Any] | None


def prepare(
    writes: Sequence[SymbolWrite], *, naive_tz: str | None = None
) -> list[Prepared]:
    """Validate every write before anything is persisted; merge writes of the same symbol.

    Rows of one symbol are concatenated in commit order (for keyed libraries the last row of
    a key wins); a state symbol keeps its last frame; the last metadata given wins.
    """
    merged: dict[tuple[str, str], Prepared] = {}
    for w in writes:
        if not isinstance(w, SymbolWrite):
            raise SchemaMismatchError(f"commit expects SymbolWrite items, got {type(w).__name__}")
        if not isinstance(w.symbol, str) or not w.symbol:
            raise SchemaMismatchError(f"library {w.library!r}: symbol={w.symbol!r} must be a str")
        rows = state = None
        if w.library in JOURNAL_LIBRARIES:
            if w.state is not None or (w.rows is None and w.metadata is None):
                raise SchemaMismatchError(
                    f"library {w.library!r} symbol {w.symbol!r}: journal writes set rows="
                )
            if w.rows is not None:
                rows = conform(w.library, w.rows)
                rows.index = to_utc_index(w.rows.index, naive_tz=naive_tz)
        elif w.library in STATE_LIBRARIES:
            if w.rows is not None or w.state is None:
                raise SchemaMismatchError(
                    f"library {w.library!r} symbol {w.symbol!r}: state writes set state="
                )
            state = conform(w.library, w.state).reset_index(drop=True)
        else:
            conform(w.library, pd.DataFrame())  # raises: unknown library
        key = (w.library, w.symbol)
        prev = merged.get(key)
        if prev is not None:
            if rows is not None and prev.rows is not None:
                rows = pd.concat([prev.rows, rows])
            elif rows is None:
                rows = prev.rows
            if state is None:
                state = prev.state
        metadata = w.metadata if w.metadata is not None else (prev.metadata if prev else None)
        merged[key] = Prepared(w.library, w.symbol, rows, state, metadata)
    out = []
    for p in merged.values():
        if p.rows is not None:
            rows = p.rows
            key_col = KEY_COLUMNS.get(p.library)
            if key_col is not None:  # before sorting: the last row of a key in commit order
                repeated = rows[key_col].duplicated(keep="last").to_numpy()
                if repeated.any():  # a filtered copy costs ~0.3 ms: only when needed
                    rows = rows[~repeated]
            # sorted and unique within the batch; against stored times in plan_journal.
            # ``rows`` is this store's own copy (conform copied it, concat/filter made new
            # frames): normalize_rows may set its index in place.
            p = Prepared(p.library, p.symbol, normalize_rows(rows, owned=True), None,
                         p.metadata)
        out.append(p)
    return out


def plan_journal(prep: Prepared, before: SymbolState) -> Plan:
    """The primitives that apply ``prep.rows`` to a symbol in state ``before``."""
    rows = prep.rows
    key_col = KEY_COLUMNS.get(prep.library)
    if rows is None or len(rows) == 0:
        if prep.metadata is None:
            return Plan((), before, None)
        if not before.exists:  # metadata alone creates the symbol, empty but typed
            after = SymbolState(True, before.occupied.copy(), before.keys)
            return Plan((Write(empty_frame(prep.library)),), after, prep.metadata)
        return Plan((WriteMetadata(),), before, prep.metadata)

    batch_keys = rows[key_col].tolist() if key_col is not None else []
    known = before.keys or {}
    removed = [known[k] for k in batch_keys if k in known]
    raw = times_ns(rows.index)
    tail0 = before.occupied.tail
    if not removed and (tail0 is None or int(raw[0]) > tail0):
        # Hot path (new rows after the tail): no copy of the symbol's index, it is extended
        # in place; ``before`` is consumed (a caller whose write fails drops its cached state).
        unchanged = after_occ = before.occupied
        keys = before.keys
        times = assign_unique(raw, unchanged)
    else:
        unchanged = before.occupied.copy()
        for old in removed:
            unchanged.remove(old)
        keys = dict(before.keys) if before.keys is not None else None
        times = assign_unique(raw, unchanged)
        after_occ = unchanged.copy()
    tail = unchanged.tail  # greatest stored time that stays (before this batch's rows)
    rows.index = ns_index(times)  # ``prep.rows`` is the store's own copy (see prepare)
    stamps = times.tolist()
    after_occ.extend(stamps)
    if keys is not None and key_col is not None:
        keys.update(zip(rows[key_col].tolist(), stamps, strict=True))
    after = SymbolState(True, after_occ, keys)

    if not before.exists:
        return Plan((Write(rows),), after, prep.metadata)

    is_new = times > tail if tail is not None else np.ones(len(times), dtype=bool)
    if not removed and bool(is_new.all()):
        # Hot path: only new rows after the tail, one append (no filtered copies, ~0.6 ms).
        return Plan((Append(rows),), after, prep.metadata)
    # Changes at or before the tail: ranges cut at every unchanged stored row.
    late_rows = rows[~is_new]
    points = sorted(
        [r for r in removed if tail is not None and r < tail] + times_ns(late_rows.index).tolist()
    )
    late_ns = times_ns(late_rows.index)
    groups: list[tuple[int, int]] = []
    for p in points:
        if groups and unchanged.count_between(groups[-1][1], p) == 0:
            groups[-1] = (groups[-1][0], p)
        else:
            groups.append((p, p))
    # Ops that remove stored rows run first, so a reader between two versions of one commit
    # may miss a moved row but does not see its key twice (except when a row moves between
    # two late ranges that both hold removals).
    deletes: list[Op] = []
    removing: list[Op] = []
    inserting: list[Op] = []
    for lo, hi in groups:
        sel = (late_ns >= lo) & (late_ns <= hi)
        holds_removed = any(lo <= r <= hi for r in removed)
        if not sel.any():
            deletes.append(Delete(lo, hi))
        elif holds_removed:
            removing.append(Update(late_rows[sel], lo, hi))
        else:
            inserting.append(Update(late_rows[sel], lo, hi))
    # After the tail: removed rows there are replaced in the same call as the new rows.
    new_rows = rows[is_new]
    trailing = [r for r in removed if tail is None or r > tail]
    if trailing:
        bounds = trailing + times_ns(new_rows.index).tolist()
        if len(new_rows):
            removing.append(Update(new_rows, min(bounds), max(bounds)))
        else:
            deletes.append(Delete(min(bounds), max(bounds)))
    elif len(new_rows):
        inserting.append(Append(new_rows))
    ops = deletes + removing + inserting
    return Plan(tuple(ops), after, prep.metadata)
