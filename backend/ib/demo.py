"""``portfolio demo``: the simulator, three toy strategies, the PortfolioManager, a live view.

Everything runs in one process and one event loop: the simulated gateway on an ephemeral
127.0.0.1 port, a :class:`StrategyManager` (clientId 1) whose strategies trade a stock, a x50
future and a x100 option (two of them trade the same stock on opposite sides), an
:class:`IBAdapter` (clientId 2, read-only) for marks, and the PortfolioManager persisting every
message to an embedded ``lmdb://`` ArcticDB library.

The live view folds the same messages through its own :class:`Ledger`; it is a display, the
books of record are what the PortfolioManager writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TextIO

from ib_async import Contract, LimitOrder, MarketOrder, Trade
from ib_async import Fill as IBFill

from backend.core.ledger import Ledger
from backend.core.model import UNATTRIBUTED, utc_now
from backend.ib import translate
from backend.ib.adapter import IBAdapter
from backend.ib.simulator import GatewaySimulator, Scenario
from backend.ib.strategy_manager import Message, Strategy, StrategyManager

log = logging.getLogger(__name__)

ACCOUNT = "DU0000001"
STOCK_ID, FUTURE_ID, OPTION_ID = 265598, 495512563, 700001
STRATEGY_CLIENT_ID, QUOTES_CLIENT_ID = 1, 2


def _path(base: float, amplitude: float, period: int, steps: int, tick: float) -> list[float]:
    """A deterministic wave with a small drift, rounded to the tick size."""
    out = []
    for i in range(steps):
        x = base + amplitude * math.sin(2 * math.pi * i / period) + 0.15 * amplitude * math.sin(
            2 * math.pi * i / 7.3) + 0.01 * base * (i / steps)
        out.append(round(round(x / tick) * tick, 6))
    return out


def demo_scenario(step_seconds: float = 0.25, first_order_id: int = 1,
                  run_ms: int = 0) -> Scenario:
    """One account, three instruments with scripted price paths stepping every ``step_seconds``.

    ``run_ms`` (the start time in ms) seeds the exchange's execId and permId counters: IB never
    reuses an execId, and a second demo run into the same store must not either (the ledger
    rightly rejects a known execId with other contents as a conflict).
    """
    return Scenario.from_dict({
        "next_order_id": first_order_id,
        "exec_seq_start": run_ms << 16,  # 65k executions per millisecond of start time
        "perm_id_start": run_ms * 1000,
        "accounts": [ACCOUNT],
        "contracts": [
            {"con_id": STOCK_ID, "symbol": "AAPL", "sec_type": "STK", "exchange": "SMART",
             "primary_exchange": "NASDAQ", "long_name": "APPLE INC", "local_symbol": "AAPL",
             "trading_class": "NMS"},
            {"con_id": FUTURE_ID, "symbol": "ES", "sec_type": "FUT", "exchange": "CME",
             "multiplier": "50", "expiry": "20261218", "local_symbol": "ESZ6",
             "trading_class": "ES", "min_tick": 0.25},
            {"con_id": OPTION_ID, "symbol": "SPY", "sec_type": "OPT", "exchange": "SMART",
             "multiplier": "100", "expiry": "20261218", "strike": 600.0, "right": "C",
             "local_symbol": "SPY   261218C00600000", "trading_class": "SPY"},
        ],
        "price_paths": {
            STOCK_ID: _path(230.0, 1.5, 24, 240, 0.01),
            FUTURE_ID: _path(6000.0, 12.0, 40, 240, 0.25),
            OPTION_ID: _path(14.0, 1.2, 30, 240, 0.01),
        },
        "price_step_seconds": step_seconds,
        "commission_per_unit": 0.005,
        "commission_min": 1.0,
    })


# --------------------------------------------------------------------------- strategies
class _Trader(Strategy):
    """Shared plumbing: a position counter and one working limit order at a time."""

    def __init__(self, name: str, contract: Contract, interval: float) -> None:
        self.name = name
        self.contract = contract
        self.interval = interval
        self.position = 0.0
        self.working: Trade | None = None
        self.prices: list[float] = []

    def on_fill(self, trade: Trade, fill: IBFill) -> None:
        sign = 1 if fill.execution.side == "BOT" else -1
        self.position += sign * fill.execution.shares

    async def next_price(self, sm: StrategyManager) -> float:
        await asyncio.sleep(self.interval)
        price = await sm.quote(self.contract)
        if not math.isnan(price):
            self.prices.append(price)
        return price

    def replace_limit(self, sm: StrategyManager, action: str, qty: float, price: float) -> None:
        if self.working is not None and not self.working.isDone():
            sm.cancel_order(self.working)
        self.working = sm.place_order(self.name, self.contract, LimitOrder(action, qty, price))


class Momentum(_Trader):
    """Stock, market orders: buys strength, sells weakness, within +/-30 shares."""

    async def run(self, sm: StrategyManager) -> None:
        while not sm.stopping:
            await self.next_price(sm)
            if len(self.prices) < 3:
                continue
            up = self.prices[-1] > self.prices[-3]
            if up and self.position < 30:
                sm.place_order(self.name, self.contract, MarketOrder("BUY", 10))
            elif not up and self.position > -30:
                sm.place_order(self.name, self.contract, MarketOrder("SELL", 10))


class MeanReversion(_Trader):
    """Stock (the other side of Momentum) and the future, limit orders just inside the move."""

    def __init__(self, name: str, contract: Contract, future: Contract, interval: float) -> None:
        super().__init__(name, contract, interval)
        self.future = future
        self.future_position = 0.0

    def on_fill(self, trade: Trade, fill: IBFill) -> None:
        sign = 1 if fill.execution.side == "BOT" else -1
        if fill.contract.conId == self.future.conId:
            self.future_position += sign * fill.execution.shares
        else:
            self.position += sign * fill.execution.shares

    async def run(self, sm: StrategyManager) -> None:
        while not sm.stopping:
            price = await self.next_price(sm)
            if len(self.prices) < 3 or math.isnan(price):
                continue
            up = self.prices[-1] > self.prices[-3]
            if up and self.position > -30:
                self.replace_limit(sm, "SELL", 10, round(price - 0.05, 2))
            elif not up and self.position < 30:
                self.replace_limit(sm, "BUY", 10, round(price + 0.05, 2))
            if len(self.prices) % 4 == 0:
                action = "SELL" if self.future_position > 0 else "BUY"
                sm.place_order(self.name, self.future, MarketOrder(action, 1))


class OptionSeller(_Trader):
    """The call option: sells two at the market, buys them back with a limit after a while."""

    async def run(self, sm: StrategyManager) -> None:
        while not sm.stopping:
            price = await self.next_price(sm)
            if math.isnan(price):
                continue
            if self.position >= 0:
                sm.place_order(self.name, self.contract, MarketOrder("SELL", 2))
            elif len(self.prices) % 3 == 0:
                self.replace_limit(sm, "BUY", 2, round(price + 0.10, 2))


# ------------------------------------------------------------------------------ display
@dataclass(frozen=True)
class Row:
    strategy: str
    symbol: str
    qty: float
    avg_cost: float
    realized: float
    unrealized: float
    commissions: float
    fills: int


class Book:
    """The live view's books: the StrategyManager's messages folded through a Ledger."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.messages = 0
        self.errors = 0

    def on_message(self, message: Message) -> None:
        self.messages += 1
        if message["type"] != "fill":
            return
        ib_fill = message["fill"]
        try:
            fill = translate.fill(ib_fill, message["strategy"] or UNATTRIBUTED)
            self.ledger.apply_fill(fill)
            if translate.commission_known(ib_fill):
                report = translate.commission(ib_fill.commissionReport)
                if report is not None:
                    self.ledger.apply_commission(report)
        except Exception:  # the display must not take the demo down
            self.errors += 1
            log.exception("demo view could not fold a fill")

    def mark(self, prices: dict[int, float]) -> None:
        now = utc_now()
        for con_id, price in prices.items():
            if not math.isnan(price):
                self.ledger.set_mark(con_id, price, now)

    def rows(self) -> list[Row]:
        out = []
        for pos in self.ledger.positions():
            comm = self.ledger.commissions(pos.key)
            label = pos.instrument.symbol + _suffix(pos.instrument.sec_type)
            out.append(Row(pos.key.strategy, label, pos.qty, pos.avg_cost, pos.realized_pnl,
                           pos.unrealized_pnl(self.ledger.mark(pos.key.con_id)), comm.total,
                           pos.fill_count))
        return sorted(out, key=lambda r: (r.strategy, r.symbol))


