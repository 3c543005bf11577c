"""IBAdapter through the real ib_async client against the wire-level simulator.

tests/ib/conftest.py's autouse ``ib_decoder_guard`` fails any test on an "Error handling
fields" log record (a message ib_async could not decode).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from backend.core.ledger import Ledger
from backend.core.model import UNATTRIBUTED
from backend.errors import (
    BrokerDisconnectedError,
    BrokerRequestError,
    BrokerTimeoutError,
    ClientIdInUseError,
    InvalidFieldError,
)
from backend.ib import translate
from backend.ib.adapter import IBAdapter
from backend.ib.simulator import Faults, GatewaySimulator, Scenario

A1, A2 = "DU1111111", "DU2222222"
STK, FUT, OPT, OLD = 265598, 495512563, 700001, 8314
TODAY = datetime.now(UTC).replace(microsecond=0)


def scenario_data(accounts: tuple[str, ...] = (A1, A2)) -> dict[str, Any]:
    two = len(accounts) > 1
    b = accounts[-1]
    t1 = (TODAY - timedelta(minutes=30)).isoformat()
    t2 = (TODAY - timedelta(minutes=10)).isoformat()
    return {
        "accounts": list(accounts),
        "contracts": [
            {"con_id": STK, "symbol": "AAPL", "sec_type": "STK", "primary_exchange": "NASDAQ"},
            {"con_id": FUT, "symbol": "ES", "sec_type": "FUT", "exchange": "CME",
             "multiplier": "50", "expiry": "20261218", "local_symbol": "ESZ6"},
            {"con_id": OPT, "symbol": "SPY", "sec_type": "OPT", "multiplier": "100",
             "expiry": "20261218", "strike": 600.0, "right": "C"},
            {"con_id": OLD, "symbol": "IBM", "sec_type": "STK"},
        ],
        "positions": [
            {"account": A1, "con_id": STK, "qty": 100, "avg_cost": 150.0},
            {"account": A1, "con_id": FUT, "qty": 2, "avg_cost": 300_000.0},  # 6000 x 50
            {"account": A1, "con_id": OLD, "qty": 0, "avg_cost": 0.0},  # closed today: flat
            *([{"account": b, "con_id": OPT, "qty": -3, "avg_cost": 1_250.0}] if two else []),
            *([{"account": b, "con_id": STK, "qty": 40, "avg_cost": 149.0}] if two else []),
        ],
        "market_prices": {STK: 151.5, FUT: 6010.0, OPT: 11.0, OLD: 180.0},
        "quotes": [{"con_id": STK, "bid": 151.4, "ask": 151.6, "last": 151.5},
                   {"con_id": FUT, "bid": 6009.75, "ask": 6010.25, "last": 6010.0}],
        "executions": [
            {"exec_id": "0000e215.656d0001.01.01", "time": t1, "account": A1, "con_id": STK,
             "side": "BOT", "shares": 100, "price": 150.0, "perm_id": 501, "order_ref": "alpha",
             "commission": {"commission": 1.0}},
            {"exec_id": "0000e215.656d0002.01.01", "time": t2, "account": b, "con_id": STK,
             "side": "BOT", "shares": 40, "price": 149.0, "perm_id": 502,
             "commission": {"commission": 1.25}},
        ],
    }


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(Scenario.from_dict(scenario_data()), faults=Faults(),
                                port=0) as server:
        yield server


@pytest_asyncio.fixture
async def sim1() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(Scenario.from_dict(scenario_data((A1,))), faults=Faults(),
                                port=0) as server:
        yield server


async def connected(server: GatewaySimulator, client_id: int = 11, **kw: Any) -> IBAdapter:
    adapter = IBAdapter(request_timeout=kw.pop("request_timeout", 1.0),
                        commission_grace=kw.pop("commission_grace", 0.5))
    await adapter.connect("127.0.0.1", server.port, client_id, timeout=kw.pop("timeout", 2.0))
    return adapter


# ------------------------------------------------------------------------------ answers
@pytest.mark.asyncio
async def test_snapshot_one_account(sim1: GatewaySimulator) -> None:
    adapter = await connected(sim1)
    try:
        snap = await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
    finally:
        adapter.disconnect()
    assert snap.accounts == (A1,)
    by_key = {(p.account, p.con_id): p for p in snap.positions}
    assert set(by_key) == {(A1, STK), (A1, FUT), (A1, OLD)}
    fut = by_key[(A1, FUT)]
    assert (fut.qty, fut.avg_cost, fut.instrument.multiplier) == (2.0, 6000.0, 50.0)
    assert fut.market_price == 6010.0
    assert by_key[(A1, STK)].market_price == 151.5
    flat = by_key[(A1, OLD)]
    assert flat.qty == 0.0
    assert math.isnan(flat.avg_cost)
    assert snap.account_values[A1]["NetLiquidation"]
    assert len(snap.executions) == 2
    ex = next(e for e in snap.executions if e.fill.exec_id == "0000e215.656d0001.01.01")
    assert ex.fill.strategy == "alpha"
    assert ex.fill.qty == 100.0
    assert ex.commission is not None
    assert ex.commission.commission == 1.0
    other = next(e for e in snap.executions if e is not ex)
    assert other.fill.strategy == UNATTRIBUTED  # no orderRef


@pytest.mark.asyncio
async def test_snapshot_two_accounts_reads_each_portfolio(sim: GatewaySimulator) -> None:
    adapter = await connected(sim)
    try:
        snap = await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
        only_b = await adapter.snapshot(accounts=[A2])
    finally:
        adapter.disconnect()
    assert snap.accounts == (A1, A2)
    by_key = {(p.account, p.con_id): p for p in snap.positions}
    assert {(A2, OPT), (A2, STK), (A1, STK), (A1, FUT), (A1, OLD)} == set(by_key)
    opt = by_key[(A2, OPT)]
    assert (opt.qty, opt.avg_cost, opt.market_price) == (-3.0, 12.5, 11.0)
    # Same conId in two accounts: two rows, joined on (account, conId).
    assert by_key[(A1, STK)].qty == 100.0
    assert by_key[(A2, STK)].qty == 40.0
    assert set(snap.account_values) == {A1, A2}
    assert {e.fill.account for e in snap.executions} == {A1, A2}
    assert all(e.commission is not None for e in snap.executions)
    assert {p.account for p in only_b.positions} == {A2}
    assert only_b.executions == ()


@pytest.mark.asyncio
async def test_unknown_account_is_refused(sim: GatewaySimulator) -> None:
    adapter = await connected(sim)
    try:
        with pytest.raises(InvalidFieldError, match="accounts"):
            await adapter.snapshot(accounts=["DU9"])
    finally:
        adapter.disconnect()


@pytest.mark.asyncio
async def test_executions_since_filters_and_yields_queue_messages(sim: GatewaySimulator) -> None:
    adapter = await connected(sim)
    try:
        recent = await adapter.executions_since(TODAY - timedelta(minutes=20))
        everything = await adapter.executions_since(None)
    finally:
        adapter.disconnect()
    assert [m["fill"].execution.execId for m in recent] == ["0000e215.656d0002.01.01"]
    assert len(everything) == 2
    msg = everything[0]
    assert (msg["type"], msg["strategy"], msg["trade"]) == ("fill", "", None)
    # The cached objects carry the commission (a repeat reqExecutions would not).
    assert all(translate.commission_known(m["fill"]) for m in everything)
    ledger = Ledger()
    for m in everything:
        ledger.apply_fill(translate.fill(m["fill"]))
    assert len(ledger) == 2


@pytest.mark.asyncio
async def test_quotes_and_contract_details(sim: GatewaySimulator) -> None:
    adapter = await connected(sim)
    try:
        prices = await adapter.quotes([FUT, STK])
        inst = await adapter.instrument(OPT)
        with pytest.raises(BrokerRequestError):
            await adapter.quotes([424242])
    finally:
        adapter.disconnect()
    assert prices == {FUT: 6010.0, STK: 151.5}
    assert (inst.symbol, inst.multiplier, inst.strike, inst.right) == ("SPY", 100.0, 600.0, "C")


# ----------------------------------------------------------------- commissions and dupes
@pytest.mark.asyncio
async def test_late_commission_is_waited_for_within_the_grace(sim: GatewaySimulator) -> None:
    sim.faults.commission_mode = "after_end"
    sim.faults.commission_delay = 0.2
    adapter = await connected(sim, commission_grace=2.0)
    try:
        snap = await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
    finally:
        adapter.disconnect()
    assert [e.commission is not None for e in snap.executions] == [True, True]


@pytest.mark.asyncio
async def test_missing_commission_stays_unknown(sim: GatewaySimulator) -> None:
    sim.faults.commission_mode = "never"
    adapter = await connected(sim, commission_grace=0.2)
    try:
        snap = await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
    finally:
        adapter.disconnect()
    assert len(snap.executions) == 2
    assert all(e.commission is None for e in snap.executions)


@pytest.mark.asyncio
async def test_duplicates_collapse_and_corrections_are_separate(sim: GatewaySimulator) -> None:
    from backend.ib.simulator.faults import ExecCorrection

    sim.faults.duplicate_exec_details = True
    sim.faults.exec_corrections = {"0000e215.656d0001.01.01": ExecCorrection(price=150.5)}
    adapter = await connected(sim)
    try:
        snap = await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
    finally:
        adapter.disconnect()
    ids = sorted(e.fill.exec_id for e in snap.executions)
    assert ids == ["0000e215.656d0001.01.01", "0000e215.656d0001.01.02",
                   "0000e215.656d0002.01.01"]
    ledger = Ledger()
    for e in sorted(snap.executions, key=lambda e: e.fill.exec_id):
        ledger.apply_fill(e.fill)
    assert len(ledger) == 2  # the correction replaced its original
    live = ledger.live_fill(A1, "0000e215.656d0001.01.02")
    assert live is not None
    assert live.price == 150.5


# -------------------------------------------------------------------------------- faults
@pytest.mark.asyncio
async def test_client_id_in_use_is_reported_as_such(sim: GatewaySimulator) -> None:
    sim.faults.client_ids_in_use = {13}
    with pytest.raises(ClientIdInUseError) as info:
        await connected(sim, client_id=13, timeout=1.0)
    assert info.value.client_id == 13


@pytest.mark.asyncio
async def test_second_connection_with_a_live_client_id_is_refused(sim: GatewaySimulator) -> None:
    first = await connected(sim, client_id=21)
    try:
        with pytest.raises(ClientIdInUseError):
            await connected(sim, client_id=21, timeout=1.0)
        assert first.is_connected()
        assert len(await first.positions()) == 5  # the first connection is unaffected
    finally:
        first.disconnect()


@pytest.mark.asyncio
async def test_refused_connection_raises_disconnected(sim: GatewaySimulator) -> None:
    port = sim.port
    await sim.stop()
    adapter = IBAdapter()
    with pytest.raises(BrokerDisconnectedError):
        await adapter.connect("127.0.0.1", port, 5, timeout=1.0)


@pytest.mark.asyncio
async def test_no_handshake_reply_times_out(sim: GatewaySimulator) -> None:
    sim.faults.no_handshake_reply = True
    with pytest.raises(BrokerTimeoutError):
        await connected(sim, timeout=0.5)


@pytest.mark.asyncio
async def test_slow_startup_sync_raises_instead_of_returning_partial(
        sim: GatewaySimulator) -> None:
    sim.faults.delay_end = {"positionEnd": 2.0}
    with pytest.raises(BrokerTimeoutError, match="positions"):
        await connected(sim, timeout=0.5)


@pytest.mark.asyncio
@pytest.mark.parametrize("end", ["positionEnd", "accountDownloadEnd", "execDetailsEnd"])
async def test_missing_end_raises_timeout_never_flat(sim: GatewaySimulator, end: str) -> None:
    adapter = await connected(sim, request_timeout=0.4)
    sim.faults.omit_end = {end}
    try:
        with pytest.raises(BrokerTimeoutError):
            await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
    finally:
        adapter.disconnect()


@pytest.mark.asyncio
@pytest.mark.parametrize("request_name", ["reqPositions", "reqAccountUpdates", "reqExecutions"])
async def test_drop_mid_request_raises_disconnected(sim: GatewaySimulator,
                                                    request_name: str) -> None:
    adapter = await connected(sim)
    sim.faults.drop_on_request = request_name
    sim.faults.drop_on_request_after = 1
    try:
        with pytest.raises(BrokerDisconnectedError):
            await adapter.snapshot(executions_since=TODAY - timedelta(hours=2))
        with pytest.raises(BrokerDisconnectedError):  # and stays an error afterwards
            await adapter.positions()
    finally:
        adapter.disconnect()


@pytest.mark.asyncio
async def test_reconnect_after_a_drop_resyncs(sim: GatewaySimulator) -> None:
    adapter = await connected(sim, client_id=31)
    try:
        sim.drop_connections()
        await until(lambda: not adapter.is_connected())
        with pytest.raises(BrokerDisconnectedError):
            await adapter.snapshot()
        # The same adapter reconnects (a fresh clientId: a gateway may keep the old one).
        await adapter.connect("127.0.0.1", sim.port, 32, timeout=2.0)
        with pytest.raises(InvalidFieldError, match="already connected"):
            await adapter.connect("127.0.0.1", sim.port, 33, timeout=2.0)
        snap = await adapter.snapshot()
    finally:
        adapter.disconnect()
    assert len(snap.positions) == 5


@pytest.mark.asyncio
async def test_request_error_raises_instead_of_empty(sim: GatewaySimulator) -> None:
    adapter = await connected(sim)
    sim.faults.request_errors = {"reqExecutions": 322}
    try:
        with pytest.raises(BrokerRequestError) as info:
            await adapter.executions()
    finally:
        adapter.disconnect()
    assert info.value.code == 322


@pytest.mark.asyncio
async def test_request_error_during_the_startup_sync_is_a_request_error(
        sim: GatewaySimulator) -> None:
    sim.faults.request_errors = {"reqExecutions": 322}
    adapter = IBAdapter(request_timeout=1.0)
    with pytest.raises(BrokerRequestError) as info:
        await adapter.connect("127.0.0.1", sim.port, 41, timeout=2.0)
    assert info.value.code == 322
    assert not adapter.is_connected()


@pytest.mark.asyncio
async def test_warning_code_that_never_completes_hits_the_deadline(
        sim: GatewaySimulator) -> None:
    adapter = await connected(sim, request_timeout=0.4)
    sim.faults.request_errors = {"reqExecutions": 321}  # ib_async treats 321 as a warning
    try:
        with pytest.raises(BrokerTimeoutError):
            await asyncio.wait_for(adapter.executions(), 5.0)
    finally:
        adapter.disconnect()


@pytest.mark.asyncio
async def test_calls_before_connect_raise() -> None:
    adapter = IBAdapter()
    with pytest.raises(BrokerDisconnectedError):
        await adapter.snapshot()
    with pytest.raises(InvalidFieldError, match="timeout"):
        await adapter.connect("127.0.0.1", 1, 1, timeout=0)
    with pytest.raises(InvalidFieldError, match="since"):  # naive times are ambiguous
        await adapter.executions(datetime(2026, 11, 20, 9, 30))


@pytest.mark.asyncio
async def test_connectivity_lost_notice_fails_the_snapshot_until_restored(
        sim: GatewaySimulator) -> None:
    sim.faults.notices_on_connect = (1100,)
    adapter = await connected(sim)
    try:
        await until(lambda: not adapter.link_up)
        with pytest.raises(BrokerDisconnectedError, match="1100"):
            await adapter.snapshot()
        sim.send_notice(1102)
        await until(lambda: adapter.link_up)
        snap = await adapter.snapshot()
    finally:
        adapter.disconnect()
    assert len(snap.positions) == 5


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)
