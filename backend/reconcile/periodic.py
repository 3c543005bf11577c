"""The runner's periodic reconciliation: on an interval, never overlapping, quiet keys skipped.

An instrument with a fill in the last ``quiet_seconds`` or an order still working is "in
flight": the broker's position and the journal may legitimately disagree for a moment (the
fill is on its way through the queue), so those (account, con_id) keys are left out of that
run and listed in its report as ``skipped``. :class:`ActivityWindow` learns this from the
StrategyManager's messages (``sm.add_listener(window)``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from backend.core.model import utc_now
from backend.errors import InvalidFieldError, LedgerError
from backend.reconcile.job import Books, Broker, RunOptions, RunReport, run_once

log = logging.getLogger(__name__)

ANY_ACCOUNT = "*"  # an order whose account IB left empty: the con_id is busy in every account
# ib_async's OrderStatus.DoneStates plus Inactive (not working at the exchange).
DONE_STATES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})

Skip = frozenset[tuple[str, int]]


class ActivityWindow:
    """(account, con_id) keys with a recent fill or a working order."""

    def __init__(self, quiet_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if quiet_seconds < 0:
            raise InvalidFieldError("quiet_seconds", quiet_seconds, "must be >= 0")
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._last_fill: dict[tuple[str, int], float] = {}
        self._working: dict[tuple[Any, ...], tuple[str, int]] = {}  # order key -> (acct, con)

    def note_fill(self, account: str, con_id: int) -> None:
        self._last_fill[(account or ANY_ACCOUNT, con_id)] = self._clock()

    def note_order(self, order_key: tuple[Any, ...], account: str, con_id: int,
                   status: str) -> None:
        if status in DONE_STATES:
            self._working.pop(order_key, None)
        else:
            self._working[order_key] = (account or ANY_ACCOUNT, con_id)

    def __call__(self, message: Mapping[str, Any]) -> None:
        """A StrategyManager listener: reads ib_async objects, ignores what it cannot read."""
        trade = message.get("trade")
        contract = getattr(trade, "contract", None)
        order = getattr(trade, "order", None)
        if message.get("type") == "fill":
            fill = message.get("fill")
            execution = getattr(fill, "execution", None)
            fill_contract = getattr(fill, "contract", None) or contract
            con_id = getattr(fill_contract, "conId", 0)
            if execution is not None and con_id:
                self.note_fill(str(execution.acctNumber), int(con_id))
        elif message.get("type") == "status_change" and order is not None and contract:
            status = str(message.get("status")
                         or getattr(getattr(trade, "orderStatus", None), "status", ""))
            key = (order.permId, order.orderId, order.clientId) if order.permId else (
                0, order.orderId, order.clientId)
            self.note_order(key, str(order.account or ""), int(contract.conId), status)

    def busy(self, accounts: Iterable[str]) -> Skip:
        """Keys to skip now, with wildcard accounts expanded to ``accounts``."""
        now = self._clock()
        keys = {k for k, t in self._last_fill.items() if now - t < self.quiet_seconds}
        # Forget fills that left the window (keeps the dict small in a long-running runner).
        self._last_fill = {k: t for k, t in self._last_fill.items()
                           if now - t < self.quiet_seconds}
        keys |= set(self._working.values())
        accts = list(accounts)
        out = {k for k in keys if k[0] != ANY_ACCOUNT}
        out |= {(a, c) for acct, c in keys if acct == ANY_ACCOUNT for a in accts}
        return frozenset(out)


class PeriodicReconciler:
    """Calls ``run(skip)`` every ``interval`` seconds after the previous run finished.

    Never overlaps itself: :meth:`tick` while a run is in progress returns None (counted in
    ``overlaps_skipped``). A run that raises (storage trouble) is logged and the loop goes on.
    """

    def __init__(self, run: Callable[[Skip], Awaitable[RunReport]], interval: float,
                 activity: ActivityWindow | None = None,
                 accounts: Callable[[], Iterable[str]] = tuple,
                 on_report: Callable[[RunReport], None] | None = None) -> None:
        if not interval > 0:
            raise InvalidFieldError("interval", interval, "must be > 0 seconds")
        self.interval = interval
        self.activity = activity
        self._run = run
        self._accounts = accounts
        self._on_report = on_report
        self._lock = asyncio.Lock()
        self.runs = 0
        self.overlaps_skipped = 0
        self.last: RunReport | None = None

    async def tick(self) -> RunReport | None:
        if self._lock.locked():
            self.overlaps_skipped += 1
            return None
        async with self._lock:
            skip = self.activity.busy(self._accounts()) if self.activity else frozenset()
            report = await self._run(skip)
            self.runs += 1
            self.last = report
            if self._on_report is not None:
                self._on_report(report)
            return report

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except LedgerError as exc:  # storage trouble: keep the runner alive, say so
                log.error("periodic reconciliation failed: %s", exc)


def runner_reconciler(broker: Broker, books: Books, *, interval: float,
                      quiet_seconds: float = 5.0, options: RunOptions | None = None,
                      in_flight: Callable[[float], Iterable[int]] | None = None,
                      listening_since: Callable[[], datetime | None] | None = None,
                      on_report: Callable[[RunReport], None] | None = None,
                      clock: Callable[[], datetime] = utc_now,
                      ) -> tuple[PeriodicReconciler, ActivityWindow]:
    """The runner's task, wired to the PortfolioManager ``books`` (the writer)::

        periodic, window = runner_reconciler(adapter, pm, interval=300,
                                             in_flight=pm.in_flight_con_ids,
                                             listening_since=lambda: sm.listening_since)
        sm.add_listener(window)                      # working orders and fresh fills
        task = asyncio.create_task(periodic.run_forever())

    ``in_flight(quiet_seconds)`` gives con_ids the manager has not made durable or saw a fill
    for recently (``PortfolioManager.in_flight_con_ids``); they are skipped in every account.
    ``listening_since()`` gives when the runner's live connection came up (None while it is
    down): a runner listening across the gateway's midnight has no history gap, while one that
    was down then gets its HISTORY_GAP break.
    """
    base = options or RunOptions()
    window = ActivityWindow(quiet_seconds)

    def accounts() -> Iterable[str]:
        return base.accounts or tuple(broker.accounts)

    async def run(skip: Skip) -> RunReport:
        if in_flight is not None:
            cons = set(in_flight(quiet_seconds))
            skip = skip | {(a, c) for a in accounts() for c in cons}
        since = listening_since() if listening_since is not None else base.listening_since
        return await run_once(broker, books=books, clock=clock,
                              options=replace(base, skip=skip, listening_since=since))

    return PeriodicReconciler(run, interval, window, accounts, on_report), window
