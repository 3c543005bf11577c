"""``portfolio reconcile`` end to end, in-process: the simulator serves from a background thread,
the real ib_async client talks to it over TCP, the store is a real ``lmdb://`` root.

Exit 0 for a clean run; exit 1 with residual rows (qty = broker - sum of strategies) in
``portfolio/<account>`` (a new version per run) and the report in ``reconciliation/<account>``;
``--json`` prints the report; residuals clear once explained; missing quotes are said, not
invented; the writer lease held elsewhere leaves ``portfolio`` alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from backend.ib.simulator import (
    CommissionSpec,
    ExecutionSpec,
    Faults,
    PositionSpec,
    Scenario,
)
from backend.ib.simulator.examples import AAPL, AAPL_C, ES, MSFT, basic_scenario
from backend.storage import open_store
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS, RECONCILIATION

from .conftest import (
    ACCOUNT,
    SCENARIOS,
    CliRun,
    fill_ids,
    metadata,
    read,
    reports,
    residual_rows,
    run_cli,
    simulator,
    versions,
)

BREAKS = Scenario.from_file(SCENARIOS / "breaks.json")


def strategy_sums(uri: str, account: str = ACCOUNT) -> dict[int, float]:
    """Sum over strategies of the journaled qty per con_id (``positions/<strategy>``)."""
    sums: dict[int, float] = {}
    for strategy in versions(uri, POSITIONS):
        frame = read(uri, POSITIONS, strategy)
        frame = frame[frame["account"] == account]
        for con_id, qty in zip(frame["con_id"].tolist(), frame["qty"].tolist(), strict=True):
            sums[int(con_id)] = sums.get(int(con_id), 0.0) + float(qty)
    return sums


def test_clean_run_exits_0_and_records_the_report(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        run = run_cli(uri, gw.port)
    assert run.code == 0, (run.out, run.err)
    assert run.err_lines == []
    assert "clean (exit 0)" in run.out
    # The empty journal was backfilled from the gateway's executions, then compared.
    assert sorted(fill_ids(uri)) == sorted(e.exec_id for e in basic_scenario().executions)
    portfolio = read(uri, PORTFOLIO, ACCOUNT)
    assert residual_rows(portfolio).empty
    assert sorted(zip(portfolio["strategy"], portfolio["con_id"], portfolio["qty"],
                      strict=True)) == [("carry", ES.con_id, 2.0), ("momentum", AAPL.con_id, 100.0)]
    [report] = reports(uri)
    assert report["outcome"] == "clean"
    assert report["breaks"] == []
    assert report["backfill"] == {"fetched": 4, "new": 4, "fed": 4}
    assert report["portfolio_written"] is True
    row = read(uri, RECONCILIATION, ACCOUNT).iloc[-1]
    assert row["outcome"] == "clean"
    assert row["breaks"] == 0
    assert (metadata(uri, RECONCILIATION, ACCOUNT) or {}).get("covered_until")


def test_breaks_exit_1_with_residual_rows_a_version_per_run(uri: str) -> None:
    with simulator(BREAKS) as gw:
        first = run_cli(uri, gw.port)
        after_first = versions(uri)[ACCOUNT]
        second = run_cli(uri, gw.port, "--json")
        after_second = versions(uri)[ACCOUNT]
    assert first.code == 1, (first.out, first.err)
    assert first.err_lines == []
    assert "breaks (exit 1)" in first.out
    for kind in ("QTY_MISMATCH", "BROKER_ONLY", "ARCTIC_ONLY", "AVG_COST_DRIFT"):
        assert kind in first.out

    # Residual rows: qty = broker qty - sum of the strategies' qty, per con_id.
    broker = {p.con_id: p.qty for p in BREAKS.positions}
    sums = strategy_sums(uri)
    assert sums == {AAPL.con_id: 70.0, ES.con_id: 2.0, AAPL_C.con_id: 5.0}  # momentum-meanrev
    residuals = residual_rows(read(uri, PORTFOLIO, ACCOUNT))
    got = dict(zip(residuals["con_id"].tolist(), residuals["qty"].tolist(), strict=True))
    expected = {c: broker.get(c, 0.0) - sums.get(c, 0.0) for c in set(broker) | set(sums)}
    expected = {c: q for c, q in expected.items() if q != 0.0}
    assert got == expected == {AAPL.con_id: 5.0, MSFT.con_id: 20.0, AAPL_C.con_id: -5.0}
    assert set(residuals["source"]) == {"reconciliation"}
    # The option IB no longer holds is marked from a snapshot quote (5.4/5.6 in the scenario).
    option = residuals[residuals["con_id"] == AAPL_C.con_id].iloc[0]
    assert 5.4 <= option["mark_price"] <= 5.6

    # Each run is a new version of portfolio/<account>; as_of gives the history.
    assert second.code == 1
    assert after_second[:-1] == after_first
    assert len(after_second) == len(after_first) + 1
    older = residual_rows(read(uri, PORTFOLIO, ACCOUNT, as_of=after_first[-1]))
    assert sorted(older["qty"].tolist()) == sorted(got.values())

    # The report of each run in reconciliation/<account>; the second printed as JSON.
    rows = read(uri, RECONCILIATION, ACCOUNT)
    assert rows["outcome"].tolist() == ["breaks", "breaks"]
    assert rows["breaks"].tolist() == [4, 4]
    printed: dict[str, Any] = json.loads(second.out)
    assert printed["exit_code"] == 1
    assert printed["outcome"] == "breaks"
    assert printed["portfolio_written"] is True
    assert printed["report_persisted"] is True
    stored = reports(uri)[-1]
    assert printed["run_id"] == rows["run_id"].iloc[-1] == stored["run_id"]
    account_report = printed["accounts"][ACCOUNT]
    assert account_report["break_counts"] == stored["break_counts"] == {
        "ARCTIC_ONLY": 1, "AVG_COST_DRIFT": 1, "BROKER_ONLY": 1, "QTY_MISMATCH": 1}
    # The second run found everything journaled: nothing fed twice.
    assert reports(uri)[0]["backfill"]["fed"] == 4
    assert account_report["backfill"] == {"fetched": 4, "new": 0, "fed": 0}
    assert len(fill_ids(uri)) == 4
    residual_report = {r["con_id"]: r["qty"] for r in account_report["rows"]
                       if r["strategy"] == "_residual"}
    assert residual_report == expected


def test_json_report_of_a_clean_run_is_parseable(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        run = run_cli(uri, gw.port, "--json")
    assert run.code == 0, run.err
    report = json.loads(run.out)  # stdout is exactly the JSON document
    assert report["outcome"] == "clean"
    assert report["error"] == ""
    assert set(report["accounts"]) == {ACCOUNT}
    entry = report["accounts"][ACCOUNT]
    assert entry["clean"] is True
    assert entry["breaks"] == []
    assert {r["con_id"] for r in entry["rows"]} >= {AAPL.con_id, ES.con_id}
    for text in (report["started_at"], report["finished_at"]):
        assert text.endswith("+00:00")


def test_fills_journaled_once_even_with_duplicated_exec_details(uri: str) -> None:
    # The gateway sends every execDetails twice: the ingest keeps one of each.
    with simulator(basic_scenario(), Faults(duplicate_exec_details=True)) as gw:
        run = run_cli(uri, gw.port)
    assert run.code == 0, run.err
    ids = fill_ids(uri)
    assert len(ids) == len(set(ids)) == 4
    assert read(uri, FILLS, ACCOUNT)["commission"].notna().all()


def test_unknown_account_could_not_reconcile(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        run = run_cli(uri, gw.port, account="DU0000000")
    assert run.code == 2
    assert len(run.err_lines) == 1
    assert "DU0000000" in run.err_lines[0]
    assert versions(uri) == {}


def _lease_held_run(uri: str) -> tuple[CliRun, dict[str, dict[str, list[int]]], int]:
    """A clean run, then a run while another writer (standing for a running PortfolioManager)
    holds the root's writer lease. Returns that run, the state before it, the reports count."""
    with simulator(basic_scenario()) as gw:
        assert run_cli(uri, gw.port).code == 0
        before = {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)}
        count = len(reports(uri))
        holder = open_store(uri, writer=True)
        try:
            run = run_cli(uri, gw.port)
        finally:
            holder.close()
    return run, before, count


