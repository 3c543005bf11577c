"""PortfolioManager end to end on real lmdb:// with real ib_async objects and the dict form."""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.core.model import RESIDUAL, UNATTRIBUTED
from backend.core.portfolio_manager import PortfolioManager
from backend.errors import InvalidInputError
from backend.storage import SymbolWrite, open_store
from backend.storage.arctic import ArcticStore
from backend.storage.schema import FILLS, ORDERS, PORTFOLIO, POSITIONS, REJECTS

from .ib_objects import (
    AAPL,
    ACCOUNT,
    ES,
    MSFT,
    T0,
    dict_fill,
    exec_id,
    fill_msg,
    ib_fill,
    ib_trade,
    read,
    status_msg,
)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 'arctic'}"


def pos_row(frame: pd.DataFrame, con_id: int, account: str = ACCOUNT) -> pd.Series:
    rows = frame[(frame["con_id"] == con_id) & (frame["account"] == account)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


@pytest.mark.asyncio
async def test_partial_fills_out_of_order_real_ib_objects(uri: str) -> None:
    trade = ib_trade(1, "BUY", 30, lmt=101.0, order_ref="alpha")
    fills = [ib_fill(n, "BOT", 10, price, order_id=1) for n, price in
             ((1, 100.0), (2, 101.0), (3, 102.0))]
    async with PortfolioManager(uri) as pm:
        for f in (fills[2], fills[0], fills[1]):  # delivered out of order
            await pm.process_message(fill_msg("alpha", f, trade))
        await pm.flush()
    stored = read(uri, FILLS, ACCOUNT)
    assert list(stored["exec_id"]) == [exec_id(1), exec_id(2), exec_id(3)]  # sorted by time
    assert stored.index.is_monotonic_increasing
    assert str(pd.DatetimeIndex(stored.index).tz) == "UTC"
    assert list(stored["exec_time"]) == [pd.Timestamp(f.execution.time).tz_localize(None)
                                         for f in fills]
    assert list(stored["side"]) == ["BUY"] * 3
    assert stored["commission"].isna().all()  # empty CommissionReport(): not arrived
    row = pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])
    assert row["qty"] == 30.0
    assert row["avg_cost"] == pytest.approx(101.0)
    assert row["fill_count"] == 3
    assert row["commissions_pending"] == 3
    assert row["last_exec_id"] == exec_id(3)
    port = read(uri, PORTFOLIO, ACCOUNT)
    assert port[["strategy", "con_id", "qty"]].values.tolist() == [["alpha", AAPL["conId"], 30.0]]


@pytest.mark.asyncio
async def test_short_cover_to_flat_then_long_resets_average_dict_form(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("beta", dict_fill(1, "SLD", 10, 100.0)))
        await pm.process_message(fill_msg("beta", dict_fill(2, "BOT", 10, 90.0)))
        await pm.flush()
        flat = read(uri, POSITIONS, "beta")
        assert read(uri, PORTFOLIO, ACCOUNT).empty  # zero-qty rows leave the portfolio
        await pm.process_message(fill_msg("beta", dict_fill(3, "BOT", 5, 95.0)))
        await pm.flush()
    row = pos_row(flat, AAPL["conId"])
    assert row["qty"] == 0.0  # positions keeps the flat row with its realized PnL
    assert math.isnan(row["avg_cost"])
    assert row["realized_pnl"] == pytest.approx(100.0)
    row = pos_row(read(uri, POSITIONS, "beta"), AAPL["conId"])
    assert (row["qty"], row["avg_cost"], row["realized_pnl"]) == (5.0, 95.0, 100.0)
    port = read(uri, PORTFOLIO, ACCOUNT)
    assert port[["strategy", "qty", "avg_cost"]].values.tolist() == [["beta", 5.0, 95.0]]


@pytest.mark.asyncio
async def test_two_strategies_on_opposite_sides_of_one_con_id(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.process_message(fill_msg("beta", ib_fill(2, "SLD", 4, 102.0)))
        await pm.flush()
    assert pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])["qty"] == 10.0
    assert pos_row(read(uri, POSITIONS, "beta"), AAPL["conId"])["qty"] == -4.0
    port = read(uri, PORTFOLIO, ACCOUNT).set_index("strategy")
    assert port.loc["alpha", "qty"] == 10.0
    assert port.loc["beta", "qty"] == -4.0
    # One mark per instrument (the newest fill price) for both books.
    assert port["mark_price"].tolist() == [102.0, 102.0]
    assert port.loc["alpha", "unrealized_pnl"] == pytest.approx(20.0)
    assert port.loc["beta", "unrealized_pnl"] == pytest.approx(0.0)


