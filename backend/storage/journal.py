"""The local write-ahead journal: every accepted message, with a sequence number, before it is
folded into the ledger.

SQLite in WAL mode, one transaction and one row per drained batch (a "chunk": its first and last
seq and its payloads, newline-joined). A row per message cost 4-5 us per message alone and
12-20 us inside the manager (each row's step gave the GIL up and took it back from the event
loop and the commit thread), and trimming deleted row by row (Dec 2 box). ``synchronous=FULL``
(the default) makes each committed batch survive a power loss; ``NORMAL`` survives a process
crash (SIGKILL) only, and is faster on slow disks. Sequence numbers are assigned here, strictly
increasing, and never reused, also after every entry was trimmed (the last one is kept in
``meta``) and after the journal file was lost (:meth:`Journal.advance_to` moves past what
ArcticDB already holds).

Life of an entry: :meth:`append` (durable on return) -> folded and persisted to ArcticDB by the
PortfolioManager -> :meth:`trim` once ArcticDB holds it. On start, :meth:`entries` replays what
is left.

Not thread-safe by itself: the PortfolioManager calls it from one worker thread at a time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.errors import JournalError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    received_at REAL NOT NULL,
    encoding INTEGER NOT NULL,
    payloads TEXT NOT NULL
);
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
# How a chunk's payloads are stored in one text: joined by newlines (JSON payloads never hold a
# raw one) or, when some payload does, as a JSON array of strings.
_LINES, _ARRAY = 0, 1
# The ``entries`` table (one row per message) is what journals written before chunks hold;
# it is still read and trimmed, never written.


def _encode(payloads: Sequence[str]) -> tuple[int, str]:
    text = "\n".join(payloads)
    if text.count("\n") == len(payloads) - 1:
        return _LINES, text
    return _ARRAY, json.dumps(list(payloads))


def _decode(encoding: int, text: str) -> list[str]:
    if encoding == _LINES:
        return text.split("\n")
    if encoding == _ARRAY:
        return list(json.loads(text))
    raise JournalError(f"journal chunk encoding={encoding!r}: unknown (a newer writer?)")


def _has_chunks(db: sqlite3.Connection) -> bool:
    """False for a journal file no chunk-writing version opened yet (read-only tools)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='chunks'"
                      ).fetchone() is not None


def _chunk_entries(db: sqlite3.Connection, after: int) -> Iterator[tuple[int, float, str]]:
    """(seq, received_at, payload) past ``after`` in order: legacy rows, then chunks."""
    yield from db.execute(
        "SELECT seq, received_at, payload FROM entries WHERE seq > ? ORDER BY seq", (after,))
    if not _has_chunks(db):
        return
    # One chunk in memory at a time: a journal that grew through a long storage outage is
    # replayed as a stream.
    for first, at, encoding, text in db.execute(
            "SELECT first_seq, received_at, encoding, payloads FROM chunks WHERE last_seq > ? "
            "ORDER BY first_seq", (after,)):
        for i, payload in enumerate(_decode(encoding, text)):
            if first + i > after:
                yield first + i, at, payload


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
            self._last_seq = max(self._meta("last_seq"), _max_seq(self._db))
            self._durable = self._meta("durable_seq")
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: cannot open: {exc}") from exc

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

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
        last = first + len(payloads) - 1
        encoding, text = _encode(payloads)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO chunks(first_seq, last_seq, received_at, encoding, payloads) "
                    "VALUES (?, ?, ?, ?, ?)", (first, last, at, encoding, text))
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
        """(seq, received_at, payload) of every entry with seq > ``after`` (and past the
        durable mark: a chunk trimmed in part keeps its row), in order."""
        try:
            yield from _chunk_entries(self._db, max(after, self._durable))
        except sqlite3.Error as exc:
            raise JournalError(f"journal path={self.path!r}: read failed: {exc}") from exc

    def pending(self) -> int:
        """How many entries are not trimmed yet."""
        return _pending(self._db, self._durable)

    def trim(self, upto: int) -> None:
        """Drop entries with seq <= ``upto``: ArcticDB holds them."""
        if upto <= self._durable:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM entries WHERE seq <= ?", (upto,))
                self._db.execute("DELETE FROM chunks WHERE last_seq <= ?", (upto,))
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


def _max_seq(db: sqlite3.Connection) -> int:
    top = db.execute("SELECT MAX(seq) FROM entries").fetchone()[0]
    last = (db.execute("SELECT MAX(last_seq) FROM chunks").fetchone()[0]
            if _has_chunks(db) else None)
    return max(int(top or 0), int(last or 0))


def _pending(db: sqlite3.Connection, durable: int) -> int:
    legacy = db.execute("SELECT COUNT(*) FROM entries WHERE seq > ?", (durable,)).fetchone()[0]
    chunked = db.execute(
        "SELECT SUM(last_seq - MAX(first_seq, ? + 1) + 1) FROM chunks WHERE last_seq > ?",
        (durable, durable)).fetchone()[0]
    return int(legacy) + int(chunked or 0)


def read_entries(path: str | Path) -> list[tuple[int, str]]:
    """Every entry of a journal file not trimmed yet, read-only (for tests and tools; another
    process may own the file)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key='durable_seq'").fetchone()
        return [(int(s), str(p)) for s, _, p in _chunk_entries(db, int(meta[0]) if meta else 0)]
    finally:
        db.close()


def read_last_seq(path: str | Path) -> int:
    """The highest sequence number a journal file ever assigned (read-only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()
        return max(int(meta[0]) if meta else 0, _max_seq(db))
    finally:
        db.close()