def test_lease_held_elsewhere_leaves_portfolio_alone_and_says_so(uri: str) -> None:
    run, before, _ = _lease_held_run(uri)
    assert run.code == 0, run.err
    assert "clean (exit 0)" in run.out
    assert any(line.startswith("portfolio reconcile: writer lease held by pid=")
               and "portfolio untouched" in line for line in run.err_lines), run.err
    assert {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)} == before


def test_lease_held_elsewhere_and_gateway_down_one_line(uri: str) -> None:
    with simulator(basic_scenario()) as gw:
        assert run_cli(uri, gw.port).code == 0
        port = gw.port  # stopped below: nothing listens there any more
    before = {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)}
    count = len(reports(uri))
    holder = open_store(uri, writer=True)
    try:
        run = run_cli(uri, port)
    finally:
        holder.close()
    assert run.code == 2
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("portfolio reconcile: could not reconcile: ")
    assert "report not persisted" not in run.err_lines[0]
    # the failed run is still on record (reconciliation/ is the one shared library)
    assert len(reports(uri)) == count + 1
    assert {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)} == before


def test_lease_held_elsewhere_still_records_the_report(uri: str) -> None:
    run, _, count = _lease_held_run(uri)
    assert run.code == 0
    assert len(reports(uri)) == count + 1
    assert "report not persisted" not in run.err


