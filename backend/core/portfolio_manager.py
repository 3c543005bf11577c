"""PortfolioManager: StrategyManager events -> write-ahead journal -> ledger -> ArcticDB.

::

    pm = PortfolioManager("lmdb:///var/lib/portfolio")
    async with pm:                      # takes the writer lease, recovers state
        pm.subscribe(strategy_manager)  # any object with a .message_queue (asyncio.Queue)
        await pm.process_message(msg)   # direct path, same semantics
        await pm.flush()                # every message received so far is durable
        await pm.snapshot("eod-2026-11-20")  # flush, then pin every library (as_of=...)
        await pm.prune(keep_last=10)    # drop old versions (not snapshotted, > 1 day old)

How a message travels (docs/events.md has the contract and the rules):

1. Receipt (producer side, never waits on storage): the message is put in an in-memory inbox
   and numbered. ``process_message`` and the subscription tasks only do that.
2. Ingest task: drains the inbox (up to ``max_batch``), parses and encodes it and appends it to
   the write-ahead journal in ONE durable SQLite transaction (worker thread), then folds it into
   the ledger on the event loop (:meth:`process_fill` is that per-fill step).
3. Persist task: whatever changed since the last durable batch is built into rows from the
   current state and committed with one write per symbol (``Store.commit``, worker thread):
   facts (fills, orders, rejects) at once, derived state (positions, portfolio) at most every
   ``state_interval`` (spaced 4x while newer facts wait: a fact never waits behind a state
   write it could avoid) or when a ``flush`` waits; then the journal is trimmed up to what both
   hold. A failed commit keeps the batch pending (merged with newer changes), is retried with
   backoff, and makes ``flush`` raise.

Ingest and persist overlap: while a batch is being written, the next one is journaled and
folded, so batches grow with the load (microbatching without a fixed timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pandas as pd

from backend.core.broker import BrokerExecution
from backend.core.ledger import Ledger
from backend.core.messages import (
    FILL,
    FillMessage,
    Parsed,
    StatusMessage,
    canonical,
    encode_raw,
    fast_fill,
    fill_message,
    message_account,
    message_con_id,
    parse_message,
)
from backend.core.model import PositionKey
from backend.errors import InvalidInputError, JournalError, PersistError
from backend.pm.payload import compact_fill, entry_account, read_payload
from backend.pm.persist import commit_batch
from backend.pm.recovery import recover_books
from backend.pm.restore import RestoreStats
from backend.pm.rows import PORTFOLIO_COLUMNS, frame_rows, state_frame
from backend.pm.state import Batch, Books, Dirty
from backend.pm.support import RunLog, default_journal_path, open_writer
from backend.storage.api import Store
from backend.storage.journal import Journal
from backend.storage.schema import PORTFOLIO, POSITIONS

REJECT = "_reject"  # journal entries of messages that could not be read
RESIDUALS = "_residuals"  # journal entries of set_residuals()
_log = logging.getLogger("backend.portfolio_manager")
_DEFER = 4  # state_interval multiple a state write waits while newer facts are pending
# A sealed key with at least this many unread fills is read in a worker thread before the
# event that needs its fills is folded (below it, the thread hop costs more than the read).
UNSEAL_IN_THREAD = 500
SEAL_SWEEP = 10.0  # seal_after: the longest time between two sweeps (seconds)
SEAL_BUSY = 256  # seal_after: a position with this many live fills gets its settled ones sealed
SEAL_SLICE = 2000  # seal_after: fills packed per turn of the event loop
FOLD_SLICE = 0.005  # the ingest task yields to the event loop after folding this long (s)
# Under load the journal is trimmed at most this often (seconds); once everything received is
# durable, right away. A trim after every commit took 24-44 ms of each cycle under load (a
# journal transaction and its fsync, competing for the GIL), and entries kept a little longer
# cost only an idempotent replay after a crash.
TRIM_INTERVAL = 1.0


def _dumps(obj: dict[str, Any]) -> str:
    """Compact JSON of a canonical message (the journal payload): orjson (~10x faster than
    json.dumps here) and json.dumps where orjson refuses a value (an int beyond 64 bits);
    both give text that json.loads reads back to the same values."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True)
class _Residuals:
    account: str
    rows: list[tuple[Any, ...]]


# a reject: (account, reason, field, raw text)
_Event = Parsed | _Residuals | tuple[str, str, str, str]


def _fill_payload(event: FillMessage) -> str:
    """A fill's journal payload: the compact form, or the canonical dict where orjson cannot
    encode a value (an int beyond 64 bits)."""
    return compact_fill(event) or _dumps(canonical(event))


