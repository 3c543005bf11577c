"""Scenario loading/validation, wire encoders' field counts, and the example files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ib_async import IB

from backend.errors import InvalidFieldError
from backend.ib.simulator import Scenario, corrected_exec_id
from backend.ib.simulator import protocol as p
from backend.ib.simulator.examples import AAPL, ES, basic_scenario
from backend.ib.simulator.exchange import Exchange
from backend.ib.simulator.scenario import ExecutionSpec, OrderSpec, to_ib_time

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def test_round_trip_through_dict_and_json(tmp_path: Path) -> None:
    scenario = basic_scenario(("DU1", "DU2"))
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario.to_dict()))
    assert Scenario.from_file(path) == scenario


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"accounts": []}, "accounts"),
        ({"contracts": [{"con_id": 1, "symbol": "X"}, {"con_id": 1, "symbol": "Y"}]},
         "contracts[1].con_id"),
        ({"positions": [{"account": "DU1234567", "con_id": 5, "qty": 1}]},
         "positions[0].con_id"),
        ({"contracts": [{"con_id": 1, "symbol": "X", "strike": "abc"}]}, "contracts[0].strike"),
        ({"contracts": [{"con_id": 1, "symbol": "X", "bogus": 1}]}, "contracts[0]"),
        ({"colour": "red"}, "scenario"),
    ],
)
def test_bad_scenarios_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        Scenario.from_dict(data)
    assert info.value.field == field


def test_execution_times() -> None:
    assert to_ib_time("2026-11-20T14:30:01Z") == "20261120 14:30:01 UTC"
    assert to_ib_time("20261120 09:30:01 US/Eastern") == "20261120 09:30:01 US/Eastern"
    with pytest.raises(InvalidFieldError):
        to_ib_time("yesterday")


def test_corrected_exec_id() -> None:
    assert corrected_exec_id("0000e215.656d0000.01.01") == "0000e215.656d0000.01.02"
    with pytest.raises(InvalidFieldError):
        corrected_exec_id("nodots")


def test_encoder_field_counts_at_sv178() -> None:
    order = OrderSpec(1, 2, 3, "DU1", AAPL.con_id, "BUY", 10, "LMT", 100.0)
    e = ExecutionSpec("a.b.01.01", "20261120 14:30:01 UTC", "DU1", AAPL.con_id, "BOT", 1, 1.0)
    assert len(p.open_order(order, AAPL)) == 135
    assert len(p.open_order(order, AAPL, sv=176)) == 136  # + faProfile, as real captures
    assert len(p.completed_order(order, AAPL)) == 96
    assert len(p.exec_details(-1, e, AAPL)) == 32  # incl. pendingPriceRevision
    assert len(p.exec_details(-1, e, AAPL, 177)) == 31
    assert len(p.position("DU1", ES, 1, 1.0)) == 16
    assert len(p.order_status(order)) == 12
    assert len(p.error(-1, 2104, "ok")) == 6
    assert p.frame(["9", "1", "5"]) == b"\x00\x00\x00\x069\x001\x005\x00"


def test_exchange_average_cost_and_realized_pnl() -> None:
    ex = Exchange(basic_scenario())
    ex.set_quote(ES.con_id, bid=5020.0, ask=5020.25, last=5020.0)
    # sell 3 of a 2-lot long at 5020: closes 2 (+20 x 50 each), opens a 1-lot short
    events = ex.place(OrderSpec(500, 0, 1, "DU1234567", ES.con_id, "SELL", 3, "MKT"))
    pos = ex.positions[("DU1234567", ES.con_id)]
    assert (pos.qty, pos.avg_cost, pos.realized_pnl) == (-1, 5020.0 * 50, 2 * 20 * 50)
    fill = ex.executions[-1]
    assert fill.commission is not None
    assert fill.commission.realized_pnl == pytest.approx(2000 - 3 * 2.25)
    assert events  # acknowledgements, the fill, position changes


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["two_accounts.yaml", "one_account.json"])
async def test_example_files_serve_the_client(name: str, sim_factory: Any, ib_factory: Any) -> None:
    scenario = Scenario.from_file(EXAMPLES / name)
    sim = await sim_factory(scenario)
    ib: IB = await ib_factory.connect(sim, client_id=1, timeout=3)
    assert ib.managedAccounts() == list(scenario.accounts)
    assert len(await ib.reqPositionsAsync()) == len(scenario.positions)