@pytest.mark.asyncio
async def test_duplicates_are_no_ops(uri: str) -> None:
    fill = ib_fill(1, "BOT", 10, 100.0, commission=1.0)
    async with PortfolioManager(uri) as pm:
        for _ in range(3):
            await pm.process_message(fill_msg("alpha", fill))
        # the same execution in the dict form, through the backfill path too
        await pm.process_message(fill_msg("alpha", dict_fill(1, "BOT", 10, 100.0, commission=1.0)))
        await pm.flush()
        versions = pm.store.list_versions(FILLS, ACCOUNT)
        await pm.process_message(fill_msg("alpha", fill))
        await pm.flush()
        assert pm.store.list_versions(FILLS, ACCOUNT) == versions
    assert len(read(uri, FILLS, ACCOUNT)) == 1
    row = pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])
    assert (row["qty"], row["fill_count"], row["commissions"]) == (10.0, 1, 1.0)


@pytest.mark.asyncio
async def test_late_commission_updates_and_is_never_erased(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.process_message(fill_msg("alpha", ib_fill(2, "BOT", 10, 100.0)))
        await pm.flush()
        assert read(uri, FILLS, ACCOUNT)["commission"].isna().all()
        assert pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])["commissions_pending"] == 2
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, commission=1.25)))
        await pm.process_message(fill_msg("alpha", ib_fill(2, "BOT", 10, 100.0, commission=0.0)))
        await pm.flush()
        # a later copy without a report never erases a known commission
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.flush()
    stored = read(uri, FILLS, ACCOUNT)
    assert len(stored) == 2
    assert stored["commission"].tolist() == [1.25, 0.0]  # 0.0 is a fact, not "unknown"
    assert stored["commission_currency"].tolist() == ["USD", "USD"]
    row = pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])
    assert (row["commissions"], row["commissions_pending"]) == (1.25, 0)
    assert row["qty"] == 20.0


@pytest.mark.asyncio
async def test_correction_replaces_original(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.process_message(fill_msg("alpha", ib_fill(2, "BOT", 10, 110.0)))
        await pm.flush()
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 8, 101.0, revision=2)))
        await pm.flush()
        # the original arriving again after its correction is stale: ignored
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.flush()
    stored = read(uri, FILLS, ACCOUNT)
    assert stored["exec_id"].tolist() == [exec_id(1, 2), exec_id(2)]
    assert stored["revision"].tolist() == [2, 1]
    assert stored["qty"].tolist() == [8.0, 10.0]
    row = pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])
    assert row["qty"] == 18.0
    assert row["avg_cost"] == pytest.approx((8 * 101.0 + 10 * 110.0) / 18)


@pytest.mark.asyncio
async def test_bootstrap_on_empty_library_then_appends(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        assert pm.store.list_symbols(FILLS) == []
        assert len(pm.ledger) == 0
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 1, 100.0)))
        await pm.flush()
        first = pm.store.read_metadata(FILLS, ACCOUNT)
        for n in range(2, 12):
            await pm.process_message(fill_msg("alpha", ib_fill(n, "BOT", 1, 100.0 + n)))
        await pm.flush()
        second = pm.store.read_metadata(FILLS, ACCOUNT)
    stored = read(uri, FILLS, ACCOUNT)
    assert stored["exec_id"].tolist() == [exec_id(n) for n in range(1, 12)]
    assert stored["seq"].is_monotonic_increasing
    assert first is not None
    assert second is not None
    assert first["watermark"] == 1
    assert second["watermark"] == 11
    assert pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])["watermark"] == 11


