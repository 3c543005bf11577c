"""The simulator's pytest plugin as a user's project loads it: a fresh directory with its own
pytest configuration, a root conftest naming the plugin, and a strategy test using ``sim`` and
``ib`` (the real ib_async client over TCP). Run by pytest in a child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_TEST = '''
import pytest
from ib_async import MarketOrder, Stock

from backend.ib.simulator.examples import AAPL


@pytest.mark.asyncio
async def test_positions_and_an_order(ib, sim, ib_decoder_guard):
    assert ib.managedAccounts() == ["DU1234567"]
    held = {p.contract.conId: p.position for p in await ib.reqPositionsAsync()}
    assert held[AAPL.con_id] == 100
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
    while not trade.isDone():
        await trade.statusEvent
    assert trade.orderStatus.status == "Filled"
    assert sum(f.execution.shares for f in trade.fills) == 5


@pytest.mark.asyncio
async def test_two_accounts_and_a_factory(sim2, sim_factory, ib_factory):
    other = await sim_factory()
    first = await ib_factory.connect(sim2, client_id=3)
    second = await ib_factory.connect(other, client_id=3)  # another gateway, same clientId
    assert sorted(first.managedAccounts()) == ["DU1111111", "DU2222222"]
    assert second.managedAccounts() == ["DU1234567"]
'''


def test_a_user_project_loads_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["backend.ib.simulator.pytest_plugin"]\n')
    (tmp_path / "test_strategy.py").write_text(USER_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
