"""The real ib_async client against the simulator: connect and the startup sync."""

from __future__ import annotations

from typing import Any

import pytest
from ib_async import IB

from backend.ib.simulator import GatewaySimulator

pytestmark = pytest.mark.asyncio


async def test_connect_one_account_syncs_everything(sim: GatewaySimulator, ib: IB) -> None:
    assert ib.isConnected()
    assert ib.client.serverVersion() == 178
    assert ib.managedAccounts() == ["DU1234567"]
    # positions() drops zero rows; the scenario has AAPL 100, ES 2 and a flat MSFT row
    held = {(p.account, p.contract.conId): p.position for p in ib.positions()}
    assert held == {("DU1234567", 265598): 100.0, ("DU1234567", 495512563): 2.0}
    # one managed account: connect subscribes account updates -> portfolio with marks
    port = {i.contract.conId: i for i in ib.portfolio()}
    assert port[265598].marketPrice == pytest.approx(151.01)
    assert port[265598].averageCost == pytest.approx(150.25)
    assert port[495512563].marketValue == pytest.approx(2 * 5010.0 * 50)
    assert port[495512563].unrealizedPNL == pytest.approx(2 * 10.0 * 50)
    values = {(v.tag, v.currency): v.value for v in ib.accountValues() if v.account}
    assert values[("NetLiquidation", "USD")] == "1250000.50"
    fills = ib.fills()
    assert len(fills) == 4
    assert {f.commissionReport.commission for f in fills} == {1.0, 4.5}
    assert all(f.commissionReport.execId == f.execution.execId for f in fills)
    # startup requests in ib_async's order: startApi, positions, open/completed orders,
    # account updates, account updates multi, executions
    ids = [m[0] for m in sim.received]
    assert ids == ["71", "61", "5", "99", "6", "76", "7"]


async def test_connect_two_accounts(sim2: GatewaySimulator, ib_factory: Any) -> None:
    ib = await ib_factory.connect(sim2, client_id=7)
    assert ib.managedAccounts() == ["DU1111111", "DU2222222"]
    held = {(p.account, p.contract.conId): p.position for p in ib.positions()}
    assert held[("DU2222222", 712345678)] == -3.0
    assert held[("DU1111111", 265598)] == 100.0
    # two accounts: no reqAccountUpdates at connect, so no portfolio yet ...
    assert ib.portfolio() == []
    # ... but account values for both via reqAccountUpdatesMulti
    nlv = {v.account for v in ib.accountValues() if v.tag == "NetLiquidation"}
    assert nlv == {"DU1111111", "DU2222222"}
    assert [m[0] for m in sim2.received] == ["71", "61", "5", "99", "76", "76", "7"]
    assert len(ib.fills()) == 5
    assert sim2.connected_client_ids == [7]