@pytest.mark.asyncio
async def test_orders_identity_and_cancel_replace_update(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        submitted = ib_trade(1, "BUY", 10, lmt=100.0, status="Submitted", order_ref="alpha")
        await pm.process_message(status_msg("alpha", submitted))
        await pm.process_message(status_msg("alpha", submitted))  # identical re-send
        await pm.flush()
        assert len(read(uri, ORDERS, ACCOUNT)) == 1
        # cancel/replace: same status and fill progress, new price and quantity
        modified = ib_trade(1, "BUY", 12, lmt=101.5, status="Submitted", order_ref="alpha",
                            log_time=T0 + pd.Timedelta(seconds=30))
        await pm.process_message(status_msg("alpha", modified))
        await pm.flush()
        stored = read(uri, ORDERS, ACCOUNT)
        assert len(stored) == 1  # an update of its row, not a duplicate
        assert stored[["lmt_price", "total_qty", "remaining_qty"]].values.tolist() == [
            [101.5, 12.0, 12.0]]
        # new fill progress and a new status are new rows
        await pm.process_message(status_msg("alpha", ib_trade(
            1, "BUY", 12, lmt=101.5, status="Submitted", filled=5.0, order_ref="alpha",
            log_time=T0 + pd.Timedelta(seconds=40))))
        await pm.process_message(status_msg("alpha", ib_trade(
            1, "BUY", 12, lmt=101.5, status="Filled", filled=12.0, order_ref="alpha",
            log_time=T0 + pd.Timedelta(seconds=50))))
        await pm.flush()
    stored = read(uri, ORDERS, ACCOUNT)
    assert stored["status"].tolist() == ["Submitted", "Submitted", "Filled"]
    assert stored["filled_qty"].tolist() == [0.0, 5.0, 12.0]
    assert stored["event_key"].is_unique
    assert stored["strategy"].tolist() == ["alpha"] * 3
    assert stored["side"].tolist() == ["BUY"] * 3


@pytest.mark.asyncio
async def test_strategy_attribution_falls_back_to_order_ref_then_unattributed(uri: str) -> None:
    async with PortfolioManager(uri) as pm:
        trade = ib_trade(1, "BUY", 5, order_ref="gamma")
        await pm.process_message(fill_msg("", ib_fill(1, "BOT", 5, 100.0), trade))
        await pm.process_message(fill_msg("", ib_fill(2, "BOT", 3, 100.0, order_ref="delta")))
        await pm.process_message({"type": "fill", "fill": ib_fill(3, "BOT", 2, 100.0)})
        await pm.flush()
        assert sorted(pm.store.list_symbols(POSITIONS)) == sorted(
            ["gamma", "delta", UNATTRIBUTED])
    assert pos_row(read(uri, POSITIONS, UNATTRIBUTED), AAPL["conId"])["qty"] == 2.0
    assert read(uri, FILLS, ACCOUNT)["strategy"].tolist() == ["gamma", "delta", UNATTRIBUTED]


@pytest.mark.asyncio
async def test_bad_messages_go_to_rejects_and_processing_continues(
        uri: str, caplog: pytest.LogCaptureFixture) -> None:
    bad_qty = dict_fill(2, "BOT", float("nan"), 100.0)
    neg_qty = dict_fill(3, "BOT", -5, 100.0)
    zero_px = dict_fill(4, "BOT", 5, 0.0)
    bad_side = dict_fill(5, "BUYISH", 5, 100.0)
    bad_account = dict_fill(6, "BOT", 5, 100.0)
    bad_account["execution"]["acctNumber"] = 12345
    wrong_type = dict_fill(7, "BOT", 5, 100.0)
    wrong_type["execution"]["shares"] = "five"
    caplog.set_level(logging.WARNING, logger="backend.portfolio_manager")
    async with PortfolioManager(uri) as pm:
        for msg in ({"type": "heartbeat"}, {"type": "fill"}, "not a mapping",
                    fill_msg("a", bad_qty), fill_msg("a", neg_qty), fill_msg("a", zero_px),
                    fill_msg("a", bad_side), fill_msg("a", bad_account),
                    fill_msg("a", wrong_type)):
            await pm.process_message(msg)
        await pm.process_message(fill_msg("alpha", ib_fill(9, "BOT", 1, 100.0)))
        await pm.flush()
        run_id = pm.run_id
    rejects = read(uri, REJECTS, ACCOUNT)
    assert rejects["field"].tolist() == [
        "fill.execution.shares", "fill.execution.shares", "fill.execution.price",
        "fill.execution.side", "fill.execution.shares"]
    assert "nan" in rejects["reason"].iloc[0]
    assert "-5" in rejects["reason"].iloc[1]
    assert "BUYISH" in rejects["reason"].iloc[3]
    assert "'five'" in rejects["reason"].iloc[4]
    assert '"shares": -5' in rejects["raw"].iloc[1]  # the raw message, whole, as JSON
    unknown = read(uri, REJECTS, "_unknown")
    assert unknown["field"].tolist() == ["type", "fill", "message",
                                         "fill.execution.acctNumber"]
    assert "12345" in unknown["reason"].iloc[3]
    assert len(read(uri, FILLS, ACCOUNT)) == 1  # the good fill after them landed
    lines = [r.getMessage() for r in caplog.records if "reject" in r.getMessage()]
    assert len(lines) == 9
    assert all(f"run_id={run_id}" in line for line in lines)
    assert any(f"account={ACCOUNT}" in line for line in lines)


@pytest.mark.asyncio
async def test_portfolio_targeted_upsert_open_increase_decrease_close_flip(uri: str) -> None:
    steps = [("BOT", 10, 100.0, 10.0), ("BOT", 10, 110.0, 20.0), ("SLD", 5, 120.0, 15.0),
             ("SLD", 15, 90.0, 0.0), ("SLD", 4, 95.0, -4.0), ("BOT", 10, 97.0, 6.0)]
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(100, "BOT", 2, 400.0, contract=MSFT)))
        await pm.flush()
        msft = read(uri, PORTFOLIO, ACCOUNT)
        for n, (side, qty, price, expect) in enumerate(steps, start=1):
            await pm.process_message(fill_msg("alpha", ib_fill(n, side, qty, price, contract=ES)))
            await pm.flush()
            port = read(uri, PORTFOLIO, ACCOUNT)
            es = port[port["con_id"] == ES["conId"]]
            if expect == 0.0:
                assert es.empty
            else:
                assert es["qty"].tolist() == [expect]
            # the other instrument's row is untouched
            other = port[port["con_id"] == MSFT["conId"]].reset_index(drop=True)
            pd.testing.assert_frame_equal(other, msft)
    row = pos_row(read(uri, POSITIONS, "alpha"), ES["conId"])
    # flip at 95 opened -4 @ 95; buying 10 @ 97 closes 4 (-2 * 4 * 50) and opens 6 @ 97
    assert (row["qty"], row["avg_cost"]) == (6.0, 97.0)
    realized = (110 - 105) * 0 + (120 - 105) * 5 * 50 + (90 - 105) * 15 * 50 + (95 - 97) * 4 * 50
    assert row["realized_pnl"] == pytest.approx(realized)