def _suffix(sec_type: str) -> str:
    return "" if sec_type == "STK" else f" {sec_type}"


def _money(x: float) -> str:
    # "z": no "-0.00" for a tiny negative (a flat or unmarked position's rounding noise)
    return "-" if math.isnan(x) else f"{x:z,.2f}"


def render_plain(rows: list[Row], elapsed: float, *, final: bool = False) -> str:
    stamp = "[ final]" if final else f"[{elapsed:5.1f}s]"
    lines = [f"{stamp} {'strategy':<16} {'instrument':<10} {'qty':>7} {'avg':>10} "
             f"{'realized':>11} {'unrealized':>11} {'comm':>8} {'fills':>5}"]
    for r in rows:
        lines.append(f"{'':8} {r.strategy:<16} {r.symbol:<10} {r.qty:>7g} {_money(r.avg_cost):>10} "
                     f"{_money(r.realized):>11} {_money(r.unrealized):>11} "
                     f"{_money(r.commissions):>8} {r.fills:>5}")
    totals = (sum(r.realized for r in rows), sum(r.unrealized for r in rows))
    lines.append(f"{'':8} total realized {_money(totals[0])}, unrealized {_money(totals[1])}")
    return "\n".join(lines)


def render_rich(rows: list[Row], elapsed: float) -> Any:
    from rich.table import Table

    table = Table(title=f"portfolio demo: {elapsed:.0f}s, positions per strategy")
    for name in ("strategy", "instrument", "qty", "avg cost", "realized", "unrealized",
                 "commissions", "fills"):
        table.add_column(name, justify="left" if name in ("strategy", "instrument") else "right")
    for r in rows:
        table.add_row(r.strategy, r.symbol, f"{r.qty:g}", _money(r.avg_cost), _money(r.realized),
                      _money(r.unrealized), _money(r.commissions), str(r.fills))
    table.add_section()
    table.add_row("total", "", "", "", _money(sum(r.realized for r in rows)),
                  _money(sum(r.unrealized for r in rows)), "", "")
    return table


