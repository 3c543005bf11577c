"""``portfolio demo --duration 20 --data DIR`` end to end, then the data is checked with ArcticDB.

The check is independent of the PortfolioManager's code: the ``fills`` library is read back
with plain ``arcticdb`` (as a user would in Jupyter), folded through the ledger, and compared
with the ``positions`` library it wrote.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import queue
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import arcticdb as adb
import pandas as pd
import pytest

from backend.cli import main
from backend.core.ledger import Ledger
from backend.core.model import CommissionReport, Fill, Instrument, PositionKey, Side
from backend.ib.demo import DemoResult, run_demo

DURATION = "20"


class BadLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "Error handling fields" in text:
            self.records.append(text)


@pytest.fixture
def decoder_guard() -> Iterator[BadLogs]:
    guard = BadLogs()
    logging.getLogger("ib_async").addHandler(guard)
    try:
        yield guard
    finally:
        logging.getLogger("ib_async").removeHandler(guard)


def read_all(ac: adb.Arctic, library: str) -> dict[str, pd.DataFrame]:
    lib = ac[library]
    with warnings.catch_warnings():
        # arcticdb 6.28's own pandas internals (not ours); warnings are errors in tests.
        warnings.filterwarnings("ignore", message=".*BlockManagerUnconsolidated.*",
                                category=DeprecationWarning)
        return {symbol: lib.read(symbol).data for symbol in lib.list_symbols()}


def replay(fills_by_account: dict[str, pd.DataFrame]) -> Ledger:
    ledger = Ledger()
    for account, frame in fills_by_account.items():
        rows: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[assignment]
        for row in rows:
            inst = Instrument(con_id=int(row["con_id"]), symbol=row["symbol"],
                              sec_type=row["sec_type"], currency=row["currency"],
                              multiplier=float(row["multiplier"]), expiry=row["expiry"],
                              strike=float(row["strike"]), right=row["right"])
            when = pd.Timestamp(row["exec_time"])
            when = when.tz_localize(UTC) if when.tzinfo is None else when.tz_convert(UTC)
            ledger.apply_fill(Fill(
                exec_id=row["exec_id"], account=account, strategy=row["strategy"],
                instrument=inst, side=Side(row["side"]), qty=float(row["qty"]),
                price=float(row["price"]), time=when.to_pydatetime()))
            if not math.isnan(row["commission"]):
                ledger.apply_commission(CommissionReport(
                    row["exec_id"], float(row["commission"]), row["commission_currency"]))
    return ledger


def test_demo_books_fills_and_positions_equal_their_replay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], decoder_guard: BadLogs) -> None:
    data = tmp_path / "data"
    assert main(["demo", "--duration", DURATION, "--data", str(data)]) == 0
    out = capsys.readouterr().out
    uri = f"lmdb://{data.resolve()}"
    assert uri in out  # where the data is
    assert 'adb.Arctic("' in out
    assert 'ac["fills"]' in out
    assert "momentum" in out  # the plain summary (stdout is not a TTY here)
    assert not decoder_guard.records

    ac = adb.Arctic(uri)
    fills = read_all(ac, "fills")
    total = sum(len(f) for f in fills.values())
    assert total > 0
    ledger = replay(fills)
    assert len(ledger) == total  # no duplicates stored

    positions = read_all(ac, "positions")
    stored: dict[PositionKey, pd.Series] = {}
    for strategy, frame in positions.items():
        for _, row in frame.iterrows():
            stored[PositionKey(row["account"], strategy, int(row["con_id"]))] = row
    assert set(stored) == set(ledger.keys())
    strategies = {k.strategy for k in stored}
    assert {"momentum", "mean_reversion", "options_income"} <= strategies
    multipliers = {float(r["multiplier"]) for r in stored.values()}
    assert {1.0, 50.0, 100.0} <= multipliers  # stock, future, option
    for key, row in stored.items():
        pos = ledger.position(key)
        assert pos is not None
        assert row["qty"] == pytest.approx(pos.qty, abs=1e-9), key
        assert row["realized_pnl"] == pytest.approx(pos.realized_pnl, rel=1e-9, abs=1e-6), key
        assert int(row["fill_count"]) == pos.fill_count, key
        if pos.is_flat:
            assert math.isnan(row["avg_cost"]), key
        else:
            assert row["avg_cost"] == pytest.approx(pos.avg_cost, rel=1e-9), key
        comm = ledger.commissions(key)
        assert int(row["commissions_pending"]) == comm.pending, key
        assert row["commissions"] == pytest.approx(comm.total, rel=1e-9, nan_ok=True), key
    # Two strategies traded the same stock on opposite sides: separate positions.
    stock_keys = [k for k, r in stored.items() if r["sec_type"] == "STK"]
    assert len({k.strategy for k in stock_keys}) >= 2


async def bounded_run(data: Path) -> DemoResult:
    # A hang fails here with the stuck await in the traceback, well before the test timeout.
    return await asyncio.wait_for(run_demo(3.0, data, out=io.StringIO(), live=False), 50.0)


def test_a_second_run_into_the_same_store_adds_to_it_without_conflicts(
        tmp_path: Path, decoder_guard: BadLogs) -> None:
    # The store is opened by this test only after both runs: LMDB must not be opened twice
    # in one process while another handle on the same path writes.
    data = tmp_path / "again"
    runs = [asyncio.run(bounded_run(data)) for _ in range(2)]
    assert all(r.fills > 0 for r in runs)
    ac = adb.Arctic(f"lmdb://{data.resolve()}")
    stored = sum(len(f) for f in read_all(ac, "fills").values())
    rejects = read_all(ac, "rejects")
    assert sum(len(f) for f in rejects.values()) == 0, rejects
    assert stored == runs[0].fills + runs[1].fills  # the second run's execIds are new
    assert not decoder_guard.records


def test_ctrl_c_winds_down_flushes_and_exits_130(tmp_path: Path) -> None:
    """``portfolio demo --duration 0`` as a real process, stopped by SIGINT as a terminal's
    Ctrl-C would: it stops trading, flushes what it booked and exits 130."""
    data = tmp_path / "interrupted"
    script = Path(sys.executable).parent / "portfolio"
    assert script.exists(), f"{script}: the project's console script is not installed"
    proc = subprocess.Popen([str(script), "demo", "--duration", "0", "--plain", "--data",
                             str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        seen = ""
        while "total realized" not in seen:  # the first periodic summary: it is trading
            seen = lines.get(timeout=60)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    out = "".join(iter_queue(lines))
    assert proc.stdout is not None
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert code == 130, (out, err)
    assert f"lmdb://{data.resolve()}" in out  # where the data is, as after a normal run
    ac = adb.Arctic(f"lmdb://{data.resolve()}")
    fills = read_all(ac, "fills")
    total = sum(len(f) for f in fills.values())
    assert total > 0
    assert len(replay(fills)) == total
    positions = read_all(ac, "positions")
    assert sum(int(f["fill_count"].sum()) for f in positions.values()) == total


def iter_queue(lines: queue.Queue[str]) -> Iterator[str]:
    while not lines.empty():
        yield lines.get_nowait()


def test_live_and_plain_views_show_positions_per_strategy() -> None:
    from rich.console import Console

    from backend.ib.demo import Row, render_plain, render_rich

    rows = [Row("momentum", "AAPL", 10.0, 229.5, -12.5, 4.0, 2.0, 3),
            Row("options_income", "SPY OPT", -2.0, 13.0, 0.0, float("nan"), 1.0, 1)]
    plain = render_plain(rows, 5.0)
    assert "momentum" in plain
    assert "options_income" in plain
    assert "-12.50" in plain
    assert "total realized -12.50" in plain
    assert plain.startswith("[  5.0s]")
    final = render_plain([Row("momentum", "AAPL", 0.0, float("nan"), 3.0, -1e-9, 1.0, 2)], 9.0,
                         final=True)
    assert final.startswith("[ final]")  # the state after the wind-down, told apart
    assert "-0.00" not in final  # rounding noise of a flat position is not shown signed
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_rich(rows, 5.0))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "options_income" in text
    assert "229.50" in text