@pytest.mark.asyncio
async def test_residual_rows_survive_rewrites(uri: str) -> None:
    residual = pd.DataFrame({
        "timestamp": [pd.Timestamp("2026-11-20 20:00")], "strategy": [RESIDUAL],
        "con_id": [MSFT["conId"]], "symbol": ["MSFT"], "sec_type": ["STK"],
        "currency": ["USD"], "multiplier": [1.0], "qty": [7.0], "avg_cost": [400.0],
        "realized_pnl": [0.0], "unrealized_pnl": [float("nan")], "mark_price": [float("nan")],
        "source": ["reconciliation"]})
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.flush()
        # a reconciliation run in this process writes the whole symbol with a residual row
        current = pm.store.read(PORTFOLIO, ACCOUNT)
        pm.store.commit([SymbolWrite(PORTFOLIO, ACCOUNT,
                                     state=pd.concat([current, residual], ignore_index=True))])
        await pm.process_message(fill_msg("alpha", ib_fill(2, "BOT", 5, 100.0)))
        await pm.flush()
        port = read(uri, PORTFOLIO, ACCOUNT)
        assert port["strategy"].tolist() == ["alpha", RESIDUAL]
        assert port["qty"].tolist() == [15.0, 7.0]
    async with PortfolioManager(uri) as pm:  # and across a restart
        await pm.process_message(fill_msg("alpha", ib_fill(3, "SLD", 15, 100.0)))
        await pm.flush()
        assert read(uri, PORTFOLIO, ACCOUNT)["strategy"].tolist() == [RESIDUAL]
        await pm.set_residuals(ACCOUNT, residual.iloc[0:0])
        await pm.flush()
    assert read(uri, PORTFOLIO, ACCOUNT).empty


