"""The storage interface: the only seam between the ledger and ArcticDB.

Two implementations honour it and run the same contract tests: the ArcticDB store
(``lmdb://``, ``mem://``, ``s3://``) and an in-memory twin for fast unit tests.

Kinds of library (the names and schemas are in :mod:`backend.storage.schema`):

* Journal libraries (``fills``, ``orders``, ``rejects``, ``reconciliation``): a tz-aware UTC
  DatetimeIndex, sorted and unique. A library with a key column (``fills``: ``exec_id_base``;
  ``orders``: ``event_key``) holds at most one row per key: a committed row whose key is
  already stored REPLACES the stored row (wherever its timestamp was); a new key is inserted at
  its own timestamp (made unique with nanosecond offsets, also against stored rows). Rows newer
  than the stored tail are appended; late rows are inserted without touching their neighbours.
* State libraries (``positions``, ``portfolio``): a numeric index; each commit writes the whole
  symbol as a new version, so history lives in versions (``as_of``).

``commit`` persists many symbols with one ArcticDB write per symbol where the rules allow
(corrections and late rows are updates of one timestamp each). It is all-or-raise per symbol:
when it raises, the caller keeps the batch and retries; replaying a commit is idempotent because
journal rows are keyed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

Progress = Callable[[str, int, int], None]  # (symbol, done, total)


@dataclass(frozen=True)
class SymbolWrite:
    """What one commit does to one symbol.

    Exactly one of ``rows`` (journal libraries) and ``state`` (state libraries) is set.
    ``metadata`` is stored with the version (e.g. ``{"watermark": 1234}``).
    """

    library: str
    symbol: str
    rows: pd.DataFrame | None = None
    state: pd.DataFrame | None = None
    metadata: Mapping[str, Any] | None = field(default=None)


class Store(Protocol):
    """What the ledger needs from storage. Implementations: ArcticStore, MemoryStore."""

    uri: str

    def commit(self, writes: Sequence[SymbolWrite], *, compact: bool = True) -> None:
        """Persist ``writes``; one write per symbol where possible. Raises StorageError.
        ``compact``: then compact one of the written journal symbols if it is due (see
        :meth:`compact_due`); a writer that schedules compaction itself passes False."""

    def compact_due(self) -> bool:
        """Compact the journal symbol most overdue for it (written ``compact_every`` times
        since its last compaction), if any: one symbol per call, so a writer can run it
        between commits instead of inside one. True when a symbol was compacted. A failed
        compaction is logged and skipped (the data is already committed)."""

    def read(
        self,
        library: str,
        symbol: str,
        *,
        as_of: int | str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
        date_range: tuple[pd.Timestamp | None, pd.Timestamp | None] | None = None,
    ) -> pd.DataFrame:
        """The symbol's rows, or an empty frame with the library's columns when missing."""

    def read_metadata(
        self, library: str, symbol: str, *, as_of: int | str | pd.Timestamp | None = None
    ) -> Mapping[str, Any] | None:
        """The metadata stored with the (latest, or ``as_of``) version, or None."""

    def list_symbols(self, library: str) -> list[str]:
        """Symbols of ``library`` (empty when the library has none)."""

    def preload(self, library: str, symbols: Sequence[str]) -> None:
        """Load what the next commits to these journal symbols need (their stored times and
        keys), so the first commit after a start does not pay for it (~90 ms per 100k rows,
        Dec 2). Optional: a commit loads it anyway."""

    def list_versions(self, library: str, symbol: str) -> list[int]:
        """Version numbers of ``symbol`` still stored, oldest first (empty when missing)."""

    def snapshot(self, name: str, progress: Progress | None = None) -> None:
        """Take a named snapshot of every library (e.g. ``eod-2026-11-20``); ``progress`` is
        called once per library."""

    def list_snapshots(self) -> list[str]:
        """Names of the snapshots taken so far."""

    def compact(self, library: str | None = None, progress: Progress | None = None) -> int:
        """Defragment fragmented journal symbols; returns how many were compacted."""

    def prune(self, keep_last: int, grace_seconds: float, progress: Progress | None = None) -> int:
        """Delete old versions (not in snapshots) beyond ``keep_last`` and older than the grace
        period; returns how many versions were removed."""

    def close(self) -> None:
        """Release the writer lease (when held) and the ArcticDB handles."""
