"""``portfolio reconcile`` as a real process against ``portfolio gateway`` in another process:
the exit codes and stderr a cron job sees."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS

from .conftest import ACCOUNT, CLIENT_ID, SCENARIOS, read, reports, residual_rows, versions

BIN = Path(sys.executable).parent
BANNER = re.compile(r"on 127\.0\.0\.1:(\d+)")


def portfolio(*args: str) -> list[str]:
    """The installed ``portfolio`` console script (the package is installed editable)."""
    script = BIN / "portfolio"
    assert script.exists(), f"{script}: the project's console script is not installed"
    return [str(script), *args]


@contextmanager
def gateway(*args: str) -> Iterator[int]:
    """``portfolio gateway --port 0 ...`` in its own process; yields the port it bound."""
    proc = subprocess.Popen(portfolio("gateway", "--port", "0", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()  # printed (flushed) once it listens
        match = BANNER.search(banner)
        assert match, f"gateway did not start: {banner!r} (exit {proc.poll()})"
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def reconcile(uri: str, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    argv: Sequence[str] = portfolio(
        "reconcile", "--arctic", uri, "--host", "127.0.0.1", "--port", str(port),
        "--client-id", str(CLIENT_ID), "--account", ACCOUNT, "--timeout", "2", *extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_cron_job_exit_codes_and_stderr(uri: str) -> None:
    # Breaks: exit 1, the summary on stdout, nothing on stderr, residual rows written.
    with gateway("--scenario", str(SCENARIOS / "breaks.json")) as port:
        breaks = reconcile(uri, port)
        as_json = reconcile(uri, port, "--json")
    assert breaks.returncode == 1, (breaks.stdout, breaks.stderr)
    assert breaks.stderr == ""
    assert "breaks (exit 1)" in breaks.stdout
    assert "QTY_MISMATCH AAPL: IB holds 75, strategies 70" in breaks.stdout
    residuals = residual_rows(read(uri, PORTFOLIO, ACCOUNT))
    assert sorted(residuals["qty"].tolist()) == [-5.0, 5.0, 20.0]
    assert as_json.returncode == 1
    assert as_json.stderr == ""
    printed = json.loads(as_json.stdout)
    assert printed["outcome"] == "breaks"
    assert printed["run_id"] == reports(uri)[-1]["run_id"]

    # The clientId is taken at the gateway (error 326): exit 2, one line, portfolio untouched.
    before = {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)}
    faults = SCENARIOS / "client_id_in_use.faults.json"
    with gateway("--scenario", str(SCENARIOS / "breaks.json"), "--faults", str(faults)) as port:
        refused = reconcile(uri, port)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("portfolio reconcile: could not reconcile: ClientIdInUseError")
    assert "326" in lines[0]
    assert {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)} == before
    assert reports(uri)[-1]["outcome"] == "failed"

    # Nothing listens: exit 2, one line.
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gone = reconcile(uri, closed)
    assert gone.returncode == 2
    assert len(gone.stderr.splitlines()) == 1, gone.stderr
    assert "could not reconcile" in gone.stderr
    assert {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)} == before


def test_clean_run_of_an_all_flat_account_keeps_stderr_empty(uri: str) -> None:
    # Every strategy is flat (MSFT bought and sold): the consolidated view is an empty frame,
    # which ArcticDB warns about on stderr unless the job quiets it.
    with gateway("--scenario", str(SCENARIOS / "all_flat.json")) as port:
        first = reconcile(uri, port)
        second = reconcile(uri, port)
    for run in (first, second):
        assert run.returncode == 0, (run.stdout, run.stderr)
        assert run.stderr == ""
        assert "clean (exit 0)" in run.stdout
    assert read(uri, PORTFOLIO, ACCOUNT).empty
    assert [r["outcome"] for r in reports(uri)] == ["clean", "clean"]


# A running PortfolioManager in its own process: it holds the root's writer lease, and books
# one more AAPL fill (execId of its own) when told to on stdin.
MANAGER = """
import asyncio, json, sys
from backend.core.portfolio_manager import PortfolioManager

async def main(uri: str, message: dict) -> None:
    async with PortfolioManager(uri) as pm:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        await pm.process_message(message)
        await pm.flush()
        print("flushed", flush=True)

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""
EXTRA_FILL = {
    "type": "fill", "strategy": "momentum", "trade": None,
    "fill": {"contract": {"conId": 265598, "symbol": "AAPL", "secType": "STK",
                          "currency": "USD", "multiplier": "", "exchange": "SMART"},
             "execution": {"execId": "0000e215.656d00aa.01.01",
                           "time": "2026-11-20T17:00:00+00:00", "acctNumber": ACCOUNT,
                           "side": "BOT", "shares": 10, "price": 151.0, "exchange": "ISLAND",
                           "orderId": 31, "permId": 900000031, "orderRef": "momentum"},
             "commissionReport": {"execId": "0000e215.656d00aa.01.01", "commission": 1.0,
                                  "currency": "USD", "realizedPNL": 0.0}}}


def test_cron_job_beside_a_running_portfolio_manager(uri: str) -> None:
    """The job while a PortfolioManager process holds the writer lease: it names the holder on
    stderr, leaves ``portfolio``/``positions``/``fills`` to the manager and appends only its
    report; the manager's own writes afterwards land, and the next run sees them."""
    with gateway() as port:
        assert reconcile(uri, port).returncode == 0  # backfills the scenario's day
        before = {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)}
        manager = subprocess.Popen([sys.executable, "-c", MANAGER, uri, json.dumps(EXTRA_FILL)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            assert manager.stdout is not None
            assert manager.stdin is not None
            assert manager.stdout.readline().strip() == "ready", manager.poll()
            beside = reconcile(uri, port)
            assert {lib: versions(uri, lib) for lib in (PORTFOLIO, POSITIONS, FILLS)} == before
            manager.stdin.write("go\n")
            manager.stdin.flush()
            assert manager.stdout.readline().strip() == "flushed"
            manager.stdin.close()
            assert manager.wait(30) == 0
        finally:
            if manager.poll() is None:
                manager.kill()
                manager.wait(10)
            for stream in (manager.stdout, manager.stderr):
                if stream is not None:
                    stream.close()
        after = reconcile(uri, port)  # the lease is free again: the job writes portfolio
    assert beside.returncode == 0, (beside.stdout, beside.stderr)
    lease, = (line for line in beside.stderr.splitlines() if "writer lease" in line)
    assert lease.startswith(f"portfolio reconcile: writer lease held by pid={manager.pid} ")
    assert lease.endswith("portfolio untouched")
    assert "no backfill: the journal's writer (a running PortfolioManager)" in beside.stderr
    runs = reports(uri)
    assert [r["outcome"] for r in runs] == ["clean", "clean", "breaks"]
    assert runs[1]["portfolio_written"] is False
    # The manager's fill is journaled: strategies now hold 110 AAPL where IB holds 100.
    assert after.returncode == 1, (after.stdout, after.stderr)
    assert "QTY_MISMATCH AAPL: IB holds 100, strategies 110" in after.stdout
    residuals = residual_rows(read(uri, PORTFOLIO, ACCOUNT))
    assert residuals["qty"].tolist() == [-10.0]