@pytest.mark.asyncio
async def test_subscribe_drains_a_message_queue(uri: str) -> None:
    import asyncio

    class Producer:
        def __init__(self) -> None:
            self.message_queue: asyncio.Queue[object] = asyncio.Queue()

    producer = Producer()
    async with PortfolioManager(uri) as pm:
        with pytest.raises(InvalidInputError, match="message_queue"):
            pm.subscribe(object())
        pm.subscribe(producer)
        trade = ib_trade(1, "BUY", 3, order_ref="alpha")
        producer.message_queue.put_nowait(status_msg("alpha", trade))
        for n in range(1, 4):
            producer.message_queue.put_nowait(fill_msg("alpha", ib_fill(n, "BOT", 1, 100.0),
                                                       trade))
        await producer.message_queue.join()  # taken from the queue by the manager
        await pm.flush()
        assert pm.durable == pm.received == 4
        assert pos_row(pm.positions_frame("alpha"), AAPL["conId"])["qty"] == 3.0
        assert AAPL["conId"] in pm.in_flight_con_ids(60.0)
    assert pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])["qty"] == 3.0
    assert len(read(uri, ORDERS, ACCOUNT)) == 1


@pytest.mark.asyncio
async def test_backfill_of_broker_executions_is_idempotent(uri: str) -> None:
    from backend.core.broker import BrokerExecution
    from backend.core.messages import parse_message

    live = fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0))
    parsed = parse_message(live, received_at=T0)
    backfill = parse_message({"type": "fill", "fill": ib_fill(2, "BOT", 5, 101.0)},
                             received_at=T0)
    async with PortfolioManager(uri) as pm:
        await pm.process_message(live)
        await pm.flush()
        executions = [BrokerExecution(fill=parsed.fill, commission=None),  # type: ignore[union-attr]
                      BrokerExecution(fill=backfill.fill, commission=None)]  # type: ignore[union-attr]
        assert await pm.ingest_backfill(executions) == 2
        await pm.flush()
    stored = read(uri, FILLS, ACCOUNT)
    assert stored["strategy"].tolist() == ["alpha", UNATTRIBUTED]  # the live copy kept its book
    assert pos_row(read(uri, POSITIONS, "alpha"), AAPL["conId"])["qty"] == 10.0


@pytest.mark.asyncio
async def test_memory_twin_and_default_journal_path(tmp_path: Path) -> None:
    from backend.core.portfolio_manager import default_journal_path

    assert default_journal_path(f"lmdb://{tmp_path}/a") == f"{tmp_path}/a/_pm_journal.sqlite"
    assert default_journal_path("memory://") == ":memory:"
    async with PortfolioManager("memory://") as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "SLD", 3, 100.0)))
        await pm.flush()
        assert pm.store.read(POSITIONS, "alpha")["qty"].tolist() == [-3.0]
        assert pm.portfolio_frame(ACCOUNT)["qty"].tolist() == [-3.0]


@pytest.mark.asyncio
async def test_manager_is_entered_once_and_refuses_messages_when_closed(uri: str) -> None:
    pm = PortfolioManager(uri)
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 1, 100.0)))
    async with pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 1, 100.0)))
    with pytest.raises(InvalidInputError, match="entered once"):
        async with pm:
            pass
    assert len(read(uri, FILLS, ACCOUNT)) == 1  # closing flushed what was received


@pytest.mark.asyncio
async def test_set_residuals_right_after_restart_keeps_the_strategy_rows(uri: str) -> None:
    residual = pd.DataFrame({
        "timestamp": [pd.Timestamp("2026-11-20 20:00")], "strategy": [RESIDUAL],
        "con_id": [MSFT["conId"]], "symbol": ["MSFT"], "sec_type": ["STK"],
        "currency": ["USD"], "multiplier": [1.0], "qty": [7.0], "avg_cost": [400.0],
        "realized_pnl": [0.0], "unrealized_pnl": [float("nan")], "mark_price": [float("nan")],
        "source": ["reconciliation"]})
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0)))
        await pm.flush()
    async with PortfolioManager(uri) as pm:  # nothing folded since the restart
        await pm.set_residuals(ACCOUNT, residual)
        await pm.flush()
    port = read(uri, PORTFOLIO, ACCOUNT)
    assert port["strategy"].tolist() == ["alpha", RESIDUAL]
    assert port["qty"].tolist() == [10.0, 7.0]


