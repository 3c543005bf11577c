"""MemoryStore: the in-memory twin of the ArcticDB store, for fast unit tests.

It runs the SAME plans (:mod:`backend.storage.plan`) as :class:`ArcticStore`, executed by
in-memory primitives that behave like ArcticDB's: ``write`` creates a version, ``append``
refuses rows before the stored tail, ``update`` replaces every row in its date range,
``delete_data_in_range`` removes a range; each primitive makes a new version (so version
numbers for ``as_of`` match the ArcticDB store), metadata is per version, snapshots pin
versions. No writer lease (a MemoryStore is private to its owner).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import StorageError, UnsortedIndexError
from backend.storage.api import Progress, SymbolWrite
from backend.storage.frames import check_columns, empty_frame, schema_of, type_read
from backend.storage.index import times_ns, ts_ns
from backend.storage.plan import (
    Append,
    Delete,
    Op,
    SymbolState,
    Update,
    Write,
    WriteMetadata,
    plan_journal,
    prepare,
)
from backend.storage.schema import KEY_COLUMNS, LIBRARIES, STATE_LIBRARIES


@dataclass(frozen=True)
class _Version:
    number: int
    frame: pd.DataFrame
    metadata: Mapping[str, Any] | None
    created: pd.Timestamp


class MemoryStore:
    """Implements :class:`backend.storage.api.Store` in memory."""

    def __init__(self, uri: str = "memory://", *, naive_tz: str | None = None) -> None:
        self.uri = uri
        self.naive_tz = naive_tz
        self._lock = threading.RLock()
        self._versions: dict[tuple[str, str], list[_Version]] = {}
        self._next: dict[tuple[str, str], int] = {}
        self._snapshots: dict[str, dict[tuple[str, str], int]] = {}
        self._closed = False

    # -- writing ---------------------------------------------------------------------------
    def commit(self, writes: Sequence[SymbolWrite], *, compact: bool = True) -> None:
        del compact  # nothing fragments here
        self._check_open()
        prepared = prepare(writes, naive_tz=self.naive_tz)
        with self._lock:
            plans = []
            for p in prepared:
                if p.state is not None:
                    continue
                plans.append((p, plan_journal(p, self._state(p.library, p.symbol))))
            for p in prepared:
                if p.state is not None:
                    self._new_version(p.library, p.symbol, p.state, p.metadata)
            for p, plan in plans:
                for i, op in enumerate(plan.ops):
                    last = i == len(plan.ops) - 1
                    self._apply(p.library, p.symbol, op, plan.metadata if last else None)

    def _state(self, library: str, symbol: str) -> SymbolState:
        latest = self._latest(library, symbol)
        if latest is None:
            return SymbolState.missing(library)
        key_col = KEY_COLUMNS.get(library)
        keys = latest.frame[key_col].tolist() if key_col else None
        return SymbolState.from_index(library, times_ns(latest.frame.index), keys)

    def _apply(
        self, library: str, symbol: str, op: Op, metadata: Mapping[str, Any] | None
    ) -> None:
        latest = self._latest(library, symbol)
        current = latest.frame if latest is not None else None
        if isinstance(op, Write):
            new = op.frame
        elif current is None:
            raise StorageError(f"{library}/{symbol}: {type(op).__name__} on a missing symbol")
        elif isinstance(op, Append):
            if len(current) and op.frame.index[0] < current.index[-1]:
                raise UnsortedIndexError(
                    f"{library}/{symbol}: append starting {op.frame.index[0]} before the "
                    f"stored tail {current.index[-1]}"
                )
            new = pd.concat([current, op.frame])
        elif isinstance(op, Update | Delete):
            t = times_ns(current.index)
            keep = current[(t < op.start) | (t > op.end)]
            if isinstance(op, Update):
                new = pd.concat([keep, op.frame])
                new = new.iloc[np.argsort(times_ns(new.index), kind="stable")]
            else:
                new = keep
                if metadata is not None:  # ArcticDB: delete_data_in_range, then write_metadata
                    self._new_version(library, symbol, new, None)
        elif isinstance(op, WriteMetadata):
            new = current
        else:  # pragma: no cover
            raise StorageError(f"unknown op {op!r}")
        self._new_version(library, symbol, new, metadata)

    def _new_version(
        self, library: str, symbol: str, frame: pd.DataFrame, metadata: Mapping[str, Any] | None
    ) -> None:
        key = (library, symbol)
        number = self._next.get(key, 0)
        self._next[key] = number + 1
        meta = dict(metadata) if metadata is not None else None
        version = _Version(number, frame.copy(), meta, pd.Timestamp.now(tz="UTC"))
        self._versions.setdefault(key, []).append(version)

    # -- reading ---------------------------------------------------------------------------
    def _latest(self, library: str, symbol: str) -> _Version | None:
        versions = self._versions.get((library, symbol))
        return versions[-1] if versions else None

    def _version(
        self, library: str, symbol: str, as_of: int | str | pd.Timestamp | None
    ) -> _Version | None:
        versions = self._versions.get((library, symbol), [])
        if as_of is None:
            return versions[-1] if versions else None
        if isinstance(as_of, str):
            if as_of not in self._snapshots:
                raise StorageError(f"as_of={as_of!r}: no such snapshot")
            number = self._snapshots[as_of].get((library, symbol))
            return next((v for v in versions if v.number == number), None)
        if isinstance(as_of, int | np.integer) and not isinstance(as_of, bool):
            return next((v for v in versions if v.number == int(as_of)), None)
        bound = ts_ns(pd.Timestamp(as_of))
        before = [v for v in versions if bound is not None and v.created.value <= bound]
        return before[-1] if before else None

    def read(
        self,
        library: str,
        symbol: str,
        *,
        as_of: int | str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
        date_range: tuple[pd.Timestamp | None, pd.Timestamp | None] | None = None,
    ) -> pd.DataFrame:
        schema_of(library)
        check_columns(library, columns)
        with self._lock:
            version = self._version(library, symbol, as_of)
        if version is None:
            return empty_frame(library, columns)
        frame = version.frame
        if date_range is not None and library not in STATE_LIBRARIES:
            lo, hi = ts_ns(date_range[0]), ts_ns(date_range[1])
            t = times_ns(frame.index)
            mask = np.ones(len(frame), dtype=bool)
            if lo is not None:
                mask &= t >= lo
            if hi is not None:
                mask &= t <= hi
            frame = frame[mask]
        out = frame[list(columns)] if columns is not None else frame
        return type_read(library, out.copy(), columns)

    def read_metadata(
        self, library: str, symbol: str, *, as_of: int | str | pd.Timestamp | None = None
    ) -> Mapping[str, Any] | None:
        schema_of(library)
        with self._lock:
            version = self._version(library, symbol, as_of)
        return dict(version.metadata) if version and version.metadata is not None else None

    def preload(self, library: str, symbols: Sequence[str]) -> None:
        """Nothing to load: this store's symbols live in memory."""
        del library, symbols

    def list_versions(self, library: str, symbol: str) -> list[int]:
        """Version numbers of a symbol still stored, oldest first."""
        with self._lock:
            return [v.number for v in self._versions.get((library, symbol), [])]

    def list_symbols(self, library: str) -> list[str]:
        schema_of(library)
        with self._lock:
            return sorted(s for (lib, s), v in self._versions.items() if lib == library and v)

    # -- maintenance -----------------------------------------------------------------------
    def snapshot(self, name: str, progress: Progress | None = None) -> None:
        self._check_open()
        if not isinstance(name, str) or not name:
            raise StorageError(f"snapshot name={name!r}: must be a non-empty str")
        with self._lock:
            if name in self._snapshots:
                raise StorageError(f"snapshot name={name!r} already exists")
            self._snapshots[name] = {k: v[-1].number for k, v in self._versions.items() if v}
        if progress is not None:
            for i, library in enumerate(LIBRARIES, 1):
                progress(library, i, len(LIBRARIES))

    def list_snapshots(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def compact_due(self) -> bool:
        """Nothing is fragmented in memory: never due."""
        self._check_open()
        return False

    def compact(self, library: str | None = None, progress: Progress | None = None) -> int:
        """Nothing is fragmented in memory: reports every journal symbol as done, returns 0."""
        self._check_open()
        libs = [library] if library is not None else list(LIBRARIES)
        for lib in libs:
            schema_of(lib)
        symbols = [(lib, s) for lib in libs for s in self.list_symbols(lib)]
        for i, (_, s) in enumerate(symbols, 1):
            if progress is not None:
                progress(s, i, len(symbols))
        return 0

    def prune(self, keep_last: int, grace_seconds: float, progress: Progress | None = None) -> int:
        self._check_open()
        if keep_last < 1:
            raise StorageError(f"keep_last={keep_last!r}: must be >= 1 (the latest is kept)")
        now = pd.Timestamp.now(tz="UTC")
        removed = 0
        with self._lock:
            pinned = {(k, n) for snap in self._snapshots.values() for k, n in snap.items()}
            keys = sorted(self._versions)
            for i, key in enumerate(keys, 1):
                versions = self._versions[key]
                old = versions[:-keep_last]
                gone = {
                    v.number
                    for v in old
                    if (key, v.number) not in pinned
                    and (now - v.created).total_seconds() >= grace_seconds
                }
                self._versions[key] = [v for v in versions if v.number not in gone]
                removed += len(gone)
                if progress is not None:
                    progress(key[1], i, len(keys))
        return removed

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"store {self.uri!r} is closed")

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