def prepare_message(msg: Any, received: float,
                    default_account: str = "") -> tuple[str, _Event]:
    """(write-ahead journal payload, parsed event or (account, reason, field, raw) of a reject)
    of ``msg`` received at ``received`` (epoch seconds): what the manager journals and folds."""
    if type(msg) is dict and msg.get("type") == FILL:
        # The common case first: an ib_async fill the parser's fast path reads (what
        # parse_message would return for it), journaled in the compact form.
        fast = fast_fill(msg)
        if fast is not None:
            return _fill_payload(fast), fast
    if isinstance(msg, Mapping) and msg.get("type") == REJECT:
        return json.dumps(msg), (str(msg["account"]), str(msg["reason"]), str(msg["field"]),
                                 str(msg["raw"]))
    if isinstance(msg, Mapping) and msg.get("type") == RESIDUALS:
        return json.dumps(msg), _Residuals(msg["account"], [
            (datetime.fromisoformat(r[0]), *r[1:]) for r in msg["rows"]])
    try:
        at = datetime.fromtimestamp(received, UTC)
        event = parse_message(msg, received_at=at, default_account=default_account)
        if isinstance(event, FillMessage):
            return _fill_payload(event), event
        return _dumps(canonical(event)), event
    except InvalidInputError as exc:
        account = message_account(msg) or ""
        entry = {"type": REJECT, "raw": encode_raw(msg), "reason": str(exc),
                 "field": str(getattr(exc, "field", "")), "account": account}
        return json.dumps(entry), (account, entry["reason"], entry["field"], entry["raw"])


def journal_payload(msg: Any, received: float, default_account: str = "") -> str:
    """The journal entry the manager writes for ``msg``: its canonical form, or a reject entry
    for a message that cannot be read. For tools and tests that leave entries as a writer
    killed after journaling them would."""
    return prepare_message(msg, received, default_account)[0]