@pytest.mark.asyncio
async def test_store_opener_sets_the_compaction_period(uri: str) -> None:
    """The tuning knob docs/events.md names: a manager whose store compacts every 3 writes
    adds compaction versions to ``fills`` as it ingests; every fill row is still there."""
    async with PortfolioManager(uri, store_opener=lambda u: open_store(u, compact_every=3)
                                ) as pm:
        for n in range(1, 8):
            await pm.process_message(fill_msg("alpha", dict_fill(n, "BOT", 1, 100.0 + n)))
            await pm.flush()  # one facts commit per fill: 7 writes to fills/<account>
        store = pm.store
        assert isinstance(store, ArcticStore)
        versions = len(store.list_versions(FILLS, ACCOUNT))
        assert versions == 7 + 2  # compacted after the 3rd and the 6th write
        assert list(store.read(FILLS, ACCOUNT)["exec_id"]) == [exec_id(n) for n in range(1, 8)]


@pytest.mark.asyncio
async def test_flush_under_a_never_ending_stream_returns_with_its_state(uri: str) -> None:
    """A flush waits for the facts it covers, then writes their state, even while newer fills
    keep coming: with state writes otherwise a day apart (``state_interval``), a flush called
    in a stream that never pauses returns, and ``positions`` then hold every fill received
    before the call. (Before, it waited for a pause in the stream or that spacing.)"""
    async with PortfolioManager(uri, state_interval=86_400.0) as pm:
        stop, under_way = asyncio.Event(), asyncio.Event()
        pm.on_durable = lambda receipt: under_way.set() if receipt >= 200 else None

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await pm.process_message(fill_msg("alpha", dict_fill(n, "BOT", 1, 100.0)))
                if n % 10 == 0:
                    await asyncio.sleep(0.001)

        producer = asyncio.create_task(produce())
        try:
            await under_way.wait()
            before = pm.received
            # a liveness bound, not a speed check: the spacing it must not wait for is days
            await asyncio.wait_for(pm.flush(), timeout=60)
            assert not producer.done()  # the stream was still running
        finally:
            stop.set()
            await producer
        reader = open_store(uri, writer=False)
        try:
            positions = reader.read(POSITIONS, "alpha")
        finally:
            reader.close()
        assert positions["fill_count"].iloc[0] >= before


@pytest.mark.asyncio
async def test_compaction_runs_after_the_commit_is_reported_durable(uri: str) -> None:
    """The commit that makes a symbol due for compaction is reported durable before the
    compaction runs (inside the commit, the compaction would hold back those rows): at each
    ``on_durable`` the symbol has no compaction version yet beyond the earlier ones."""
    seen: list[int] = []
    async with PortfolioManager(uri, store_opener=lambda u: open_store(u, compact_every=3)
                                ) as pm:
        store = pm.store
        assert isinstance(store, ArcticStore)
        pm.on_durable = lambda receipt: seen.append(len(store.list_versions(FILLS, ACCOUNT)))
        for n in range(1, 5):
            await pm.process_message(fill_msg("alpha", dict_fill(n, "BOT", 1, 100.0 + n)))
            await pm.flush()  # one facts commit per fill
        # writes 1..3 reported at versions 1..3; the compaction (version 4) came after the
        # 3rd report; the 4th write is version 5
        assert seen == [1, 2, 3, 5]
        assert len(store.list_versions(FILLS, ACCOUNT)) == 5
        assert list(store.read(FILLS, ACCOUNT)["exec_id"]) == [exec_id(n) for n in range(1, 5)]


@pytest.mark.asyncio
async def test_messages_are_not_kept_once_processed(uri: str) -> None:
    """The manager keeps what it folded (its own fills), not the producer's objects: once a
    message is durable, the ib_async Trade/Fill it came in are the producer's alone."""
    import gc

    async with PortfolioManager(uri) as pm:
        trade = ib_trade(1, "BUY", 5.0, status="Filled", filled=5.0)
        ib = ib_fill(1, "BOT", 5.0, 100.0)
        refs: list[weakref.ref[Any]] = [weakref.ref(trade), weakref.ref(ib.execution),
                                        weakref.ref(ib.contract)]
        await pm.process_message(fill_msg("alpha", ib, trade))
        await pm.process_message(status_msg("alpha", trade))
        await pm.flush()
        del trade, ib
        gc.collect()
        assert [r() for r in refs] == [None, None, None]
        assert pm.position(ACCOUNT, "alpha", 265598).qty == 5.0


