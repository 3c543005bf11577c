"""Each fault knob produces the client-side outcome described in the wire-protocol reference."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ib_async import IB, Contract, ExecutionFilter, MarketOrder
from ib_async.wrapper import RequestError

from backend.ib.simulator import ExecCorrection, Faults, GatewaySimulator

pytestmark = pytest.mark.asyncio

ALL_EXEC_IDS = [f"0000e215.656d000{i}.01.01" for i in range(1, 5)]


def error_codes(ib: IB) -> list[int]:
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    return codes


async def until(predicate: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110  (client state has no event to await)
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------ connections


async def test_refused_then_reopened(sim_factory: Any, ib_factory: Any) -> None:
    sim = await sim_factory(faults=Faults(refuse_connections=True))
    with pytest.raises(ConnectionRefusedError):
        await ib_factory.connect(sim, timeout=1)
    await sim.set_refusing(False)
    ib = await ib_factory.connect(sim, client_id=2, timeout=2)
    assert ib.isConnected()


async def test_client_id_in_use_knob_gives_326_then_timeout(
    sim: GatewaySimulator, ib_factory: Any
) -> None:
    sim.faults.client_ids_in_use = {7}
    ib = ib_factory.new()
    codes = error_codes(ib)
    with pytest.raises(TimeoutError):
        await ib.connectAsync("127.0.0.1", sim.port, clientId=7, timeout=0.5)
    assert codes == [326]
    assert not ib.isConnected()


async def test_duplicate_client_id_rejected_first_unaffected(
    sim: GatewaySimulator, ib: IB, ib_factory: Any
) -> None:
    second = ib_factory.new()
    codes = error_codes(second)
    with pytest.raises(TimeoutError):
        await second.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=0.5)
    assert codes == [326]
    assert ib.isConnected()
    assert len(await ib.reqPositionsAsync()) == 3


async def test_no_handshake_reply_times_out(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.no_handshake_reply = True
    with pytest.raises(TimeoutError):
        await ib_factory.connect(sim, timeout=0.3)


async def test_slow_start_api_times_out(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.start_api_delay = 1.0
    with pytest.raises(TimeoutError):
        await ib_factory.connect(sim, timeout=0.3)


@pytest.mark.parametrize("mode", ["fin", "rst"])
async def test_drop_during_connect_sync(
    sim: GatewaySimulator, ib_factory: Any, mode: str
) -> None:
    # handshake reply, managedAccounts, nextValidId, position 1, position 2 -> drop
    sim.faults.drop_after_messages = 5
    sim.faults.drop_mode = mode  # type: ignore[assignment]
    ib = ib_factory.new()
    dropped: list[bool] = []
    ib.disconnectedEvent += lambda: dropped.append(True)
    with pytest.raises(ConnectionError):
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=2)
    assert dropped == [True]


async def test_drop_mid_request_wipes_client_state(sim: GatewaySimulator, ib: IB) -> None:
    assert ib.positions()
    sim.faults.drop_on_request = "reqExecutions"
    sim.faults.drop_on_request_after = 2
    with pytest.raises(ConnectionError, match="Socket disconnect"):
        await asyncio.wait_for(ib.reqExecutionsAsync(), 2)
    assert not ib.isConnected()
    assert ib.positions() == []


# ------------------------------------------------------------------ End messages


async def test_delayed_position_end(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.delay_end = {"positionEnd": 2.0}
    with pytest.raises(ConnectionError, match="positions request timed out"):
        await ib_factory.connect(sim, timeout=0.6, raiseSyncErrors=True)
    ib = await ib_factory.connect(sim, client_id=2, timeout=0.6, raiseSyncErrors=False)
    assert ib.isConnected()  # default: logs and returns with what it has


@pytest.mark.parametrize(
    ("end", "request_name"),
    [
        ("positionEnd", "positions"),
        ("openOrderEnd", "open orders"),
        ("completedOrdersEnd", "completed orders"),
        ("accountDownloadEnd", "account updates"),
        ("accountUpdateMultiEnd", "account updates for"),
        ("execDetailsEnd", "executions"),
    ],
)
async def test_missing_end_fails_strict_connect(
    sim: GatewaySimulator, ib_factory: Any, end: str, request_name: str
) -> None:
    sim.faults.omit_end = {end}
    with pytest.raises(ConnectionError, match=f"{request_name}.*timed out"):
        await ib_factory.connect(sim, timeout=0.6, raiseSyncErrors=True)


async def test_missing_contract_details_end_hangs_the_request(
    ib: IB, sim: GatewaySimulator
) -> None:
    sim.faults.omit_end = {"contractDetailsEnd", "tickSnapshotEnd"}

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqContractDetailsAsync(Contract(conId=265598)), 0.3)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqTickersAsync(Contract(conId=265598)), 0.3)


# ------------------------------------------------------------------ executions


async def test_duplicate_exec_details(sim: GatewaySimulator, ib: IB) -> None:
    sim.faults.duplicate_exec_details = True
    fills = await ib.reqExecutionsAsync()
    assert sorted(f.execution.execId for f in fills) == sorted(ALL_EXEC_IDS * 2)
    assert sorted(f.execution.execId for f in ib.fills()) == ALL_EXEC_IDS


async def test_exec_correction(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.exec_corrections = {ALL_EXEC_IDS[0]: ExecCorrection(shares=90, price=150.5)}
    ib = await ib_factory.connect(sim)
    fills = await ib.reqExecutionsAsync(ExecutionFilter(symbol="AAPL"))
    got = {f.execution.execId: (f.execution.shares, f.execution.price) for f in fills}
    assert got == {
        "0000e215.656d0001.01.01": (100.0, 150.25),
        "0000e215.656d0001.01.02": (90.0, 150.5),
    }
    cached = {f.execution.execId for f in ib.fills()}
    assert {"0000e215.656d0001.01.01", "0000e215.656d0001.01.02"} <= cached


async def test_live_correction_helper(sim: GatewaySimulator, ib: IB) -> None:
    fixed = sim.correct_execution(ALL_EXEC_IDS[1], price=5001.0)
    assert fixed.exec_id == "0000e215.656d0002.01.02"
    await until(lambda: fixed.exec_id in {f.execution.execId for f in ib.fills()})


async def test_commission_after_end_patched_in_place(
    sim: GatewaySimulator, ib_factory: Any
) -> None:
    sim.faults.commission_mode = "after_end"
    sim.faults.commission_delay = 0.1
    ib = await ib_factory.connect(sim, timeout=2)
    fills = await ib.reqExecutionsAsync()
    assert len(fills) == 4
    cached = {f.execution.execId: f for f in ib.fills()}
    await until(lambda: all(f.commissionReport.commission > 0 for f in cached.values()))
    assert cached[ALL_EXEC_IDS[1]].commissionReport.commission == 4.5


@pytest.mark.parametrize("mode", ["never", "before_exec"])
async def test_commission_never_or_too_early_stays_empty(
    sim: GatewaySimulator, ib_factory: Any, mode: str
) -> None:
    sim.faults.commission_mode = mode  # type: ignore[assignment]
    ib = await ib_factory.connect(sim, timeout=2)
    assert len(ib.fills()) == 4
    assert {f.commissionReport.commission for f in ib.fills()} == {0.0}


async def test_live_fill_commission_after_delay(sim: GatewaySimulator, ib: IB) -> None:
    sim.faults.commission_mode = "after_end"
    sim.faults.commission_delay = 0.2
    e = sim.push_live_fill(265598, "BOT", 10, 151.0)
    await until(lambda: e.exec_id in {f.execution.execId for f in ib.fills()})
    fill = next(f for f in ib.fills() if f.execution.execId == e.exec_id)
    assert fill.commissionReport.commission == 0.0
    await until(lambda: fill.commissionReport.commission == 1.0)


# ------------------------------------------------------------------ request errors, notices


async def test_request_error_322(sim: GatewaySimulator, ib: IB) -> None:
    sim.faults.request_errors = {"reqExecutions": 322}
    with pytest.raises(RequestError) as info:
        await asyncio.wait_for(ib.reqExecutionsAsync(), 2)
    assert info.value.code == 322
    ib.RaiseRequestErrors = False
    assert await asyncio.wait_for(ib.reqExecutionsAsync(), 2) == []


async def test_request_error_321_never_completes(sim: GatewaySimulator, ib: IB) -> None:
    sim.faults.request_errors = {"reqExecutions": 321}  # a "warning" for ib_async
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ib.reqExecutionsAsync(), 0.3)


async def test_connectivity_notices(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.notices_on_connect = (2104, 1100)
    ib = ib_factory.new()
    codes = error_codes(ib)
    await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=2)
    await until(lambda: 1100 in codes)
    sim.send_notice(1102)
    await until(lambda: 1102 in codes)
    assert codes == [2104, 1100, 1102]
    assert ib.isConnected()


async def test_faults_reject_unknown_names() -> None:
    from backend.errors import InvalidFieldError

    with pytest.raises(InvalidFieldError, match="positonEnd"):
        Faults(omit_end={"positonEnd"})
    with pytest.raises(InvalidFieldError, match="request_errors"):
        Faults.from_dict({"request_errors": {"reqExecution": 322}})
    assert Faults.from_dict({"client_ids_in_use": [3], "omit_end": ["positionEnd"]}).omit_end == {
        "positionEnd"
    }


async def test_refuse_flag_set_at_runtime_resets_new_connections(
    sim: GatewaySimulator, ib_factory: Any
) -> None:
    sim.faults.refuse_connections = True  # listener still open: accepted, then reset
    with pytest.raises((TimeoutError, ConnectionError)):
        await ib_factory.connect(sim, timeout=0.3)
    assert sim.connected_client_ids == []


async def test_drop_then_reconnect_same_ib_resyncs(sim: GatewaySimulator, ib: IB) -> None:
    dropped: list[bool] = []
    ib.disconnectedEvent += lambda: dropped.append(True)
    sim.drop_connections("rst")
    await until(lambda: dropped == [True])
    assert ib.positions() == []
    # a gateway that keeps the id after a crash: the same id is refused ...
    sim.faults.client_ids_in_use = {1}
    with pytest.raises(TimeoutError):
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=0.3)
    # ... a new id on the same IB object reconnects and re-syncs
    await ib.connectAsync("127.0.0.1", sim.port, clientId=2, timeout=2)
    assert len(ib.positions()) == 2


async def test_restart_on_same_port_keeps_state(sim: GatewaySimulator, ib_factory: Any) -> None:
    ib = await ib_factory.connect(sim)
    ib.placeOrder(Contract(conId=265598, exchange="SMART"), MarketOrder("SELL", 100))
    await sim.wait_until(lambda: sim.exchange.positions[("DU1234567", 265598)].qty == 0)
    port = sim.port
    await sim.stop()
    await until(lambda: not ib.isConnected())
    await sim.start()
    assert sim.port == port
    again = await ib_factory.connect(sim, client_id=2)
    rows = {p.contract.conId: p.position for p in await again.reqPositionsAsync()}
    assert rows[265598] == 0.0


async def test_messages_split_across_tcp_reads(sim: GatewaySimulator, ib_factory: Any) -> None:
    sim.faults.split_writes = 7
    ib = ib_factory.new()
    reads: list[int] = []
    ib.client.conn.hasData += lambda data: reads.append(len(data))
    await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=5)
    assert len(ib.fills()) == 4
    assert len(ib.portfolio()) == 2
    # more TCP reads than messages: frames arrived cut into pieces
    assert len(reads) > ib.client.connectionStats().numMsgRecv >= 20
