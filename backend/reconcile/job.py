"""One reconciliation run: snapshot, backfill, compare, quote, persist, outcome.

Order of a run:

1. Before anything changes, per account: the coverage (the later of the last journaled fill
   and the ``covered_until`` watermark that backfilled runs leave in the metadata of
   ``reconciliation/<account>``) and the exec_ids journaled since the gateway's midnight.
2. The broker snapshot: positions (zero rows kept), portfolio prices, then every execution the
   gateway still returns (since its midnight). Complete or raising: a refused connection, a
   timeout, a drop or a partial answer makes the run FAILED (exit code 2) before anything is
   ingested, and nothing reaches ``portfolio``.
3. Backfill (only with ``books``, the PortfolioManager, i.e. when this process is the
   journal's writer): executions not journaled yet, or journaled without the commission that
   has now arrived, go through its idempotent ``ingest_backfill``; then ``flush``. A second run
   finds them journaled and feeds none.
4. The compare (:func:`backend.core.reconcile.reconcile`) of the journaled holdings (read back
   from ``positions``) with the snapshot, minus the keys in ``skip`` (the runner's quiet
   window).
5. Snapshot quotes for open holdings IB does not price. Any failure there is reported
   (``quote_error``) and the PnL stays NaN with ``no_quote``: never invented.
6. A HISTORY_GAP break when the coverage (1) ends before the gateway's executions window.
7. Writes: the residual rows through ``books.set_residuals`` (the PortfolioManager rewrites
   ``portfolio/<account>``, a new version per run, and keeps them on its later rewrites; a
   key in ``skip`` was not compared, so its last residual row is carried as it was), then
   one report row per account in ``reconciliation/<account>``. A failed run writes only its
   report row (outcome ``failed``); a run without ``books`` writes only the report (and only
   if its store accepts writes).

The broker is anything shaped like :class:`backend.ib.adapter.IBAdapter` (:class:`Broker`),
the books anything shaped like the PortfolioManager (:class:`Books`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import anyio.to_thread
import pandas as pd

from backend.core.broker import BrokerExecution, BrokerPosition, BrokerSnapshot
from backend.core.model import RESIDUAL, utc_now
from backend.core.reconcile import (
    PricedRow,
    ReconciliationResult,
    StrategyHolding,
    Tolerances,
    con_ids_needing_quote,
    gap_break,
    price_rows,
    reconcile,
)
from backend.errors import (
    BrokerError,
    InvalidInputError,
    ReconciliationError,
    StorageError,
)
from backend.reconcile import persist
from backend.storage.api import Store, SymbolWrite

log = logging.getLogger(__name__)

DEFAULT_GATEWAY_TZ = "America/New_York"
# Ask for every execution the gateway still has (its day), not only those after our last fill:
# a correction of an older execution carries that older time. The ingest is idempotent and
# select_backfill sends only what the journal lacks.
ALL_EXECUTIONS = datetime(1970, 1, 1, tzinfo=UTC)


class Outcome(StrEnum):
    CLEAN = "clean"
    BREAKS = "breaks"
    FAILED = "failed"

    @property
    def exit_code(self) -> int:
        return {Outcome.CLEAN: 0, Outcome.BREAKS: 1, Outcome.FAILED: 2}[self]


class Broker(Protocol):
    """The part of :class:`backend.ib.adapter.IBAdapter` a run uses."""

    @property
    def accounts(self) -> list[str]: ...

    async def snapshot(self, accounts: Sequence[str] | None = None,
                       executions_since: datetime | None = None) -> BrokerSnapshot: ...

    async def quotes(self, con_ids: Iterable[int]) -> dict[int, float]: ...


class Books(Protocol):
    """The part of the PortfolioManager (the journal's writer) a run uses."""

    @property
    def store(self) -> Store: ...

    async def ingest_backfill(self, executions: Iterable[BrokerExecution]) -> int: ...

    async def flush(self) -> None: ...

    async def set_residuals(self, account: str, frame: pd.DataFrame) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    accounts: tuple[str, ...] | None = None  # None: every account the gateway manages
    tolerances: Tolerances = field(default_factory=Tolerances)
    gateway: str = ""  # "host:port client_id=N", for the report
    gateway_tz: str = DEFAULT_GATEWAY_TZ  # the gateway's midnight bounds its executions
    write_portfolio: bool = True
    lease_holder: str = ""  # who holds the writer lease when write_portfolio is False
    skip: frozenset[tuple[str, int]] = frozenset()  # (account, con_id) left out (quiet window)
    # When the runner's live connection came up (StrategyManager.listening_since): its fills
    # reached the journal as they happened, so coverage before the gateway's midnight is no gap.
    listening_since: datetime | None = None


@dataclass(frozen=True)
class AccountRun:
    account: str
    outcome: Outcome
    result: ReconciliationResult | None
    report: dict[str, Any]
    priced: tuple[PricedRow, ...] = ()


@dataclass(frozen=True)
class RunReport:
    run_id: str
    started_at: datetime
    finished_at: datetime
    gateway: str
    outcome: Outcome
    accounts: tuple[AccountRun, ...]
    portfolio_written: bool
    report_persisted: bool
    error: str = ""
    notes: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat(), "gateway": self.gateway,
                "outcome": str(self.outcome), "exit_code": self.exit_code,
                "portfolio_written": self.portfolio_written,
                "report_persisted": self.report_persisted, "error": self.error,
                "notes": list(self.notes),
                "accounts": {a.account: a.report for a in self.accounts}}


