"""Every way a run cannot reconcile exits 2, says so in ONE line on stderr, and writes nothing
to ``portfolio`` (nor ``positions``/``fills``): only a ``failed`` report row.

Each case starts from a store a clean run left behind, so "nothing written" is a comparison of
versions before and after. Connect-phase faults use the one-account example (ib_async's startup
sync asks for positions, account updates and executions); snapshot-phase faults use the
two-account example, where the startup asks no ``reqAccountUpdates``, so a fault on it strikes
in the middle of the job's own snapshot (after the positions arrived).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.ib.simulator import Faults, Scenario
from backend.ib.simulator.examples import basic_scenario
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS, RECONCILIATION

from .conftest import ACCOUNT, copy_store, metadata, read, reports, run_cli, simulator, versions

TWO = ("DU1111111", "DU2222222")
PREFIX = "portfolio reconcile: could not reconcile: "


@dataclass(frozen=True)
class Case:
    faults: Faults
    says: str  # expected in the stderr line
    two_accounts: bool = False


CASES = {
    "refused": Case(Faults(refuse_connections=True), "ConnectionRefused"),
    "client_id_in_use_326": Case(Faults(client_ids_in_use={17}), "326"),
    "no_handshake_reply": Case(Faults(no_handshake_reply=True), "BrokerTimeoutError"),
    "drop_during_startup_executions": Case(
        Faults(drop_on_request="reqExecutions", drop_on_request_after=2),
        "BrokerDisconnectedError"),
    "missing_positionEnd": Case(Faults(omit_end={"positionEnd"}), "positions"),
    "missing_execDetailsEnd": Case(Faults(omit_end={"execDetailsEnd"}), "executions"),
    "request_error_positions_321": Case(Faults(request_errors={"reqPositions": 321}),
                                        "BrokerTimeoutError"),
    "request_error_executions_322": Case(Faults(request_errors={"reqExecutions": 322}),
                                         "BrokerRequestError"),
    "drop_mid_snapshot": Case(
        Faults(drop_on_request="reqAccountUpdates", drop_on_request_after=2),
        "BrokerDisconnectedError", two_accounts=True),
    "missing_accountDownloadEnd_in_snapshot": Case(
        Faults(omit_end={"accountDownloadEnd"}), "BrokerTimeoutError", two_accounts=True),
}


def _scenario(two: bool) -> Scenario:
    return basic_scenario(TWO) if two else basic_scenario()


def _prepare(empty_root: Path, dest: Path, two: bool) -> Path:
    uri = copy_store(empty_root, dest)
    with simulator(_scenario(two)) as gw:
        run = run_cli(uri, gw.port, account=None)
    assert run.code == 0, (run.out, run.err)
    return dest


@pytest.fixture(scope="module")
def clean_roots(empty_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """Stores a clean run left behind: one account (False) and two accounts (True)."""
    base = tmp_path_factory.mktemp("clean")
    return {two: _prepare(empty_root, base / f"accounts{2 if two else 1}", two)
            for two in (False, True)}


def _state(uri: str) -> dict[str, dict[str, list[int]]]:
    return {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)}


@pytest.mark.parametrize("name", list(CASES))
def test_fault_exits_2_one_line_nothing_written(name: str, clean_roots: dict[bool, Path],
                                                tmp_path: Path) -> None:
    case = CASES[name]
    uri = copy_store(clean_roots[case.two_accounts], tmp_path / "arctic")
    accounts = TWO if case.two_accounts else (ACCOUNT,)
    before = _state(uri)
    assert all(before[PORTFOLIO].get(a) for a in accounts)  # a clean run wrote them
    marks = {a: metadata(uri, RECONCILIATION, a) for a in accounts}
    reports_before = {a: len(reports(uri, a)) for a in accounts}

    with simulator(_scenario(case.two_accounts), case.faults) as gw:
        # One account named on the command line; two accounts: every managed one.
        # With two accounts the report is asked as JSON: still parseable when the run failed.
        extra = ("--json",) if case.two_accounts else ()
        run = run_cli(uri, gw.port, *extra, account=None if case.two_accounts else ACCOUNT,
                      timeout=1.0)

    assert run.code == 2, (run.out, run.err)
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith(PREFIX), run.err
    assert case.says in run.err_lines[0], run.err
    if case.two_accounts:
        printed = json.loads(run.out)
        assert (printed["outcome"], printed["exit_code"]) == ("failed", 2)
        assert set(printed["accounts"]) == set(TWO)
        assert printed["error"] in run.err_lines[0]
    else:
        assert "failed (exit 2)" in run.out
    assert _state(uri) == before  # nothing reached portfolio, positions or fills
    for a in accounts:
        rows = reports(uri, a)
        assert len(rows) == reports_before[a] + 1
        assert rows[-1]["outcome"] == "failed"
        assert rows[-1]["error"] in run.err_lines[0]
        assert read(uri, RECONCILIATION, a)["outcome"].iloc[-1] == "failed"
        assert metadata(uri, RECONCILIATION, a) == marks[a]  # the watermark did not move