@pytest.mark.asyncio
async def test_a_failing_durability_callback_is_logged_and_the_manager_goes_on(
        uri: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def broken(receipt: int) -> None:
        seen.append(receipt)
        raise KeyError(receipt)

    async with PortfolioManager(uri) as pm:
        pm.on_durable = pm.on_state_durable = broken
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 5.0, 100.0)))
        await pm.flush()
        await pm.process_message(fill_msg("alpha", ib_fill(2, "BOT", 5.0, 101.0)))
        await pm.flush()
        assert pm.position(ACCOUNT, "alpha", 265598).qty == 10.0
    assert seen and max(seen) == 2
    assert "durability callback" in caplog.text
    assert len(read(uri, FILLS, ACCOUNT)) == 2


@pytest.mark.asyncio
async def test_idle_positions_are_sealed_and_later_events_still_see_their_fills(
        tmp_path: Path) -> None:
    """``seal_after``: positions of instruments idle that long keep their fills packed (out
    of the GC's scan); duplicates, a correction and new fills after that give exactly the
    libraries of a manager that never seals."""
    first = [fill_msg("alpha", ib_fill(n, "BOT", 5.0, 100.0 + n, contract=c))
             for n, c in ((1, AAPL), (2, MSFT), (3, AAPL), (4, MSFT))]
    later = [*first,  # duplicates of sealed fills
             fill_msg("alpha", ib_fill(3, "BOT", 4.0, 103.5, contract=AAPL, revision=2)),
             fill_msg("beta", ib_fill(5, "SLD", 2.0, 99.0, contract=MSFT))]
    roots = []
    for seal_after in (None, 0.05):
        uri = f"lmdb://{tmp_path / str(seal_after)}"
        async with PortfolioManager(uri, seal_after=seal_after) as pm:
            for msg in first:
                await pm.process_message(msg)
            await pm.flush()
            if seal_after is not None:
                deadline = asyncio.get_running_loop().time() + 10
                while pm.ledger.restored_keys < 2:  # the sweep runs every seal_after / 4
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.01)
                assert pm.ledger.knows(ACCOUNT, exec_id(1))  # known while sealed
            for msg in later:
                await pm.process_message(msg)
            await pm.flush()
            assert pm.position(ACCOUNT, "alpha", AAPL["conId"]).qty == 9.0
        roots.append(uri)
    plain, sealed = roots
    for library, symbol in ((FILLS, ACCOUNT), (POSITIONS, "alpha"), (POSITIONS, "beta"),
                            (PORTFOLIO, ACCOUNT)):
        a, b = read(plain, library, symbol), read(sealed, library, symbol)
        drop = [c for c in ("recorded_at", "last_updated", "timestamp") if c in a.columns]
        pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True),
                                      b.drop(columns=drop).reset_index(drop=True))


@pytest.mark.asyncio
async def test_a_big_restored_key_is_read_in_a_worker_thread_before_its_event(
        tmp_path: Path) -> None:
    """After a restart a key's fills stay unread until an event needs them (a late
    commission, a correction; not a plain re-delivered copy). For a key of UNSEAL_IN_THREAD
    fills or more they are read, and its prints computed, in a worker thread first (the
    event loop only installs them): the stored libraries equal those of a manager that never
    restarted."""
    from backend.core.portfolio_manager import UNSEAL_IN_THREAD

    n = UNSEAL_IN_THREAD + 100
    first = [fill_msg("alpha", ib_fill(i, "BOT" if i % 3 else "SLD", 1.0, 100.0 + i % 7))
             for i in range(1, n + 1)]
    small = [fill_msg("beta", ib_fill(n + i, "BOT", 2.0, 50.0, contract=MSFT))
             for i in range(1, 4)]
    later = [fill_msg("alpha", ib_fill(5, "BOT", 1.0, 105.0)),  # a duplicate
             fill_msg("alpha", ib_fill(7, "BOT", 1.0, 107.0, commission=0.5)),  # late report
             fill_msg("alpha", ib_fill(8, "SLD", 3.0, 98.0, revision=2)),  # a correction
             fill_msg("beta", ib_fill(n + 1, "BOT", 2.0, 50.0, contract=MSFT,
                                      commission=1.0))]  # small key: read on the loop
    restarted, plain = f"lmdb://{tmp_path / 'restarted'}", f"lmdb://{tmp_path / 'plain'}"
    async with PortfolioManager(restarted) as pm:
        for msg in first + small:
            await pm.process_message(msg)
        await pm.flush()
    async with PortfolioManager(restarted) as pm:
        assert pm.ledger.restored_keys == 2
        # the duplicate is a plain copy: recognised from alpha's prints (computed in a worker
        # thread, alpha being big), nothing read
        await pm.process_message(later[0])
        await pm.flush()
        assert pm.ledger.restored_keys == 2 and "unseal_read" not in pm.stats
        assert pm.stats["prints"][0] == 1
        for msg in later[1:]:
            await pm.process_message(msg)
        await pm.flush()
        assert pm.stats["unseal_read"][0] == 1  # alpha's key, once; beta's on the loop
        assert pm.ledger.restored_keys == 0
    async with PortfolioManager(plain) as pm:
        for msg in first + small + later:
            await pm.process_message(msg)
        await pm.flush()
    for library, symbol in ((FILLS, ACCOUNT), (POSITIONS, "alpha"), (POSITIONS, "beta"),
                            (PORTFOLIO, ACCOUNT)):
        a, b = read(plain, library, symbol), read(restarted, library, symbol)
        drop = [c for c in ("recorded_at", "last_updated", "timestamp", "seq", "watermark")
                if c in a.columns]
        pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True),
                                      b.drop(columns=drop).reset_index(drop=True))


