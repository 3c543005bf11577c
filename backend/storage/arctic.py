"""ArcticStore: the Store protocol on ArcticDB (``lmdb://``, ``mem://``, ``s3://``).

Rules this module enforces (the facts behind them are in docs/storage.md):

* ONE ``Arctic`` instance per root and ONE ``Library`` object per library per process (a
  second Library object for the same library silently loses appends; LMDB refuses a second
  open of a path). A process-wide registry hands out shared, reference-counted handles.
* A writer holds the root's lease (:mod:`backend.storage.lease`) for as long as it is open.
* Plans come from :mod:`backend.storage.plan`: ``write`` only to create, ``append`` for rows
  after the tail (batched over symbols with ``append_batch``/``write_batch``), ``update`` /
  ``delete_data_in_range`` for late rows and keyed corrections, one unchanged-row-free range
  at a time. ``validate_index=True`` everywhere so unsorted data can never reach a symbol.
* Compaction runs after the commit that made it due, one symbol per commit: symbols written
  together (the fills of two accounts) reach the threshold together and would double the pause.
* The writer knows each journal symbol's stored times (and key -> time for keyed libraries),
  loaded once lazily by reading only the key column (or only the index), then kept current.
* Readers take no lease and retry a read once when a version was pruned under them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd

from backend.errors import StorageError
from backend.storage import lease as lease_mod
from backend.storage.api import Progress, SymbolWrite
from backend.storage.frames import check_columns, empty_frame, schema_of, type_read
from backend.storage.handles import (
    DEFAULT_COMPACT_EVERY,
    Handle,
    acquire_handle,
    consolidated_frames,
    fresh_version_chains,
    is_missing_key,
    is_no_such_version,
    library_options,
    quiet_reads,
    refresh_version_cache,
    release_handle,
    short_storage_lock_wait,
)
from backend.storage.index import times_ns
from backend.storage.plan import (
    Append,
    Delete,
    Plan,
    Prepared,
    SymbolState,
    Update,
    Write,
    WriteMetadata,
    plan_journal,
    prepare,
)
from backend.storage.schema import (
    JOURNAL_LIBRARIES,
    KEY_COLUMNS,
    LIBRARIES,
    RECONCILIATION,
    STATE_LIBRARIES,
)
from backend.storage.uri import parse_uri

T = TypeVar("T")
_log = logging.getLogger(__name__)

def _utc(value: Any) -> Any:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _ns(value: int) -> pd.Timestamp:
    return pd.Timestamp(value, unit="ns", tz="UTC")


class ArcticStore:
    """Implements :class:`backend.storage.api.Store` on ArcticDB."""

    def __init__(
        self,
        uri: str,
        *,
        writer: bool = True,
        naive_tz: str | None = None,
        compact_every: int | None = DEFAULT_COMPACT_EVERY,
    ) -> None:
        self.uri = uri
        self.writer = writer
        self.naive_tz = naive_tz
        self.compact_every = compact_every
        self._parsed = parse_uri(uri)
        if self._parsed.kind == "memory":
            raise StorageError(f"uri={uri!r}: memory:// is the MemoryStore, use open_store")
        self._lock = threading.RLock()
        self._states: dict[tuple[str, str], SymbolState] = {}
        self._writes_since_compact: dict[tuple[str, str], int] = {}
        self._lease: lease_mod.Lease | None = None
        self._handle: Handle | None = None
        if writer:
            self._lease = lease_mod.acquire(self._parsed.kind, self._parsed.root)
        try:
            self._handle = acquire_handle(self._parsed)
            if writer:
                with short_storage_lock_wait():
                    for name in LIBRARIES:
                        self._lib(name, create=True)
                        self.list_symbols(name)  # builds the symbol list now, not on first use
        except BaseException:
            self.close()
            raise

    # -- handles -----------------------------------------------------------------------------
    @property
    def lease_holder(self) -> str | None:
        """This store's lease description when it is a writer, else None."""
        return self._lease.holder if self._lease is not None else None

    def _lib(self, name: str, *, create: bool = False) -> Any:
        """The process's one Library object for ``name`` (None if missing and not created)."""
        schema_of(name)
        handle = self._require_handle()
        with handle.lock:
            lib = handle.libs.get(name)
            if lib is not None:
                return lib
            try:
                if handle.arctic.has_library(name):
                    lib = handle.arctic.get_library(name)
                elif create:
                    lib = handle.arctic.create_library(name, library_options(name))
                else:
                    return None
            except Exception as exc:
                raise StorageError(f"library {name!r} at {self.uri!r}: {exc}") from exc
            consolidated_frames(lib)
            handle.libs[name] = lib
            return lib

    def _require_handle(self) -> Handle:
        if self._handle is None:
            raise StorageError(f"store {self.uri!r} is closed")
        return self._handle

    def _require_writer(self) -> None:
        self._require_handle()
        if not self.writer:
            raise StorageError(f"store {self.uri!r} was opened read-only (writer=False)")

    # -- writing ---------------------------------------------------------------------------
    def commit(self, writes: Sequence[SymbolWrite], *, compact: bool = True) -> None:
        libraries = {w.library for w in writes}
        if libraries == {RECONCILIATION}:
            # The one shared library: any store may append reports (lease.py explains why).
            self._require_handle()
        else:
            self._require_writer()
        if RECONCILIATION not in libraries:
            self._commit(writes, compact)
            return
        parsed = self._parsed
        with lease_mod.shared_write_lock(parsed.kind, parsed.root, RECONCILIATION), \
                fresh_version_chains():
            with self._lock:
                # Another process may have appended since: forget what we knew of its tail.
                for w in writes:
                    if w.library == RECONCILIATION:
                        self._states.pop((w.library, w.symbol), None)
            self._commit(writes, compact)

    def _commit(self, writes: Sequence[SymbolWrite], compact: bool) -> None:
        prepared = prepare(writes, naive_tz=self.naive_tz)
        failures: list[tuple[str, str, BaseException]] = []
        with self._lock:
            try:
                plans: list[tuple[Prepared, Plan]] = []
                for p in prepared:
                    if p.rows is not None or p.state is None:
                        plans.append((p, plan_journal(p, self._state(p.library, p.symbol))))
                self._write_states([p for p in prepared if p.state is not None], failures)
                self._write_journals(plans, failures)
            except BaseException:
                # planning consumes cached states: anything unexpected -> reload from storage
                for p in prepared:
                    self._states.pop((p.library, p.symbol), None)
                raise
        if failures:
            lib, sym, exc = failures[0]
            names = ", ".join(f"{lb}/{s}" for lb, s, _ in failures)
            hint = ""
            if "MAP_FULL" in str(exc) or "Map Full" in str(exc):
                hint = " (the LMDB map is full: reopen with a larger ?map_size= in the URI)"
            raise StorageError(f"commit failed for {names}{hint}: {lib}/{sym}: {exc}") from exc
        if compact:
            self._maybe_compact([(p.library, p.symbol) for p, _ in plans])

    def preload(self, library: str, symbols: Sequence[str]) -> None:
        self._require_writer()
        with self._lock:
            for symbol in symbols:
                self._state(library, symbol)

    def _state(self, library: str, symbol: str) -> SymbolState:
        key = (library, symbol)
        state = self._states.get(key)
        if state is not None:
            return state
        lib = self._lib(library, create=True)
        key_col = KEY_COLUMNS.get(library)
        try:
            with quiet_reads():
                frame = lib.read(symbol, columns=[key_col] if key_col else []).data
        except Exception as exc:
            if not is_no_such_version(exc):
                raise StorageError(f"{library}/{symbol}: cannot load its index: {exc}") from exc
            state = SymbolState.missing(library)
        else:
            times = times_ns(pd.DatetimeIndex(frame.index))
            keys = frame[key_col].tolist() if key_col else None
            state = SymbolState.from_index(library, times, keys)
        self._states[key] = state
        return state

    def _write_states(
        self, prepared: list[Prepared], failures: list[tuple[str, str, BaseException]]
    ) -> None:
        from arcticdb import WritePayload

        by_lib: dict[str, list[Prepared]] = {}
        for p in prepared:
            by_lib.setdefault(p.library, []).append(p)
        for library, items in by_lib.items():
            lib = self._lib(library, create=True)
            payloads = [
                WritePayload(
                    p.symbol, p.state, dict(p.metadata) if p.metadata is not None else None
                )
                for p in items
            ]

            def call(lb: Any = lib, pl: list[Any] = payloads) -> list[Any]:
                return list(lb.write_batch(pl, validate_index=True))

            self._run_batch(library, items, call, failures)

    def _run_batch(
        self,
        library: str,
        items: Sequence[Prepared],
        call: Callable[[], list[Any]],
        failures: list[tuple[str, str, BaseException]],
    ) -> set[str]:
        """Run a batch call; record per-symbol failures; return the symbols that failed."""
        try:
            results = call()
        except Exception as exc:
            for p in items:
                failures.append((library, p.symbol, exc))
            return {p.symbol for p in items}
        failed = set()
        for p, result in zip(items, results, strict=True):
            if type(result).__name__ == "DataError":
                failures.append((library, p.symbol, StorageError(str(result))))
                failed.add(p.symbol)
        return failed

    def _write_journals(
        self,
        plans: list[tuple[Prepared, Plan]],
        failures: list[tuple[str, str, BaseException]],
    ) -> None:
        from arcticdb import WritePayload

        batched: dict[tuple[str, str], list[tuple[Prepared, Plan, Any]]] = {}
        for p, plan in plans:
            key = (p.library, p.symbol)
            lib = self._lib(p.library, create=True)
            ops = list(plan.ops)
            meta = dict(plan.metadata) if plan.metadata is not None else None
            tail_op = ops[-1] if ops and isinstance(ops[-1], Write | Append) else None
            if tail_op is not None:
                ops = ops[:-1]
            try:
                for i, op in enumerate(ops):
                    m = meta if (i == len(ops) - 1 and tail_op is None) else None
                    self._apply_single(lib, p.symbol, op, m)
            except Exception as exc:
                self._states.pop(key, None)  # unknown stored state now: reload next time
                failures.append((p.library, p.symbol, exc))
                continue
            if tail_op is None:
                self._states[key] = plan.after
                self._count_write(key)
                continue
            kind = "write" if isinstance(tail_op, Write) else "append"
            payload = WritePayload(p.symbol, tail_op.frame, meta)
            batched.setdefault((p.library, kind), []).append((p, plan, payload))
        for (library, kind), entries in batched.items():
            lib = self._lib(library, create=True)
            payloads = [e[2] for e in entries]
            if kind == "write":
                def call(lb: Any = lib, pl: list[Any] = payloads) -> list[Any]:
                    return list(lb.write_batch(pl, validate_index=True))
            else:
                def call(lb: Any = lib, pl: list[Any] = payloads) -> list[Any]:
                    return list(lb.append_batch(pl, validate_index=True))
            failed = self._run_batch(library, [e[0] for e in entries], call, failures)
            for p, plan, _ in entries:
                key = (library, p.symbol)
                if p.symbol in failed:
                    self._states.pop(key, None)
                else:
                    self._states[key] = plan.after
                    self._count_write(key)

    def _apply_single(
        self, lib: Any, symbol: str, op: Any, metadata: dict[str, Any] | None
    ) -> None:
        if isinstance(op, Update):
            lib.update(symbol, op.frame, metadata=metadata,
                       date_range=(_ns(op.start), _ns(op.end)))
        elif isinstance(op, Delete):
            lib.delete_data_in_range(symbol, (_ns(op.start), _ns(op.end)))
            if metadata is not None:
                lib.write_metadata(symbol, metadata)
        elif isinstance(op, WriteMetadata):
            lib.write_metadata(symbol, metadata)
        elif isinstance(op, Write):
            lib.write(symbol, op.frame, metadata=metadata, validate_index=True)
        elif isinstance(op, Append):
            lib.append(symbol, op.frame, metadata=metadata, validate_index=True)
        else:  # pragma: no cover
            raise StorageError(f"unknown op {op!r}")

    def _count_write(self, key: tuple[str, str]) -> None:
        self._writes_since_compact[key] = self._writes_since_compact.get(key, 0) + 1

    def compact_due(self) -> bool:
        self._require_writer()
        with self._lock:
            keys = list(self._writes_since_compact)
        return self._maybe_compact(keys)

    def _maybe_compact(self, keys: list[tuple[str, str]]) -> bool:
        """Compact the most written of ``keys`` once it is due: one symbol per commit, the
        others stay due and go in the next commits. True when one was compacted."""
        if not self.compact_every:
            return False
        with self._lock:
            due = [k for k in keys
                   if self._writes_since_compact.get(k, 0) >= self.compact_every]
            if not due:
                return False
            key = max(due, key=lambda k: self._writes_since_compact.get(k, 0))
            self._writes_since_compact[key] = 0
            try:
                return self._compact_symbol(self._lib(key[0], create=True), key[0], key[1])
            except StorageError as exc:
                # The commit itself succeeded: raising would make the caller retry it.
                _log.warning("compaction skipped: %s", exc)
                return False

    def _compact_symbol(self, lib: Any, library: str, symbol: str) -> bool:
        try:
            if not lib.compact_data_explain_plan(symbol).will_do_work:
                return False
            lib.compact_data(symbol)
        except Exception as exc:
            raise StorageError(f"{library}/{symbol}: compaction failed: {exc}") from exc
        return True

    # -- reading ---------------------------------------------------------------------------
    def _reading(self, call: Callable[[], T], library: str, symbol: str, as_of: Any) -> T | None:
        """Run a read; None when the symbol (version) does not exist; one retry on a key
        pruned under us; a clear error for an unknown snapshot name."""
        for attempt in (1, 2):
            try:
                with quiet_reads():
                    return call()
            except Exception as exc:
                if is_no_such_version(exc):
                    return None
                if not is_missing_key(exc):
                    raise StorageError(f"{library}/{symbol} as_of={as_of!r}: {exc}") from exc
                if isinstance(as_of, str):
                    if as_of in self.list_snapshots():
                        return None  # the snapshot exists but did not hold this library
                    raise StorageError(f"as_of={as_of!r}: no such snapshot") from exc
                if not self._has_version(library, symbol, as_of):
                    return None
                if attempt == 2:
                    raise StorageError(
                        f"{library}/{symbol}: read failed twice (version pruned?): {exc}"
                    ) from exc
                refresh_version_cache()  # the retry must not read the same cached version
        return None  # pragma: no cover

    def _has_version(self, library: str, symbol: str, as_of: Any) -> bool:
        lib = self._lib(library)
        if lib is None:
            return False
        try:
            ao = _utc(as_of) if isinstance(as_of, pd.Timestamp) else as_of
            return bool(lib.has_symbol(symbol, as_of=ao))
        except Exception:
            return True  # cannot tell: let the retry decide

    def read(
        self,
        library: str,
        symbol: str,
        *,
        as_of: int | str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
        date_range: tuple[pd.Timestamp | None, pd.Timestamp | None] | None = None,
    ) -> pd.DataFrame:
        check_columns(library, columns)
        lib = self._lib(library)
        if lib is None:
            return empty_frame(library, columns)
        dr = None
        if date_range is not None and library in JOURNAL_LIBRARIES:
            dr = (_utc(date_range[0]), _utc(date_range[1]))
        cols = list(columns) if columns is not None else None
        ao = _utc(as_of) if isinstance(as_of, pd.Timestamp) else as_of

        def call() -> pd.DataFrame:
            return lib.read(symbol, as_of=ao, columns=cols, date_range=dr).data  # type: ignore[no-any-return]

        frame = self._reading(call, library, symbol, as_of)
        if frame is None:
            return empty_frame(library, columns)
        if library in STATE_LIBRARIES:
            frame.index = pd.RangeIndex(len(frame))
        return type_read(library, frame, columns)

    def read_metadata(
        self, library: str, symbol: str, *, as_of: int | str | pd.Timestamp | None = None
    ) -> Mapping[str, Any] | None:
        lib = self._lib(library)
        if lib is None:
            return None
        ao = _utc(as_of) if isinstance(as_of, pd.Timestamp) else as_of
        item = self._reading(lambda: lib.read_metadata(symbol, as_of=ao), library, symbol, as_of)
        meta = getattr(item, "metadata", None) if item is not None else None
        return dict(meta) if meta is not None else None

    def list_versions(self, library: str, symbol: str) -> list[int]:
        """Live version numbers of a symbol, oldest first."""
        lib = self._lib(library)
        if lib is None:
            return []
        versions = lib.list_versions(symbol)
        return sorted(v.version for v, info in versions.items() if not info.deleted)

    def describe(self, library: str, symbol: str) -> dict[str, Any] | None:
        """ArcticDB's own view of a symbol (None when missing): ``rows``, ``sorted`` (must be
        ``ASCENDING`` for journal symbols: anything else would poison appends), ``date_range``,
        ``last_update``."""
        lib = self._lib(library)
        if lib is None:
            return None
        d = self._reading(lambda: lib.get_description(symbol), library, symbol, None)
        if d is None:
            return None
        return {"rows": int(d.row_count), "sorted": str(d.sorted),
                "date_range": d.date_range, "last_update": d.last_update_time}

    def list_symbols(self, library: str) -> list[str]:
        lib = self._lib(library)
        return sorted(lib.list_symbols()) if lib is not None else []

    # -- maintenance -----------------------------------------------------------------------
    def snapshot(self, name: str, progress: Progress | None = None) -> None:
        """Snapshot every library holding symbols (ArcticDB snapshots are per library, so
        the libraries are pinned one after the other, not atomically)."""
        self._require_writer()
        if not isinstance(name, str) or not name:
            raise StorageError(f"snapshot name={name!r}: must be a non-empty str")
        if name in self.list_snapshots():
            raise StorageError(f"snapshot name={name!r} already exists")
        for i, library in enumerate(LIBRARIES, 1):
            lib = self._lib(library, create=True)
            try:
                lib.snapshot(name)
            except Exception as exc:
                if not is_no_such_version(exc):  # "No valid symbols": nothing to pin
                    raise StorageError(f"snapshot {name!r} of {library!r}: {exc}") from exc
            if progress is not None:
                progress(library, i, len(LIBRARIES))

    def list_snapshots(self) -> list[str]:
        names: set[str] = set()
        for library in LIBRARIES:
            lib = self._lib(library)
            if lib is not None:
                names.update(lib.list_snapshots())
        return sorted(names)

    def compact(self, library: str | None = None, progress: Progress | None = None) -> int:
        self._require_writer()
        libs = [library] if library is not None else list(JOURNAL_LIBRARIES)
        todo = [(lb, s) for lb in libs for s in self.list_symbols(lb)]
        done = 0
        with self._lock:
            for i, (lb, s) in enumerate(todo, 1):
                if self._compact_symbol(self._lib(lb, create=True), lb, s):
                    done += 1
                self._writes_since_compact[(lb, s)] = 0
                if progress is not None:
                    progress(s, i, len(todo))
        return done

    def prune(self, keep_last: int, grace_seconds: float, progress: Progress | None = None) -> int:
        """Delete versions beyond the newest ``keep_last`` that are older than the grace
        period and in no snapshot. Readers of a pruned version retry once (see ``read``)."""
        self._require_writer()
        if keep_last < 1:
            raise StorageError(f"keep_last={keep_last!r}: must be >= 1 (the latest is kept)")
        now = pd.Timestamp.now(tz="UTC")
        todo = [(lb, s) for lb in LIBRARIES for s in self.list_symbols(lb)]
        removed = 0
        with self._lock:
            for i, (lb, s) in enumerate(todo, 1):
                lib = self._lib(lb, create=True)
                infos = sorted(
                    ((v.version, info) for v, info in lib.list_versions(s).items()
                     if not info.deleted),
                    key=lambda x: x[0],
                    reverse=True,
                )
                doomed = [
                    number
                    for number, info in infos[keep_last:]
                    if not info.snapshots
                    and (now - _utc(info.date)).total_seconds() >= grace_seconds
                ]
                if doomed:
                    try:
                        lib.delete(s, versions=doomed)
                    except Exception as exc:
                        raise StorageError(f"{lb}/{s}: prune failed: {exc}") from exc
                    removed += len(doomed)
                if progress is not None:
                    progress(s, i, len(todo))
        return removed

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            release_handle(handle)
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
        self._states.clear()

    def __enter__(self) -> ArcticStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
