"""The local write-ahead journal: every accepted message, with a sequence number, before it is
folded into the ledger.

SQLite in WAL mode, one transaction per drained batch. ``synchronous=FULL`` (the default) makes
each committed batch survive a power loss; ``NORMAL`` survives a process crash (SIGKILL) only,
and is faster on slow disks. Sequence numbers are assigned here, strictly increasing, and never
reused, also after every entry was trimmed (the last one is kept in ``meta``) and after the
journal file was lost (:meth:`Journal.advance_to` moves past what ArcticDB already holds).

Life of an entry: :meth:`append` (durable on return) -> folded and persisted to ArcticDB by the
PortfolioManager -> :meth:`trim` once ArcticDB holds it. On start, :meth:`entries` replays what
is left.

Not thread-safe by itself: the PortfolioManager calls it from one worker thread at a time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.errors import JournalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

MEMORY = ":memory:"


class Journal:
    """An append-only, fsynced, trimmable log of message payloads (text)."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise JournalError(f"synchronous={synchronous!r}: must be FULL, NORMAL or EXTRA")
        self.path = str(path)
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
            self._last_seq = max(self._meta("last_seq"), self._max_entry())
            self._durable = self._meta("durable_seq")
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: cannot open: {exc}") from exc

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _max_entry(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM entries").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever assigned (0 for a new journal)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """Everything up to here was reported durable in ArcticDB and trimmed."""
        return self._durable

    def advance_to(self, seq: int) -> None:
        """Never assign ``seq`` or anything below it (ArcticDB already holds it)."""
        if seq > self._last_seq:
            self._set_meta("last_seq", seq)
            self._last_seq = seq

    def append(self, payloads: Sequence[str], received_at: float | None = None) -> int:
        """Append ``payloads`` in one durable transaction; returns the first seq assigned."""
        first = self._last_seq + 1
        if not payloads:
            return first
        at = time.time() if received_at is None else received_at
        rows = [(first + i, at, text) for i, text in enumerate(payloads)]
        last = first + len(rows) - 1
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO entries(seq, received_at, payload) VALUES (?, ?, ?)", rows)
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('last_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (last,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(
                f"journal path={self.path!r}: append of seq {first}..{last} failed: {exc}"
            ) from exc
        self._last_seq = last
        return first

    def entries(self, after: int = 0) -> Iterator[tuple[int, float, str]]:
        """(seq, received_at, payload) of every entry with seq > ``after``, in order."""
        try:
            cursor = self._db.execute(
                "SELECT seq, received_at, payload FROM entries WHERE seq > ? ORDER BY seq",
                (after,))
            yield from cursor
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: read failed: {exc}") from exc

    def pending(self) -> int:
        """How many entries are not trimmed yet."""
        row = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()
        return int(row[0])

    def trim(self, upto: int) -> None:
        """Drop entries with seq <= ``upto``: ArcticDB holds them."""
        if upto <= self._durable:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM entries WHERE seq <= ?", (upto,))
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('durable_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (upto,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: trim to {upto} failed: {exc}") from exc
        self._durable = upto

    def _set_meta(self, key: str, value: int) -> None:
        try:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: meta {key} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error as exc:  # pragma: no cover - closing a healthy db does not fail
            raise JournalError(f"journal path={self.path!r}: close failed: {exc}") from exc

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_entries(path: str | Path) -> list[tuple[int, str]]:
    """Every entry of a journal file, read-only (for tests and tools; another process may own
    the file)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [(int(s), str(p)) for s, p in db.execute("SELECT seq, payload FROM entries")]
    finally:
        db.close()


def read_last_seq(path: str | Path) -> int:
    """The highest sequence number a journal file ever assigned (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        top = db.execute("SELECT MAX(seq) FROM entries").fetchone()
        return max(int(meta[0]) if meta else 0, int(top[0]) if top and top[0] is not None else 0)
    finally:
        db.close()