@pytest.mark.asyncio
async def test_a_busy_position_has_its_settled_fills_sealed_and_outcomes_do_not_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``seal_after`` on an instrument that never goes idle: each sweep seals the fills whose
    commission is known once the position holds SEAL_BUSY live fills; fills still waiting
    for their report stay live, so the late reports unseal nothing; a duplicate and a
    correction of sealed fills afterwards give the libraries of a manager that never seals."""
    import backend.core.portfolio_manager as pm_module

    monkeypatch.setattr(pm_module, "SEAL_SWEEP", 0.01)
    monkeypatch.setattr(pm_module, "SEAL_BUSY", 40)
    monkeypatch.setattr(pm_module, "SEAL_SLICE", 25)  # several slices per key and sweep
    n = 120
    first = [fill_msg("alpha", ib_fill(i, "BOT" if i % 4 else "SLD", 1.0, 100.0 + i % 5,
                                       commission=None if i % 10 == 3 else 0.5))
             for i in range(1, n + 1)]
    late = [fill_msg("alpha", ib_fill(i, "BOT" if i % 4 else "SLD", 1.0, 100.0 + i % 5,
                                      commission=0.75)) for i in range(3, n + 1, 10)]
    after = [first[10],  # a duplicate of a sealed fill
             fill_msg("alpha", ib_fill(21, "SLD", 2.0, 99.0, revision=2))]  # a correction
    roots = []
    for seal_after in (None, 3600.0):
        uri = f"lmdb://{tmp_path / str(seal_after)}"
        async with PortfolioManager(uri, seal_after=seal_after) as pm:
            key = None
            for msg in first:
                await pm.process_message(msg)
            await pm.flush()
            if seal_after is not None:
                ledger = pm.ledger
                key = next(iter(ledger.keys()))
                deadline = asyncio.get_running_loop().time() + 10
                while ledger.live_count(key) > len(late):  # the sweep seals the settled ones
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.01)
                assert ledger.live_count(key) == len(late) and ledger.restored_keys == 1
            for msg in late:
                await pm.process_message(msg)
            await pm.flush()
            if key is not None:
                assert pm.ledger.restored_keys == 1  # the late reports were for live fills
            for msg in after:
                await pm.process_message(msg)
            await pm.flush()
        roots.append(uri)
    plain, sealed = roots
    for library, symbol in ((FILLS, ACCOUNT), (POSITIONS, "alpha"), (PORTFOLIO, ACCOUNT)):
        a, b = read(plain, library, symbol), read(sealed, library, symbol)
        drop = [c for c in ("recorded_at", "last_updated", "timestamp") if c in a.columns]
        pd.testing.assert_frame_equal(a.drop(columns=drop).reset_index(drop=True),
                                      b.drop(columns=drop).reset_index(drop=True))


def test_seal_after_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="seal_after=0"):
        PortfolioManager(f"lmdb://{tmp_path / 'x'}", seal_after=0)
