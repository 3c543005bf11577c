"""Shared pieces of the end-to-end reconciliation tests (simulator + real ib_async + lmdb).

Uses the simulator's pytest plugin (``backend/ib/simulator/pytest_plugin.py``, loaded by ``-p``
in pyproject.toml): ``sim_factory``, and ``ib_decoder_guard``, on for every test here (fails a
test on any ib_async "Error handling fields" record).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.cli import main as cli_main
from backend.ib.simulator import Faults, Scenario, SimulatorThread
from backend.ib.simulator.pytest_plugin import SimFactory
from backend.storage import open_store
from backend.storage.schema import FILLS, LIBRARIES, PORTFOLIO, POSITIONS, RECONCILIATION, SCHEMAS


@pytest.fixture(autouse=True)
def _decoder_guard_on(ib_decoder_guard: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return ib_decoder_guard


__all__ = ["SimFactory"]  # re-exported for the test modules' annotations

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
ACCOUNT = "DU1234567"
CLIENT_ID = 17


@pytest.fixture(scope="session")
def empty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An lmdb root whose libraries exist: made once, copied per test. (On a brand-new root
    ArcticDB's first ``list_symbols`` of each library takes about a second; a
    PortfolioManager opening a new root pays that for five libraries.)"""
    root = tmp_path_factory.mktemp("template") / "arctic"
    store = open_store(f"lmdb://{root}", writer=True)
    try:
        for library in LIBRARIES:
            store.list_symbols(library)
    finally:
        store.close()
    return root


@pytest.fixture
def uri(tmp_path: Path, empty_root: Path) -> str:
    """A real lmdb:// store of this test (its libraries already created)."""
    return copy_store(empty_root, tmp_path / "arctic")


# ------------------------------------------------------------------ store reads (no lease)

def versions(uri: str, library: str = PORTFOLIO) -> dict[str, list[int]]:
    """Every symbol of ``library`` -> its versions (a reader: takes no lease)."""
    store = open_store(uri, writer=False)
    try:
        return {s: sorted(store.list_versions(library, s)) for s in store.list_symbols(library)}
    finally:
        store.close()


def read(uri: str, library: str, symbol: str, as_of: int | None = None) -> pd.DataFrame:
    store = open_store(uri, writer=False)
    try:
        if as_of is None:
            return store.read(library, symbol)
        return store.read(library, symbol, as_of=as_of)
    finally:
        store.close()


def metadata(uri: str, library: str, symbol: str) -> Mapping[str, Any] | None:
    store = open_store(uri, writer=False)
    try:
        return store.read_metadata(library, symbol)
    finally:
        store.close()


def reports(uri: str, account: str = ACCOUNT) -> list[dict[str, Any]]:
    """The report rows of ``reconciliation/<account>``, oldest first, JSON decoded."""
    frame = read(uri, RECONCILIATION, account)
    return [json.loads(text) for text in frame["report"].tolist()]


def fill_ids(uri: str, account: str = ACCOUNT) -> list[str]:
    if account not in versions(uri, FILLS):
        return []
    return [str(e) for e in read(uri, FILLS, account)["exec_id"].tolist()]


# ------------------------------------------------------------------ the CLI in-process

@dataclass(frozen=True)
class CliRun:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(uri: str, port: int, *extra: str, account: str | None = ACCOUNT,
            timeout: float = 2.0) -> CliRun:
    """``portfolio reconcile ...`` in this process (the simulator must run in another thread:
    the command runs its own event loop)."""
    argv = ["reconcile", "--arctic", uri, "--host", "127.0.0.1", "--port", str(port),
            "--client-id", str(CLIENT_ID), "--timeout", str(timeout)]
    if account is not None:
        argv += ["--account", account]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([*argv, *extra])
    return CliRun(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def simulator(scenario: Scenario, faults: Faults | None = None) -> Iterator[SimulatorThread]:
    with SimulatorThread(scenario, faults=faults) as handle:
        yield handle


def copy_store(template: Path, dest: Path) -> str:
    """A copy of a prepared lmdb root (store and the PortfolioManager's journal)."""
    shutil.copytree(template, dest)
    return f"lmdb://{dest}"


def residual_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["strategy"] == "_residual"]


def con_ids(rows: Sequence[dict[str, Any]]) -> set[int]:
    return {int(r["con_id"]) for r in rows}


def positions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``positions`` rows in the stored schema: each row's keys over plain defaults."""
    base = {"symbol": "AAPL", "sec_type": "STK", "currency": "USD", "multiplier": 1.0,
            "realized_pnl": 0.0, "commissions": 0.0, "commission_currency": "USD",
            "commissions_pending": 0, "unrealized_pnl": math.nan, "mark_price": math.nan,
            "fill_count": 1, "last_updated": pd.Timestamp("2026-11-20 15:00"),
            "last_exec_id": "x.01", "open_price_min": math.nan, "open_price_max": math.nan,
            "watermark": 1}
    frame = pd.DataFrame([{**base, **r} for r in rows], columns=list(SCHEMAS[POSITIONS]))
    return frame.astype(SCHEMAS[POSITIONS])
