"""Parts of a reconciliation run that need no gateway: the executions window, the choice of
what to backfill, outcomes, and the runner's periodic task (quiet window, no overlap)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from ib_async import CommissionReport as IBCommissionReport
from ib_async import Contract, Execution, Order, OrderStatus, Trade
from ib_async import Fill as IBFill

from backend.core.broker import BrokerExecution, BrokerPosition, BrokerSnapshot
from backend.core.model import RESIDUAL, CommissionReport, Fill, Instrument, Side
from backend.errors import InvalidFieldError, InvalidInputError, StorageError
from backend.reconcile import persist
from backend.reconcile.job import (
    Outcome,
    RunOptions,
    RunReport,
    executions_window_start,
    failed_run,
    run_once,
    select_backfill,
)
from backend.reconcile.periodic import ActivityWindow, PeriodicReconciler, Skip
from backend.storage import open_store
from backend.storage.api import Store, SymbolWrite
from backend.storage.schema import PORTFOLIO, POSITIONS, RECONCILIATION

from .conftest import positions_frame

ACCT = "DU111"
AAPL = Instrument(con_id=265598, symbol="AAPL")
T0 = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def test_exit_codes() -> None:
    assert [o.exit_code for o in Outcome] == [0, 1, 2]


def test_executions_window_is_the_gateways_midnight() -> None:
    # November: New York is UTC-5; 04:08 UTC on the 22nd is still the 21st there.
    assert executions_window_start(datetime(2026, 11, 22, 4, 8, tzinfo=UTC)) == datetime(
        2026, 11, 21, 5, 0, tzinfo=UTC)
    # July (daylight saving): UTC-4.
    assert executions_window_start(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == datetime(
        2026, 7, 1, 4, 0, tzinfo=UTC)
    assert executions_window_start(T0, "Europe/Zurich") == datetime(2026, 11, 19, 23, 0,
                                                                    tzinfo=UTC)
    with pytest.raises(InvalidInputError, match="Mars/Olympus"):
        executions_window_start(T0, "Mars/Olympus")


def execution(n: int, commission: float | None, account: str = ACCT) -> BrokerExecution:
    fill = Fill(exec_id=f"0000e215.{n:08x}.01.01", account=account, strategy="trend",
                instrument=AAPL, side=Side.BUY, qty=1.0, price=150.0,
                time=T0 + timedelta(seconds=n))
    report = None if commission is None else CommissionReport(fill.exec_id, commission, "USD")
    return BrokerExecution(fill=fill, commission=report)


def test_select_backfill_sends_only_what_the_journal_lacks() -> None:
    executions = [execution(1, 1.0), execution(2, 1.0), execution(3, 1.0), execution(4, None),
                  execution(1, 1.0),  # a duplicated execDetails: counted once
                  execution(5, 1.0, account="DU999")]  # an account not reconciled here
    journaled = {ACCT: {executions[0].fill.exec_id: True,  # known with its commission
                        executions[1].fill.exec_id: False}}  # known, commission missing
    feed, counts = select_backfill(executions, [ACCT], journaled)
    assert [ex.fill.exec_id for ex in feed] == [executions[i].fill.exec_id for i in (1, 2, 3)]
    assert counts == {ACCT: {"fetched": 4, "new": 2, "fed": 3}}
    # Once everything is journaled with commissions, nothing is sent again.
    journaled = {ACCT: {ex.fill.exec_id: True for ex in executions}}
    assert select_backfill(executions, [ACCT], journaled)[0] == []


@pytest.mark.asyncio
async def test_failed_run_records_only_a_failed_report_row() -> None:
    store = open_store("memory://")
    report = await failed_run(store, TimeoutError("no answer"), accounts=[ACCT, "DU222"])
    assert report.outcome is Outcome.FAILED
    assert report.exit_code == 2
    assert report.error == "TimeoutError: no answer"
    assert report.report_persisted
    rows = store.read(RECONCILIATION, ACCT)
    assert rows["outcome"].tolist() == ["failed"]
    assert store.list_symbols("portfolio") == []
    # Without known accounts there is nothing to record it under, and that is said.
    assert not (await failed_run(store, TimeoutError("x"))).report_persisted


# ------------------------------------------------------------------------- periodic task


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ib_trade(status: str, order_id: int, account: str = ACCT, perm_id: int = 0) -> Trade:
    return Trade(contract=Contract(conId=AAPL.con_id, symbol="AAPL", secType="STK"),
                 order=Order(orderId=order_id, permId=perm_id, clientId=1, account=account,
                             action="BUY", totalQuantity=10),
                 orderStatus=OrderStatus(orderId=order_id, status=status))


def test_activity_window_from_strategy_manager_messages() -> None:
    clock = Clock()
    window = ActivityWindow(quiet_seconds=5.0, clock=clock)
    trade = ib_trade("Submitted", 7, perm_id=900)
    window({"type": "status_change", "strategy": "trend", "trade": trade, "status": "Submitted"})
    assert window.busy([ACCT]) == {(ACCT, AAPL.con_id)}
    window({"type": "status_change", "strategy": "trend", "trade": trade, "status": "Filled"})
    assert window.busy([ACCT]) == frozenset()

    fill = IBFill(contract=Contract(conId=272093), execution=Execution(
        execId="0000e215.1.01.01", acctNumber="DU222"), commissionReport=IBCommissionReport(),
        time=T0)
    window({"type": "fill", "strategy": "trend", "trade": trade, "fill": fill})
    assert window.busy([ACCT, "DU222"]) == {("DU222", 272093)}
    clock.now += 5.0  # the quiet window has passed
    assert window.busy([ACCT, "DU222"]) == frozenset()

    # An order without an account (single-account gateways) is busy in every account.
    window({"type": "status_change", "trade": ib_trade("PreSubmitted", 8, account=""),
            "status": "PreSubmitted"})
    assert window.busy([ACCT, "DU222"]) == {(ACCT, AAPL.con_id), ("DU222", AAPL.con_id)}
    window({"type": "unknown"})  # unreadable messages are ignored
    with pytest.raises(InvalidFieldError, match="quiet_seconds"):
        ActivityWindow(quiet_seconds=-1)


def report(n: int) -> RunReport:
    return RunReport(run_id=f"r{n}", started_at=T0, finished_at=T0, gateway="", accounts=(),
                     outcome=Outcome.CLEAN, portfolio_written=False, report_persisted=False)


async def wait_for(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_periodic_never_overlaps_and_passes_the_quiet_keys() -> None:
    release = asyncio.Event()
    seen: list[Skip] = []

    async def run(skip: Skip) -> RunReport:
        seen.append(skip)
        await release.wait()
        return report(len(seen))

    clock = Clock()
    window = ActivityWindow(quiet_seconds=5.0, clock=clock)
    window.note_fill(ACCT, AAPL.con_id)
    reports: list[RunReport] = []
    periodic = PeriodicReconciler(run, interval=60, activity=window, accounts=lambda: [ACCT],
                                  on_report=reports.append)
    first = asyncio.create_task(periodic.tick())
    await wait_for(lambda: len(seen) == 1)
    assert await periodic.tick() is None  # still running: skipped, not queued
    assert periodic.overlaps_skipped == 1
    release.set()
    done = await first
    assert done is not None
    assert done.run_id == "r1"
    assert seen == [frozenset({(ACCT, AAPL.con_id)})]
    assert reports == [done]
    assert periodic.runs == 1


@pytest.mark.asyncio
async def test_run_forever_keeps_going_after_a_storage_error() -> None:
    calls = 0
    running = 0
    most = 0

    async def run(skip: Skip) -> RunReport:
        nonlocal calls, running, most
        calls += 1
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        running -= 1
        if calls == 2:
            raise StorageError("lmdb full")
        return report(calls)

    periodic = PeriodicReconciler(run, interval=0.001)
    task = asyncio.create_task(periodic.run_forever())
    await wait_for(lambda: periodic.runs >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert most == 1
    assert calls >= 4  # the failed call did not count as a run, nor stop the loop
    with pytest.raises(InvalidFieldError, match="interval"):
        PeriodicReconciler(run, interval=0)


# ------------------------------------------------------------------------- run_once, no gateway


class FakeBroker:
    """A gateway's answers, fixed: ``positions`` is what the next snapshot holds."""

    def __init__(self, positions: Sequence[BrokerPosition], accounts: Sequence[str] = (ACCT,),
                 snapshot_accounts: Sequence[str] | None = None) -> None:
        self.positions = tuple(positions)
        self._accounts = list(accounts)
        self.snapshot_accounts = snapshot_accounts
        self.taken_at = T0

    @property
    def accounts(self) -> list[str]:
        return self._accounts

    async def snapshot(self, accounts: Sequence[str] | None = None,
                       executions_since: datetime | None = None) -> BrokerSnapshot:
        wanted = tuple(self.snapshot_accounts if self.snapshot_accounts is not None
                       else accounts or self._accounts)
        return BrokerSnapshot(taken_at=self.taken_at, accounts=wanted,
                              positions=tuple(p for p in self.positions if p.account in wanted))

    async def quotes(self, con_ids: Iterable[int]) -> dict[int, float]:
        return {}