def test_residual_cleared_once_the_missing_fill_is_journaled(uri: str) -> None:
    # IB holds 20 MSFT that no journaled fill explains (the day's executions lack it).
    base = basic_scenario()
    positions = tuple(PositionSpec(p.account, p.con_id, 20.0, 400.0) if p.con_id == MSFT.con_id
                      else p for p in base.positions)
    with simulator(dataclasses.replace(base, positions=positions)) as gw:
        first = run_cli(uri, gw.port)
        residual = residual_rows(read(uri, PORTFOLIO, ACCOUNT))
        # The execution shows up at the gateway (a late correction or a manual order).
        gw.call(lambda sim: sim.add_execution(ExecutionSpec(
            "0000e215.656d0009.01.01", "20261120 16:30:00 UTC", ACCOUNT, MSFT.con_id, "BOT",
            20, 400.0, order_ref="value", commission=CommissionSpec(1.0))))
        second = run_cli(uri, gw.port)
    assert first.code == 1
    assert residual[["con_id", "qty"]].values.tolist() == [[MSFT.con_id, 20.0]]
    assert second.code == 0, second.out
    portfolio = read(uri, PORTFOLIO, ACCOUNT)
    assert residual_rows(portfolio).empty  # the residual row is gone in the new version
    value = portfolio[portfolio["strategy"] == "value"]
    assert value[["con_id", "qty"]].values.tolist() == [[MSFT.con_id, 20.0]]
    assert [r["outcome"] for r in reports(uri)] == ["breaks", "clean"]


def test_commission_missing_at_first_arrives_with_a_later_backfill(uri: str) -> None:
    with simulator(basic_scenario(), Faults(commission_mode="never")) as gw:
        first = run_cli(uri, gw.port)
    assert first.code == 0, first.err
    assert read(uri, FILLS, ACCOUNT)["commission"].isna().all()
    with simulator(basic_scenario()) as gw:  # the gateway sends the reports now
        second = run_cli(uri, gw.port)
    assert second.code == 0, second.err
    assert reports(uri)[-1]["backfill"] == {"fetched": 4, "new": 0, "fed": 4}
    fills = read(uri, FILLS, ACCOUNT)
    assert sorted(fills["exec_id"]) == sorted(e.exec_id for e in basic_scenario().executions)
    assert sorted(fills["commission"].tolist()) == [1.0, 1.0, 1.0, 4.5]


def test_no_quote_for_an_arctic_only_holding_is_said_not_invented(uri: str) -> None:
    # Market data is not subscribed (IB error 354): the option IB no longer holds gets no mark.
    with simulator(BREAKS, Faults(request_errors={"reqMktData": 354})) as gw:
        run = run_cli(uri, gw.port)
    assert run.code == 1, (run.out, run.err)  # breaks, not a failed run: the snapshot is whole
    report = reports(uri)[-1]
    assert "354" in report["quote_error"]
    [option] = [r for r in report["rows"]
                if r["con_id"] == AAPL_C.con_id and r["strategy"] == "_residual"]
    assert option["no_quote"] is True
    assert option["unrealized_pnl"] is None  # NaN in the report: never invented
    residual = residual_rows(read(uri, PORTFOLIO, ACCOUNT))
    row = residual[residual["con_id"] == AAPL_C.con_id].iloc[0]
    assert row["qty"] == -5.0
    assert math.isnan(row["mark_price"])
    assert math.isnan(row["unrealized_pnl"])