# ------------------------------------------------------------------ PortfolioManager seam
class Sink(Protocol):
    """What the demo needs from the PortfolioManager (an async context manager)."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> Any: ...

    def subscribe(self, source: Any) -> Any: ...

    async def flush(self) -> Any: ...


def default_sink(arctic_uri: str) -> Sink:
    """The PortfolioManager on ``arctic_uri`` (the integration point with backend.core)."""
    from backend.core.portfolio_manager import PortfolioManager

    manager: Sink = PortfolioManager(arctic_uri)
    return manager


# ------------------------------------------------------------------------------ the run
@dataclass(frozen=True)
class DemoResult:
    arctic_uri: str
    data_dir: Path
    messages: int
    fills: int
    rows: list[Row]
    interrupted: bool = False  # stopped by Ctrl-C (cancelled) rather than by the duration


def jupyter_snippet(arctic_uri: str) -> str:
    return (f'import arcticdb as adb\n'
            f'ac = adb.Arctic("{arctic_uri}")\n'
            f'ac["fills"].read(ac["fills"].list_symbols()[0]).data')


def prepare_data_dir(data_dir: Path) -> Path:
    """The absolute data directory, created (synchronous: called once before the loop work)."""
    resolved = data_dir.resolve()
    resolved.mkdir(parents=True, exist_ok=True)
    return resolved


@contextlib.asynccontextmanager
async def _started(sim: GatewaySimulator) -> AsyncIterator[GatewaySimulator]:
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def run_demo(
    duration: float,
    data_dir: Path,
    *,
    out: TextIO | None = None,
    live: bool | None = None,
    refresh: float = 1.0,
    sink_factory: Callable[[str], Sink] = default_sink,
    step_seconds: float = 0.25,
) -> DemoResult:
    """Run the demo for ``duration`` seconds (until cancelled when ``duration`` <= 0)."""
    out = out or sys.stdout
    live = out.isatty() if live is None else live
    data_dir = prepare_data_dir(data_dir)
    arctic_uri = f"lmdb://{data_dir}"
    book = Book()
    ran, interrupted = 0.0, False
    run_ms = time.time_ns() // 1_000_000
    # Order ids are int32 at IB: seconds-based, 10k orders apart per second of start time.
    first_order_id = (run_ms // 1000) % 200_000 * 10_000 + 1
    simulator = GatewaySimulator(demo_scenario(step_seconds, first_order_id, run_ms), port=0)
    async with _started(simulator) as sim:
        sm = StrategyManager()
        quotes = IBAdapter()
        try:
            await sm.connect("127.0.0.1", sim.port, STRATEGY_CLIENT_ID)
            await quotes.connect("127.0.0.1", sim.port, QUOTES_CLIENT_ID, readonly=True)
            stock, future, option = await sm.qualify(
                Contract(conId=STOCK_ID), Contract(conId=FUTURE_ID), Contract(conId=OPTION_ID))
            sm.add_listener(book.on_message)
            strategies: list[Strategy] = [
                Momentum("momentum", stock, interval=0.5),
                MeanReversion("mean_reversion", stock, future, interval=0.6),
                OptionSeller("options_income", option, interval=0.9),
            ]
            async with sink_factory(arctic_uri) as sink:
                sink.subscribe(sm)
                ran, interrupted = await _trade(sm, strategies, quotes, book, duration, out,
                                                live, refresh)
                await _wind_down(sm)
                # Everything published must reach the sink before the flush counts it.
                async with asyncio.timeout(10.0):
                    await sm.message_queue.join()
                await sink.flush()
        finally:
            quotes.disconnect()
            sm.disconnect()
    rows = book.rows()
    if not live:  # the state after the wind-down: working orders cancelled, all flushed
        print(render_plain(rows, ran, final=True), file=out)
    print(f"\nData: {data_dir}  ({arctic_uri})\nOpen it in Jupyter:\n\n"
          f"{jupyter_snippet(arctic_uri)}\n", file=out)
    return DemoResult(arctic_uri, data_dir, book.messages, len(book.ledger), rows, interrupted)


async def _trade(sm: StrategyManager, strategies: list[Strategy], quotes: IBAdapter, book: Book,
                 duration: float, out: TextIO, live: bool, refresh: float,
                 ) -> tuple[float, bool]:
    """Trade until the duration is up, a strategy fails, or Ctrl-C (then wind down cleanly).

    Returns how many seconds it traded and whether Ctrl-C (a cancel) stopped it."""
    interrupted = False
    start = time.monotonic()
    runner = asyncio.create_task(sm.run(strategies), name="strategies")

    async def refresh_marks() -> None:
        with contextlib.suppress(Exception):  # a missed mark only delays the view
            book.mark(await quotes.quotes([STOCK_ID, FUTURE_ID, OPTION_ID]))

    def elapsed() -> float:
        return time.monotonic() - start

    try:
        if live:
            from rich.console import Console
            from rich.live import Live

            with Live(render_rich(book.rows(), 0), console=Console(file=out),
                      refresh_per_second=4) as view:
                while not _done(elapsed(), duration, runner):
                    await asyncio.sleep(min(refresh, 0.25))
                    await refresh_marks()
                    view.update(render_rich(book.rows(), elapsed()))
        else:
            next_print = 5.0
            while not _done(elapsed(), duration, runner):
                await asyncio.sleep(min(refresh, 0.25))
                if elapsed() >= next_print:
                    await refresh_marks()
                    print(render_plain(book.rows(), elapsed()), file=out, flush=True)
                    next_print += 5.0
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels us; stop trading but still wind down and flush.
        interrupted = True
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    failed = runner.done() and not runner.cancelled() and runner.exception() is not None
    await sm.stop()
    await stop_task(runner)
    if not failed:
        await refresh_marks()
    return elapsed(), interrupted


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it; re-raises its own failure.

    The cancel is repeated until the task is done: a task can swallow one cancellation (in
    Python 3.11 e.g. inside a ``wait_for`` whose result races with the cancel) and go on.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def _done(elapsed: float, duration: float, runner: asyncio.Task[None]) -> bool:
    return runner.done() or (duration > 0 and elapsed >= duration)


async def _wind_down(sm: StrategyManager, grace: float = 2.0) -> None:
    """Cancel working orders and give in-flight fills and commission reports time to land."""
    for trade in sm.ib.openTrades():
        sm.cancel_order(trade)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        pending = [t for t in sm.ib.trades() if not t.isDone()]
        waiting = [f for f in sm.ib.fills() if not translate.commission_known(f)]
        if not pending and not waiting:
            return
        await asyncio.sleep(0.05)