class FakeBooks:
    """The PortfolioManager's part: residual rows land in ``portfolio/<account>``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.residual_frames: list[tuple[str, pd.DataFrame]] = []

    @property
    def store(self) -> Store:
        return self._store

    async def ingest_backfill(self, executions: Iterable[BrokerExecution]) -> int:
        return 0

    async def flush(self) -> None:
        return None

    async def set_residuals(self, account: str, frame: pd.DataFrame) -> None:
        self.residual_frames.append((account, frame))
        self._store.commit([persist.portfolio_write(account, frame, "run")])


def books_holding(qty: float) -> FakeBooks:
    store = open_store("memory://")
    store.commit([SymbolWrite(POSITIONS, "trend", state=positions_frame([
        {"account": ACCT, "con_id": AAPL.con_id, "qty": qty, "avg_cost": 150.0}]))])
    return FakeBooks(store)


def residuals_in_portfolio(store: Store) -> list[tuple[int, float]]:
    frame = store.read(PORTFOLIO, ACCT)
    frame = frame[frame["strategy"] == RESIDUAL]
    return list(zip(frame["con_id"].tolist(), frame["qty"].tolist(), strict=True))


@pytest.mark.asyncio
async def test_a_skipped_key_keeps_its_residual_row() -> None:
    """A key left out of the compare (working order, fresh fill) was not reconciled: its
    residual from the last run stays in portfolio, not cleared as if resolved."""
    books = books_holding(100.0)
    ib = FakeBroker([BrokerPosition(ACCT, AAPL, 110.0, 150.0, market_price=151.0)])
    first = await run_once(ib, books=books, options=RunOptions(), clock=lambda: T0)
    assert first.outcome is Outcome.BREAKS
    assert residuals_in_portfolio(books.store) == [(AAPL.con_id, 10.0)]
    measured_at = books.store.read(PORTFOLIO, ACCT)["timestamp"].tolist()

    ib.taken_at = T0 + timedelta(minutes=5)
    skip = frozenset({(ACCT, AAPL.con_id)})
    busy = await run_once(ib, books=books, options=RunOptions(skip=skip),
                          clock=lambda: T0 + timedelta(minutes=5))
    report = busy.accounts[0].report
    assert report["skipped"] == [AAPL.con_id]
    assert residuals_in_portfolio(books.store) == [(AAPL.con_id, 10.0)]
    # Carried as measured: the earlier run's time, and the report says it was carried.
    assert books.store.read(PORTFOLIO, ACCT)["timestamp"].tolist() == measured_at
    assert report["carried_residuals"] == [AAPL.con_id]
    # Nothing else disagrees, but the carried residual is unresolved: not a clean run.
    assert busy.accounts[0].result is not None
    assert busy.accounts[0].result.clean
    assert busy.outcome is Outcome.BREAKS
    assert report["outcome"] == "breaks"

    # Compared again (no skip) and resolved: now it is cleared.
    ib.positions = (BrokerPosition(ACCT, AAPL, 100.0, 150.0, market_price=151.0),)
    after = await run_once(ib, books=books, options=RunOptions(),
                           clock=lambda: T0 + timedelta(minutes=10))
    assert after.outcome is Outcome.CLEAN
    assert residuals_in_portfolio(books.store) == []
    assert after.accounts[0].report["carried_residuals"] == []


@pytest.mark.asyncio
async def test_an_account_missing_from_the_snapshot_is_not_flat() -> None:
    """A broker answer that does not cover an account is missing data: no ARCTIC_ONLY, no
    residual cancelling the strategies, a failed run."""
    books = books_holding(100.0)
    ib = FakeBroker([BrokerPosition(ACCT, AAPL, 100.0, 150.0)], snapshot_accounts=("DU222",))
    run = await run_once(ib, books=books, options=RunOptions(accounts=(ACCT,)),
                         clock=lambda: T0)
    assert run.outcome is Outcome.FAILED
    assert ACCT in run.error
    assert books.residual_frames == []
    assert books.store.list_symbols(PORTFOLIO) == []
    assert books.store.read(RECONCILIATION, ACCT)["outcome"].tolist() == ["failed"]


def test_holdings_carry_commissions_in_the_instruments_currency_only() -> None:
    frame = positions_frame([
        {"account": ACCT, "con_id": 1, "qty": 10.0, "avg_cost": 20.0, "commissions": 1.0},
        {"account": ACCT, "con_id": 2, "qty": 10.0, "avg_cost": 20.0, "commissions": 1.0,
         "commission_currency": "EUR"},  # says nothing about a USD average
        {"account": ACCT, "con_id": 3, "qty": 10.0, "avg_cost": 20.0,
         "commissions": math.nan}])  # unknown (mixed currencies)
    fees = {h.con_id: h.commissions for h in persist.holdings_from_frame(frame, "trend")}
    assert fees[1] == 1.0
    assert math.isnan(fees[2])
    assert math.isnan(fees[3])


@pytest.mark.asyncio
async def test_a_run_allows_ibs_average_its_commissions() -> None:
    """IB's averageCost includes the opening commission (10 shares at 20.00, 1.00 paid:
    IB says 20.10): the stored row's commissions explain it, so the run is clean."""
    store = open_store("memory://")
    store.commit([SymbolWrite(POSITIONS, "trend", state=positions_frame([
        {"account": ACCT, "con_id": AAPL.con_id, "qty": 10.0, "avg_cost": 20.0,
         "commissions": 1.0}]))])
    books = FakeBooks(store)
    ib = FakeBroker([BrokerPosition(ACCT, AAPL, 10.0, 20.10, market_price=21.0)])
    clean = await run_once(ib, books=books, options=RunOptions(), clock=lambda: T0)
    assert clean.outcome is Outcome.CLEAN
    ib.positions = (BrokerPosition(ACCT, AAPL, 10.0, 20.20, market_price=21.0),)
    drifted = await run_once(ib, books=books, options=RunOptions(), clock=lambda: T0)
    assert drifted.outcome is Outcome.BREAKS
    assert [b["kind"] for b in drifted.accounts[0].report["breaks"]] == ["AVG_COST_DRIFT"]
