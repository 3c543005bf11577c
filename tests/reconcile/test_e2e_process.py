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