class PortfolioManager:
    """Consumes StrategyManager messages and keeps ``fills``/``orders``/``positions``/
    ``portfolio``/``rejects`` in ArcticDB. Exactly one per Arctic root (the writer lease)."""

    def __init__(
        self,
        arctic_uri: str,
        *,
        journal_path: str | Path | None = None,
        max_batch: int = 2000,
        default_account: str = "",
        run_id: str | None = None,
        flush_retries: int = 3,
        state_interval: float = 0.25,
        batch_wait: float = 0.05,
        journal_sync: str = "FULL",
        store_opener: Callable[[str], Store] | None = None,
        seal_after: float | None = 600.0,
    ) -> None:
        if max_batch < 1:
            raise InvalidInputError(f"max_batch={max_batch!r}: must be >= 1")
        self.arctic_uri = arctic_uri
        self.journal_path = str(journal_path or default_journal_path(arctic_uri))
        self.max_batch = max_batch
        self.default_account = default_account
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.flush_retries = flush_retries
        self.state_interval = state_interval
        self.batch_wait = batch_wait
        self._journal_sync = journal_sync
        self._opener = store_opener
        if seal_after is not None and not seal_after > 0:
            raise InvalidInputError(f"seal_after={seal_after!r}: must be > 0 seconds or None")
        self.seal_after = seal_after
        self.log = RunLog(_log, {"run_id": self.run_id})
        self._books = Books()
        self._store: Store | None = None
        self._journal: Journal | None = None
        self._inbox: deque[tuple[int, Any, float]] = deque()
        self._received = 0
        self._folded = 0
        self._durable = 0
        self._dirty = Dirty()  # changes not yet committed (facts and state markers)
        self._state = Dirty()  # state markers whose facts are durable, waiting for their write
        self._facts_seq = self._state_seq = 0  # journal seqs durable in ArcticDB
        self._state_durable = 0
        self._flushing = 0
        self._flush_target = 0  # the highest receipt a flush (or snapshot) has waited for
        self._ingesting = False
        self._chunk_done = asyncio.Event()
        # per state library: when it was last written, and (receipt, seq) it covers
        self._part_written = {POSITIONS: 0.0, PORTFOLIO: 0.0}
        self._part_durable = {POSITIONS: (0, 0), PORTFOLIO: (0, 0)}
        self._wake_ingest = asyncio.Event()
        # A snapshot in progress: the ingest loop folds no message past this receipt
        self._hold_after: int | None = None
        self._ingest_parked = asyncio.Event()  # set while the ingest loop waits between chunks
        self._snapshot_lock = asyncio.Lock()
        self._wake_persist = asyncio.Event()
        self._progress = asyncio.Event()
        self._failures = 0  # consecutive failed attempts (drives the backoff)
        self._attempts_failed = 0  # every failed attempt since start (drives flush errors)
        self._error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[asyncio.Task[None]] = []
        self._journal_limiter = anyio.CapacityLimiter(1)
        self._store_limiter = anyio.CapacityLimiter(1)
        self._unseal_limiter = anyio.CapacityLimiter(1)
        self._reading: set[PositionKey] = set()  # sealed keys being read in a worker thread
        self._activity: dict[int, float] = {}
        self._trimmed_at = 0.0  # time.monotonic() of the last journal trim
        self._open = False
        self._entered = False
        self._fatal: BaseException | None = None
        self.recovery_seconds = 0.0
        # how the last start rebuilt the positions: restored from their rows or refolded
        self.recovery_stats = RestoreStats()
        # name -> (count, total s, max s) of the ingest/persist steps (for the benchmark)
        self.stats: dict[str, tuple[int, float, float]] = {}
        self.replayed = 0
        # Called with the receipt number up to which every fill/order/reject row is in
        # ArcticDB (positions/portfolio follow within state_interval); bench and tests.
        self.on_durable: Callable[[int], None] | None = None
        # Called with the receipt number up to which facts AND positions/portfolio are durable.
        self.on_state_durable: Callable[[int], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> PortfolioManager:
        if self._entered:
            raise InvalidInputError("a PortfolioManager is entered once; make a new one")
        self._entered = True
        started = time.perf_counter()
        opener = self._opener or open_writer
        self._store = await anyio.to_thread.run_sync(opener, self.arctic_uri)
        try:
            self._journal = await anyio.to_thread.run_sync(
                lambda: Journal(self.journal_path, synchronous=self._journal_sync))
            self.replayed = await anyio.to_thread.run_sync(self._recover)
            self._open = True
            self._tasks = [asyncio.create_task(self._ingest_loop(), name="pm-ingest"),
                           asyncio.create_task(self._persist_loop(), name="pm-persist")]
            if self.seal_after is not None:
                self._tasks.append(asyncio.create_task(self._seal_loop(self.seal_after),
                                                       name="pm-seal"))
            for task in self._tasks:
                task.add_done_callback(self._task_ended)
            if self._dirty.has_writes():
                # Recovery produced writes: make them durable before returning.
                self._received += 1
                self._dirty.receipt = self._received
                self._wake_persist.set()
                await self.flush()
        except BaseException:
            await self._shutdown()
            raise
        self.recovery_seconds = time.perf_counter() - started
        self.log.info("open: %d fills, %d journal entries replayed in %.3f s",
                      len(self._books.ledger), self.replayed, self.recovery_seconds)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._open:
                for task in self._subscriptions:
                    task.cancel()
                await asyncio.gather(*self._subscriptions, return_exceptions=True)
                try:
                    await self.flush()
                except PersistError:
                    self.log.exception("close: pending batch stays in the journal for the next "
                                       "start")
                    if exc is None:
                        raise
                else:
                    # flush() returns once ArcticDB holds everything, which can be before the
                    # persist task's trim (it may be waiting for the journal thread when the
                    # tasks are cancelled): entries left would be replayed at the next start,
                    # and a replay rewrites every positions/portfolio symbol.
                    await self._trim_durable()
        finally:
            await self._shutdown()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal = task.exception()
            self.log.error("%s stopped: %r (messages stay in the journal)", task.get_name(),
                           self._fatal)
        self._progress.set()
        self._ingest_parked.set()  # a snapshot waiting for the ingest loop goes on to fail

    async def _shutdown(self) -> None:
        self._open = False
        for task in self._tasks + self._subscriptions:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._subscriptions, return_exceptions=True)
        self._tasks, self._subscriptions = [], []
        journal, store = self._journal, self._store
        self._journal = self._store = None
        if journal is not None:
            await anyio.to_thread.run_sync(journal.close, limiter=self._journal_limiter)
        if store is not None:
            await anyio.to_thread.run_sync(store.close, limiter=self._store_limiter)

    # -------------------------------------------------------------------- receipt
    def subscribe(self, source: Any) -> None:
        """Consume ``source.message_queue`` (an asyncio.Queue) until the manager closes."""
        if not self._open:
            raise InvalidInputError("subscribe: the PortfolioManager is not open (async with)")
        queue = getattr(source, "message_queue", None)
        if queue is None or not hasattr(queue, "get"):
            raise InvalidInputError(f"source={source!r}: has no .message_queue")
        self._subscriptions.append(
            asyncio.create_task(self._consume(queue), name=f"pm-subscribe-{len(self._tasks)}"))

    async def _consume(self, queue: asyncio.Queue[Any]) -> None:
        while True:
            self._accept(await queue.get())
            queue.task_done()
            while not queue.empty():
                self._accept(queue.get_nowait())
                queue.task_done()

    def _accept(self, msg: Any) -> int:
        self._received += 1
        self._inbox.append((self._received, msg, time.time()))
        self._wake_ingest.set()
        return self._received

    async def process_message(self, msg: Any) -> None:
        """Accept one message (same path as the subscription); never waits on storage."""
        if not self._open:
            raise InvalidInputError("process_message: the PortfolioManager is not open")
        self._accept(msg)
        await asyncio.sleep(0)

    async def ingest_backfill(self, executions: Iterable[BrokerExecution]) -> int:
        """Feed executions read back from IB through the same idempotent path."""
        count = 0
        for ex in executions:
            self._accept(fill_message(ex.fill, ex.commission))
            count += 1
        await asyncio.sleep(0)
        return count

    async def flush(self) -> None:
        """Return once every message received so far is durable in ArcticDB.

        Raises :class:`PersistError` (with the storage error as cause) once ``flush_retries``
        attempts failed during this call; the batch stays pending and keeps being retried
        in the background (a later ``flush`` returns once an attempt succeeds).
        """
        await self._flush_to(self._received, "flush")

    async def _flush_to(self, target: int, what: str) -> None:
        """Return once every message up to receipt ``target`` is durable (see ``flush``)."""
        base = self._attempts_failed
        self._flush_target = max(self._flush_target, target)
        self._flushing += 1
        self._wake_persist.set()
        try:
            while self.durable < target:
                if self._fatal is not None:
                    raise PersistError(f"{what}: the manager's worker stopped: "
                                       f"{self._fatal!r}") from self._fatal
                if not self._open:
                    raise PersistError(f"{what}: the manager closed with receipts "
                                       f"{self.durable + 1}..{target} not durable")
                if (self._error is not None
                        and self._attempts_failed - base >= self.flush_retries):
                    raise PersistError(
                        f"{what}: {target - self.durable} messages not durable after "
                        f"{self._failures} attempts: {self._error}") from self._error
                self._progress.clear()
                await self._progress.wait()
        finally:
            self._flushing -= 1

    async def snapshot(self, name: str | None = None) -> str:
        """Make durable what was received, then take the named snapshot of every library
        (default ``eod-<today, UTC>``) and return its name: readers then use
        ``read(..., as_of=name)``.

        This is how to snapshot while the manager runs (``portfolio snapshot`` needs the writer
        lease this manager holds). The snapshot holds exactly the messages received before the
        call, in every library: its positions and portfolio are those of its fills. For that
        the manager folds nothing newer until the snapshot is taken (it makes what it folded
        durable, facts then state, then pins the libraries one after the other); messages
        still arrive meanwhile (producers never wait) and are folded right after. Raises
        :class:`PersistError` like ``flush`` and ``StorageError`` for a name already taken.
        """
        if not self._open:
            raise InvalidInputError("snapshot: the PortfolioManager is not open (async with)")
        snap = name if name is not None else f"eod-{datetime.now(UTC):%Y-%m-%d}"
        async with self._snapshot_lock:
            target = self._received
            # Fold up to the last message received before this call, and nothing newer until
            # the snapshot is taken: its state is then built from exactly its fills.
            self._hold_after = target
            self._ingest_parked.clear()
            self._wake_ingest.set()
            try:
                await self._ingest_parked.wait()
                await self._flush_to(target, "snapshot")
                store = self.store
                await anyio.to_thread.run_sync(store.snapshot, snap,
                                               limiter=self._store_limiter)
            finally:
                self._hold_after = None
                self._wake_ingest.set()
        self.log.info("snapshot %r taken (receipts up to %d)", snap, target)
        return snap

    async def prune(self, keep_last: int = 10, grace_seconds: float = 86_400.0) -> int:
        """Delete old versions while the manager runs (``portfolio compact --prune-keep`` needs
        the writer lease this manager holds): every version beyond the newest ``keep_last`` of
        a symbol, older than ``grace_seconds`` and in no snapshot. Returns how many.

        Every commit makes a version per symbol and old versions keep their data: at a steady
        stream the root grows by ~2 MB per 1,000 fills until pruned (Dec 2). Time travel
        (``as_of``) reaches back only to what is kept, so snapshot first what must stay
        (``await pm.snapshot(...)``, e.g. at the end of the day, then prune). Runs between
        commits, on the store's worker thread: commits wait meanwhile (~80 us per version
        deleted), so schedule it off-peak. Raises ``StorageError`` like ``Store.prune``.
        """
        if not self._open:
            raise InvalidInputError("prune: the PortfolioManager is not open (async with)")
        store = self.store
        removed: int = await anyio.to_thread.run_sync(
            lambda: store.prune(keep_last, grace_seconds), limiter=self._store_limiter)
        self.log.info("pruned %d old versions (keep_last=%d, grace %.0f s)", removed,
                      keep_last, grace_seconds)
        return removed

    # ------------------------------------------------------------------ ingesting
    def _prepare_chunk(self, chunk: list[tuple[int, Any, float]]) -> tuple[int, list[Any]]:
        prepared = [prepare_message(msg, at, self.default_account) for _, msg, at in chunk]
        assert self._journal is not None
        first = self._journal.append([p for p, _ in prepared], chunk[-1][2])
        return first, [e for _, e in prepared]

    async def _ingest_loop(self) -> None:
        while True:
            hold = self._hold_after
            if not self._inbox or (hold is not None and self._inbox[0][0] > hold):
                self._ingest_parked.set()
                self._wake_ingest.clear()
                await self._wake_ingest.wait()
                continue
            self._ingest_parked.clear()
            size = min(len(self._inbox), self.max_batch)
            if hold is not None:  # receipts in the inbox are consecutive
                size = min(size, hold - self._inbox[0][0] + 1)
            chunk = [self._inbox.popleft() for _ in range(size)]
            self._ingesting = True
            try:
                t0 = time.perf_counter()
                first, events = await anyio.to_thread.run_sync(
                    self._prepare_chunk, chunk, limiter=self._journal_limiter)
                self._stat("journal", time.perf_counter() - t0)
            except JournalError as exc:
                # Not accepted yet: back to the front of the inbox, in order; retried.
                self._inbox.extendleft(reversed(chunk))
                self._ingesting = False
                await self._failed(exc)
                continue
            t0 = time.perf_counter()
            for i, (event, (receipt, msg, received)) in enumerate(
                    zip(events, chunk, strict=True)):
                if self._books.ledger.restored_keys:
                    unprinted = self._big_unprinted(event)
                    if unprinted is not None:
                        self._stat("fold", time.perf_counter() - t0)
                        await self._compute_prints(unprinted)
                        t0 = time.perf_counter()
                    big = self._big_sealed(event)
                    if big:
                        self._stat("fold", time.perf_counter() - t0)
                        await self._read_sealed(big)
                        t0 = time.perf_counter()
                self._fold(first + i, event, msg, received)
                self._dirty.receipt = receipt
                if i % 512 == 511 or time.perf_counter() - t0 > FOLD_SLICE:
                    # keep the loop responsive inside a big chunk (a slice can hold the
                    # prints of many restored keys, the first time their copies arrive)
                    self._stat("fold", time.perf_counter() - t0)
                    await asyncio.sleep(0)
                    t0 = time.perf_counter()
            self._stat("fold", time.perf_counter() - t0)
            self._folded = chunk[-1][0]
            self._ingesting = False
            self._chunk_done.set()
            self._wake_persist.set()
            # The loop now waits for the next chunk: let this one's messages go (up to
            # max_batch producer objects, e.g. ib_async Trades, would stay referenced).
            del chunk, events, event, msg

    def _big_unprinted(self, event: _Event) -> PositionKey | None:
        """The restored key of at least UNSEAL_IN_THREAD executions whose prints folding
        ``event`` would compute first (see :meth:`Ledger.repeats_sealed`)."""
        if not isinstance(event, FillMessage):
            return None
        found = self._books.ledger.unprinted_key(event.fill, event.commission)
        return found[0] if found is not None and found[1] >= UNSEAL_IN_THREAD else None

    async def _compute_prints(self, key: PositionKey) -> None:
        """A big restored key's prints, computed in a worker thread (50,000 executions:
        ~50 ms) while nothing is folded; the seal sweep leaves the key alone meanwhile."""
        t0 = time.perf_counter()
        self._reading.add(key)
        try:
            await anyio.to_thread.run_sync(self._books.ledger.compute_prints, key,
                                           limiter=self._unseal_limiter)
        finally:
            self._reading.discard(key)
        self._stat("prints", time.perf_counter() - t0)

    def _big_sealed(self, event: _Event) -> list[PositionKey]:
        """The sealed keys (restored after a restart, or sealed by ``seal_after``) with at
        least UNSEAL_IN_THREAD unread fills that folding ``event`` would unseal."""
        if not isinstance(event, FillMessage):
            return []
        ledger = self._books.ledger
        big = [key for key, unread in ledger.sealed_keys(event.fill, event.commission)
               if unread >= UNSEAL_IN_THREAD]
        if big and ledger.repeats_sealed(event.fill, event.commission):
            return []  # a plain copy: the fold drops it without reading anything
        return big

    async def _read_sealed(self, keys: list[PositionKey]) -> None:
        """Read ``keys``' fills in a worker thread before the event that needs them is folded,
        so the event loop only installs them (50,000 fills: 0.48-0.63 s read off the loop,
        25-46 ms installed on it; Dec 2, ``bench/ingest.py --unseal``). Nothing is folded
        meanwhile; the fold unseals whatever this did not."""
        ledger = self._books.ledger
        for key in keys:
            t0 = time.perf_counter()
            self._reading.add(key)  # the seal sweep leaves it alone meanwhile
            try:
                work = await anyio.to_thread.run_sync(ledger.read_sealed, key,
                                                      limiter=self._unseal_limiter)
            except Exception:  # the fold reads the key again, on the loop, and reports
                self.log.exception("reading the fills of sealed key %s failed", key,
                                   extra={"account": key.account})
                continue
            finally:
                self._reading.discard(key)
            t1 = time.perf_counter()
            if work is not None:
                ledger.install(work)
            self._stat("unseal_read", t1 - t0)
            self._stat("unseal_install", time.perf_counter() - t1)

    def _fold(self, seq: int, event: _Event, raw: Any,
              received: float) -> None:
        dirty = self._dirty
        dirty.seq = seq
        try:
            if isinstance(event, FillMessage):
                self._fold_fill(event, seq, received)
                return
            at = datetime.fromtimestamp(received, UTC)
            if isinstance(event, StatusMessage):
                self._books.fold_status(event, seq, at, dirty)
            elif isinstance(event, _Residuals):
                self._books.set_residuals(event.account, event.rows, dirty)
            else:
                account, reason, field, text = event
                self.log.warning("reject seq=%d: %s", seq, reason,
                                 extra={"account": account or "-"})
                Books.reject(dirty, account, text, reason, field, at, seq)
        except Exception as exc:
            # A bug must not stop the pipeline: the message goes to rejects (it stays in the
            # journal until then, and a replay gives the same reject, stored once).
            at = datetime.fromtimestamp(received, UTC)
            account = getattr(getattr(event, "fill", event), "account", "") or ""
            self.log.exception("reject seq=%d: internal error", seq,
                               extra={"account": account or "-"})
            text = json.dumps(canonical(event)) if isinstance(
                event, FillMessage | StatusMessage) else repr(event)
            Books.reject(dirty, account if isinstance(account, str) else "", text,
                         f"internal error: {exc!r}", "", at, seq)

    def process_fill(self, event: FillMessage, seq: int, received_at: datetime) -> None:
        """The per-fill step (after the journal append): fold into the ledger and mark the
        fill row, ``positions/<strategy>`` and the instrument's ``portfolio/<account>`` rows
        for the next durable batch. Pure in-memory work, O(1) for in-order fills."""
        self._fold_fill(event, seq, received_at.timestamp())

    def _fold_fill(self, event: FillMessage, seq: int, received: float) -> None:
        """:meth:`process_fill` with the receipt time as epoch seconds (the fills frame
        converts a batch's receipt times at once; a datetime per fill cost ~0.5 us)."""
        reason = self._books.fold_fill(event, seq, received, self._dirty)
        fill = event.fill
        self._activity[fill.instrument.con_id] = time.monotonic()
        if reason is not None:
            self.log.warning("reject seq=%d: %s", seq, reason, extra={"account": fill.account})
            Books.reject(self._dirty, fill.account, json.dumps(canonical(event)), reason,
                         "fill.execution.execId", datetime.fromtimestamp(received, UTC), seq)

    # ----------------------------------------------------------------- persisting
    async def _persist_loop(self) -> None:
        """Facts (fills, orders, rejects) are committed as soon as the previous commit is done.
        Derived state is written per library ("part": positions, portfolio), each at most every
        ``state_interval`` seconds and one part per turn, so a fact waits for at most one state
        write; a waiting ``flush`` writes both at once. The journal is trimmed only up to what
        facts AND both parts hold."""
        while True:
            now = time.monotonic()
            facts_due = self._dirty.has_facts() or self._dirty.receipt > self._durable
            pending = self._pending_parts()
            due = [p for p in pending
                   if self._flushing > 0 or now - self._part_written[p] >= self._interval()]
            if not facts_due and not due:
                self._wake_persist.clear()
                timeout = (min(self._interval() - (now - self._part_written[p])
                               for p in pending) if pending else None)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_persist.wait(), timeout)
                continue
            if self._ingesting and len(self._dirty.fills) < self.max_batch:
                # A chunk is being journaled and folded right now: commit it with this batch
                # rather than alone right after (one commit costs about the same for 1 row or
                # 1,000: batching is the lever).
                self._chunk_done.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._chunk_done.wait(), self.batch_wait)
            batch_dirty, self._dirty = self._dirty, Dirty(seq=self._dirty.seq)
            try:
                if batch_dirty.has_facts():
                    t0 = time.perf_counter()
                    batch = self._books.build(batch_dirty, state=False)
                    t1 = time.perf_counter()
                    await anyio.to_thread.run_sync(self._commit, batch, batch_dirty.retry,
                                                   limiter=self._store_limiter)
                    self._stat("facts_build", t1 - t0)
                    self._stat("facts_commit", time.perf_counter() - t1)
            except Exception as exc:
                batch_dirty.retry = True
                batch_dirty.merge_newer(self._dirty)
                self._dirty = batch_dirty
                await self._failed(exc)
                continue
            self._failures, self._error = 0, None
            self._durable = max(self._durable, batch_dirty.receipt)
            self._facts_seq = max(self._facts_seq, batch_dirty.seq)
            self._notify(self.on_durable, self._durable)
            if batch_dirty.has_facts():
                await self._compact()
            self._state.take_state(batch_dirty)
            if not await self._persist_state():
                continue
            if (self.durable >= self._received
                    or time.monotonic() - self._trimmed_at >= TRIM_INTERVAL):
                await self._trim_durable()
            self._progress.set()

    async def _seal_loop(self, after: float) -> None:
        """Every ``min(after / 4, SEAL_SWEEP)`` seconds, take fills out of the garbage
        collector's scan (:meth:`Ledger.seal`): every fill of the positions of instruments
        without a fill for ``after`` seconds, and the settled fills (commission known) of any
        position holding SEAL_BUSY live fills or more, so a busy instrument is bounded too.
        Fills not written yet stay live. A later event that needs sealed fills (a duplicate,
        a correction, an out-of-order fill, a report for one of them) unseals the key: read
        in a worker thread when it is big (:meth:`_read_sealed`)."""
        while True:
            await asyncio.sleep(min(after / 4, SEAL_SWEEP))  # no event to wait for
            now = time.monotonic()
            idle = {con for con, at in self._activity.items() if now - at >= after}
            ledger, sealed, keys = self._books.ledger, 0, 0
            for key in tuple(ledger.keys()):
                if key in self._reading:
                    continue
                if key.con_id in idle:
                    settled_only = False
                elif ledger.live_count(key) >= SEAL_BUSY:
                    settled_only = True
                else:
                    continue
                # In slices (~5 us per fill): the loop stays responsive between them.
                done = 0
                while count := ledger.seal(key, settled_only=settled_only,
                                           keep=self._dirty.fills, limit=SEAL_SLICE):
                    done += count
                    await asyncio.sleep(0)
                    if key in self._reading:
                        break
                if done:
                    sealed, keys = sealed + done, keys + 1
            if sealed:
                self.log.info("sealed %d fills of %d positions", sealed, keys)

    def _interval(self) -> float:
        """While a backlog (a full chunk or more) waits in the inbox, facts go first: state
        writes are spaced 4x."""
        return self.state_interval * (4 if len(self._inbox) >= self.max_batch else 1)

    def _facts_waiting(self) -> bool:
        """Facts are folded, or being journaled, that the next facts commit will carry (so the
        persist loop makes progress on its next turn: no spinning on a deferred state)."""
        return self._dirty.has_facts() or self._ingesting

    def _pending_parts(self) -> list[str]:
        parts = []
        for dirty in (self._state, self._dirty):
            if dirty.strategies and POSITIONS not in parts:
                parts.append(POSITIONS)
            if dirty.portfolio and PORTFOLIO not in parts:
                parts.append(PORTFOLIO)
        return parts

    async def _persist_state(self) -> bool:
        """Write the due state parts of ``self._state``; False when the commit failed."""
        state = self._state
        now = time.monotonic()
        pending = [p for p, has in ((POSITIONS, bool(state.strategies)),
                                    (PORTFOLIO, bool(state.portfolio))) if has]
        # Facts first: while newer facts wait for their commit (at a steady load they always
        # do), a state write would delay them by its whole duration (the store serializes
        # commits), so state is written then only once it is _DEFER intervals old. A waiting
        # flush() gets its state write as soon as the facts it waits for are durable, even
        # while newer facts wait (under a stream it would otherwise wait for that spacing).
        waiting = self._facts_waiting()
        spacing = self._interval() * (_DEFER if waiting else 1)
        flush_due = self._flushing > 0 and (not waiting or self._durable >= self._flush_target)
        due = sorted((p for p in pending
                      if flush_due or now - self._part_written[p] >= spacing),
                     key=lambda p: self._part_written[p])
        if self._flushing == 0:
            due = due[:1]  # the part written longest ago
        if due:
            self._state = Dirty(seq=state.seq, receipt=state.receipt)
            if POSITIONS not in due:
                self._state.strategies, state.strategies = state.strategies, set()
            if PORTFOLIO not in due:
                self._state.portfolio, state.portfolio = state.portfolio, {}
            try:
                t0 = time.perf_counter()
                batch = self._books.build(state, facts=False)
                t1 = time.perf_counter()
                await anyio.to_thread.run_sync(self._commit, batch, False,
                                               limiter=self._store_limiter)
                self._stat("state_build", t1 - t0)
                self._stat("state_commit", time.perf_counter() - t1)
            except Exception as exc:
                state.take_state(self._state)
                self._state = state
                await self._failed(exc)
                return False
            self._failures, self._error = 0, None
        # A part is durable up to this receipt when it was just written or has nothing pending.
        for part, left in ((POSITIONS, bool(self._state.strategies)),
                           (PORTFOLIO, bool(self._state.portfolio))):
            if part in due:
                self._part_written[part] = time.monotonic()
            if part in due or not left:
                self._part_durable[part] = (state.receipt, state.seq)
        self._state_durable = min(r for r, _ in self._part_durable.values())
        self._state_seq = min(q for _, q in self._part_durable.values())
        self._notify(self.on_state_durable, self.durable)
        return True

    def _notify(self, callback: Callable[[int], None] | None, receipt: int) -> None:
        """Call a durability callback; one that raises is logged, never allowed to stop the
        persist loop (the data is durable either way)."""
        if callback is None:
            return
        try:
            callback(receipt)
        except Exception:
            self.log.exception("durability callback %r failed at receipt %d", callback, receipt)

    def _stat(self, name: str, seconds: float) -> None:
        count, total, worst = self.stats.get(name, (0, 0.0, 0.0))
        self.stats[name] = (count + 1, total + seconds, max(worst, seconds))

    def _commit(self, batch: Batch, retry: bool) -> None:
        assert self._store is not None
        # Compaction runs after the commit (_compact): inside it, it would hold back the
        # durability of the rows just written (a compaction took 10-25 ms, Dec 2).
        commit_batch(self._store, batch, run_id=self.run_id, retry=retry,
                     on_residuals=self._books.residuals.__setitem__, compact=False)

    async def _compact(self) -> None:
        """Compact one journal symbol that is due (every ``compact_every`` commits to it; the
        store keeps count), between commits: never inside one."""
        store = self._store
        assert store is not None
        t0 = time.perf_counter()
        try:
            done = await anyio.to_thread.run_sync(store.compact_due,
                                                  limiter=self._store_limiter)
        except Exception:  # the rows are committed: a compaction that fails waits its turn
            self.log.exception("compaction failed (the data is committed; tried again later)")
            return
        if done:
            self._stat("compact", time.perf_counter() - t0)

    async def _trim_durable(self) -> None:
        """Trim the journal up to what ArcticDB holds: facts and derived state."""
        try:
            t0 = time.perf_counter()
            await anyio.to_thread.run_sync(self._trim, min(self._facts_seq, self._state_seq),
                                           limiter=self._journal_limiter)
            self._stat("trim", time.perf_counter() - t0)
        except JournalError:
            self.log.exception("journal trim failed (harmless: replay is idempotent)")
        self._trimmed_at = time.monotonic()

    def _trim(self, seq: int) -> None:
        if self._journal is not None:
            self._journal.trim(seq)

    async def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._attempts_failed += 1
        self._error = exc
        self.log.error("storage attempt %d failed (batch kept, retrying): %r",
                       self._failures, exc)
        self._progress.set()
        await asyncio.sleep(min(0.05 * 2 ** min(self._failures, 7), 5.0))

    # ------------------------------------------------------------------- recovery
    def _recover(self) -> int:
        assert self._store is not None
        assert self._journal is not None
        replayed, self.recovery_stats = recover_books(
            self._store, self._journal, self._books, self._dirty, fold=self._replay_fold,
            log=self.log)
        return replayed

    def _replay_fold(self, seq: int, payload: str, received: float) -> None:
        event: _Event
        try:
            msg = read_payload(payload)
        except InvalidInputError as exc:  # a compact fill entry that does not read back
            account = entry_account(payload)
            self.log.error("journal entry seq=%d: %s", seq, exc, extra={"account": account or "-"})
            msg = payload
            event = (account, str(exc), str(getattr(exc, "field", "")), payload)
        else:
            if isinstance(msg, FillMessage):
                event = msg
            else:
                _, event = prepare_message(msg, received, self.default_account)
        self._fold(seq, event, msg, received)

    # ---------------------------------------------------------------- read helpers
    @property
    def ledger(self) -> Ledger:
        """The in-memory ledger (read it from the event loop only)."""
        return self._books.ledger

    @property
    def store(self) -> Store:
        if self._store is None:
            raise InvalidInputError("store: the PortfolioManager is not open")
        return self._store

    @property
    def received(self) -> int:
        return self._received

    @property
    def durable(self) -> int:
        """Receipt number up to which every message is durable in ArcticDB: its facts (fills,
        orders, rejects rows) and the positions/portfolio state derived from it."""
        return min(self._durable, self._state_durable)

    def positions_frame(self, strategy: str) -> pd.DataFrame:
        """What ``positions/<strategy>`` holds once the pending batch is durable."""
        return state_frame(POSITIONS, self._books.position_rows(strategy, self._dirty.seq))

    def portfolio_frame(self, account: str) -> pd.DataFrame:
        """What ``portfolio/<account>`` holds once the pending batch is durable."""
        self._books.update_portfolio(
            account, {k[1] for k in self._books.account_con_keys if k[0] == account})
        return state_frame(PORTFOLIO, self._books.portfolio_rows(account))

    def in_flight_con_ids(self, window_s: float) -> set[int]:
        """con_ids with a fill received in the last ``window_s`` seconds or not yet durable
        (reconciliation leaves them out of its comparison: the quiet window)."""
        now = time.monotonic()
        busy = {con for con, at in self._activity.items() if now - at < window_s}
        for dirty in (self._dirty, self._state):
            for cons in dirty.portfolio.values():
                busy |= cons
        for _, msg, _ in self._inbox:  # received, not journaled yet
            con_id = message_con_id(msg)
            if con_id is not None:
                busy.add(con_id)
        return busy

    def position(self, account: str, strategy: str, con_id: int) -> Any:
        return self._books.ledger.position(PositionKey(account, strategy, con_id))

    async def set_residuals(self, account: str, frame: pd.DataFrame) -> None:
        """Replace the reconciliation rows (strategy ``_residual``) of ``portfolio/<account>``;
        the manager keeps them whenever it rewrites the symbol. Journaled like a message;
        durable after ``flush()``."""
        missing = [c for c in PORTFOLIO_COLUMNS if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"set_residuals: frame lacks columns {missing}")
        rows = frame_rows(frame[list(PORTFOLIO_COLUMNS)], PORTFOLIO)
        self._accept({"type": RESIDUALS, "account": account,
                      "rows": [[r[0].isoformat(), *r[1:]] for r in rows]})
        await asyncio.sleep(0)


__all__ = ["PortfolioManager", "default_journal_path", "journal_payload"]