def executions_window_start(now: datetime, gateway_tz: str = DEFAULT_GATEWAY_TZ) -> datetime:
    """The gateway's last midnight (in its time zone) as UTC: its executions start there."""
    try:
        zone = ZoneInfo(gateway_tz)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise InvalidInputError(f"gateway_tz={gateway_tz!r}: unknown time zone") from exc
    local = now.astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    return midnight.astimezone(UTC)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


@dataclass(frozen=True)
class _Before:
    """What storage said before this run changed anything (read in a worker thread)."""

    watermark: dict[str, datetime | None]  # covered_until metadata
    coverage: dict[str, datetime | None]  # later of last fill and watermark


def _read_before(store: Store, accounts: Sequence[str], now: datetime) -> _Before:
    marks = {a: persist.covered_until(store, a) for a in accounts}
    coverage = {a: _later(persist.last_fill_time(store, a, now), marks[a]) for a in accounts}
    return _Before(marks, coverage)


def _read_journaled(store: Store, accounts: Sequence[str],
                    executions: Sequence[BrokerExecution]) -> dict[str, dict[str, bool]]:
    """What is journaled since the oldest execution the gateway returned."""
    if not executions:
        return {a: {} for a in accounts}
    since = min(ex.fill.time for ex in executions)
    return {a: persist.journaled_fills(store, a, since) for a in accounts}


def select_backfill(executions: Iterable[BrokerExecution], accounts: Sequence[str],
                    journaled: Mapping[str, Mapping[str, bool]],
                    ) -> tuple[list[BrokerExecution], dict[str, dict[str, int]]]:
    """The executions worth feeding to the ingest, and per-account counts.

    Fed: an exec_id not journaled yet (``new``: missed while nobody listened, or a correction
    with a new revision), or one journaled without a commission that now has one. Everything
    else is a known duplicate; the ingest would ignore it, so it is not even sent.
    """
    counts = {a: {"fetched": 0, "new": 0, "fed": 0} for a in accounts}
    feed: list[BrokerExecution] = []
    seen: set[tuple[str, str]] = set()
    for ex in executions:
        account, exec_id = ex.fill.account, ex.fill.exec_id
        if account not in counts or (account, exec_id) in seen:
            continue
        seen.add((account, exec_id))
        counts[account]["fetched"] += 1
        known = journaled.get(account, {})
        if exec_id not in known:
            counts[account]["new"] += 1
        elif known[exec_id] or ex.commission is None or not ex.commission.known:
            continue
        counts[account]["fed"] += 1
        feed.append(ex)
    return feed, counts


def _without(items: Iterable[Any], skip: frozenset[tuple[str, int]]) -> list[Any]:
    return [x for x in items if (x.account, x.instrument.con_id) not in skip]


async def run_once(
    broker: Broker,
    *,
    books: Books | None,
    store: Store | None = None,
    options: RunOptions | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> RunReport:
    """One run (see the module docstring). Broker trouble gives a FAILED report, not a raise.

    ``books``: the PortfolioManager when this process is the journal's writer (backfill,
    residual rows into ``portfolio``, the report through its store). Without it, ``store``
    (a reader) is used to read, and the run writes only the report (if the store allows).
    """
    opts = options or RunOptions()
    if books is not None:
        store = books.store
    if store is None:
        raise InvalidInputError("run_once: give books (the writer) or a store to read from")
    run_id = uuid.uuid4().hex
    started = clock()
    accounts: tuple[str, ...] = opts.accounts or ()
    notes: list[str] = []
    try:
        if not accounts:
            accounts = tuple(broker.accounts)
        if not accounts:
            raise ReconciliationError("the gateway manages no accounts")
        window = executions_window_start(started, opts.gateway_tz)
        before = await anyio.to_thread.run_sync(_read_before, store, accounts, started)
        # Positions first, then the executions (the adapter asks in that order), so every
        # execution inside the positions is in the backfill.
        snap = await broker.snapshot(list(accounts), executions_since=ALL_EXECUTIONS)
        missing = [a for a in accounts if a not in snap.accounts]
        if missing:
            # No answer for an account is not a flat account: comparing would cancel every
            # strategy holding with a residual.
            raise ReconciliationError(f"the snapshot does not cover accounts {missing}")
        counts: dict[str, dict[str, int]] = {}
        if books is not None:
            journaled = await anyio.to_thread.run_sync(_read_journaled, store, accounts,
                                                       snap.executions)
            feed, counts = select_backfill(snap.executions, accounts, journaled)
            if feed:
                await books.ingest_backfill(feed)
            await books.flush()
        else:
            notes.append("no backfill: the journal's writer (a running PortfolioManager) "
                         "ingests fills live and checks history gaps itself")
        holdings: list[StrategyHolding] = _without(
            await anyio.to_thread.run_sync(persist.read_holdings, store, accounts), opts.skip)
        positions: list[BrokerPosition] = _without(
            (p for p in snap.positions if p.account in accounts), opts.skip)
        result = reconcile(holdings, positions, opts.tolerances)
    except (BrokerError, ReconciliationError, InvalidInputError, StorageError) as exc:
        log.error("reconciliation run %s failed: %s", run_id, exc)
        return await failed_run(store, exc, options=opts, accounts=accounts, clock=clock,
                                run_id=run_id, started=started, notes=notes)
    quotes, quote_error = await _quotes(broker, con_ids_needing_quote(result))

    runs: list[AccountRun] = []
    for a in accounts:
        res = result.for_account(a)
        gap = (gap_break(a, before.coverage[a], window, opts.listening_since)
               if books is not None else None)
        if gap is not None:
            res = res.with_breaks(gap)
        priced = price_rows(res, quotes)
        outcome = Outcome.CLEAN if res.clean else Outcome.BREAKS
        report = {
            **res.to_dict(), "account": a, "outcome": str(outcome), "run_id": run_id,
            "gateway": opts.gateway, "snapshot_taken_at": snap.taken_at.isoformat(),
            "executions_window_start": window.isoformat(),
            "covered_until_before": _iso(before.coverage[a]), "backfill": counts.get(a),
            "listening_since": _iso(opts.listening_since),
            "skipped": sorted(c for acc, c in opts.skip if acc == a),
            "carried_residuals": [],
            "quotes": {str(c): persist.json_safe(q) for c, q in sorted(quotes.items())},
            "quote_error": quote_error, "rows": [p.to_dict() for p in priced],
            "notes": notes}
        runs.append(AccountRun(a, outcome, res, report, priced))

    written = books is not None and opts.write_portfolio
    if books is not None and opts.write_portfolio:
        for i, r in enumerate(runs):
            # Always set (an empty frame clears residuals that are resolved now). A skipped
            # key was not compared: its last residual is carried, not cleared.
            carried = await anyio.to_thread.run_sync(
                persist.carried_residuals, store, r.account,
                [c for acc, c in opts.skip if acc == r.account])
            r.report["carried_residuals"] = sorted(int(c) for c in carried["con_id"])
            if not carried.empty and r.outcome is Outcome.CLEAN:
                # The carried row is a discrepancy nobody has seen resolved: not clean.
                r.report["outcome"] = str(Outcome.BREAKS)
                runs[i] = replace(r, outcome=Outcome.BREAKS)
            await books.set_residuals(r.account, persist.with_carried(persist.portfolio_frame(
                (p for p in r.priced if p.row.strategy == RESIDUAL), snap.taken_at), carried))
        await books.flush()
    elif not opts.write_portfolio:
        notes.append(f"writer lease held by {opts.lease_holder or 'another process'}: "
                     "portfolio untouched")
    finished = clock()
    writes = []
    for r in runs:
        r.report["portfolio_written"] = written
        # Only a backfilled run extends the watermark; a read-only run carries it over.
        covered = snap.taken_at if books is not None else None
        frame = persist.report_frame(
            r.report, run_id=run_id, started_at=started, finished_at=finished,
            gateway=opts.gateway, outcome=str(r.outcome),
            breaks=len(r.result.breaks) if r.result else 0)
        writes.append(persist.report_write(r.account, frame,
                                           _later(covered, before.watermark[r.account])))
    persisted = await _commit(store, writes, notes)
    overall = (Outcome.BREAKS if any(r.outcome is Outcome.BREAKS for r in runs)
               else Outcome.CLEAN)
    return RunReport(run_id=run_id, started_at=started, finished_at=finished,
                     gateway=opts.gateway, outcome=overall, accounts=tuple(runs),
                     portfolio_written=written, report_persisted=persisted,
                     notes=tuple(notes))


async def _commit(store: Store, writes: list[SymbolWrite], notes: list[str]) -> bool:
    if not writes:
        return False
    try:
        await anyio.to_thread.run_sync(store.commit, writes)
    except StorageError as exc:
        # A read-only store (another process holds the writer lease) cannot record the run.
        notes.append(f"report not persisted to reconciliation/: {exc}")
        log.warning("reconciliation report not persisted: %s", exc)
        return False
    return True


async def _quotes(broker: Broker, con_ids: Sequence[int]) -> tuple[dict[int, float], str]:
    if not con_ids:
        return {}, ""
    try:
        return await broker.quotes(con_ids), ""
    except BrokerError as exc:
        # No market data (no subscription, closed market, even a drop after a complete
        # snapshot): the PnL stays unknown and the report says so; never invented.
        return {}, f"{type(exc).__name__}: {exc}"


async def failed_run(store: Store, exc: BaseException, *, options: RunOptions | None = None,
                     accounts: Sequence[str] = (), clock: Callable[[], datetime] = utc_now,
                     run_id: str | None = None, started: datetime | None = None,
                     notes: list[str] | None = None) -> RunReport:
    """Record a run that could not reconcile (e.g. the connect failed): one ``failed`` report
    row per known account, the watermark carried over, nothing else written."""
    opts = options or RunOptions()
    run_id = run_id or uuid.uuid4().hex
    started = started or clock()
    notes = notes if notes is not None else []
    error = f"{type(exc).__name__}: {exc}"
    finished = clock()
    runs = tuple(AccountRun(a, Outcome.FAILED, None, {
        "account": a, "outcome": str(Outcome.FAILED), "run_id": run_id,
        "gateway": opts.gateway, "error": error, "notes": notes}) for a in accounts)

    def build() -> list[SymbolWrite]:
        # Carry the watermark over (metadata lives per version); a failure never moves it.
        return [persist.report_write(r.account, persist.report_frame(
            r.report, run_id=run_id, started_at=started, finished_at=finished,
            gateway=opts.gateway, outcome=str(Outcome.FAILED), breaks=0),
            persist.covered_until(store, r.account)) for r in runs]

    try:
        writes = await anyio.to_thread.run_sync(build)
    except StorageError as store_exc:
        notes.append(f"report not persisted to reconciliation/: {store_exc}")
        writes = []
    persisted = await _commit(store, writes, notes)
    return RunReport(run_id=run_id, started_at=started, finished_at=finished,
                     gateway=opts.gateway, outcome=Outcome.FAILED, accounts=runs,
                     portfolio_written=False, report_persisted=persisted, error=error,
                     notes=tuple(notes))
