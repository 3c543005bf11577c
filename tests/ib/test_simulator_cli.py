"""``portfolio gateway`` as a real process: serve the real client, stop on SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from backend.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "scenarios"


def test_gateway_is_registered() -> None:
    args = build_parser().parse_args(["gateway", "--port", "4010", "--scenario", "x.yaml"])
    assert (args.port, args.host, args.scenario) == (4010, "127.0.0.1", Path("x.yaml"))


@pytest.mark.asyncio
async def test_gateway_process_serves_and_stops(ib_factory: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend.cli", "gateway", "--port", "0",
        "--scenario", str(EXAMPLES / "two_accounts.yaml"),
        "--faults", str(EXAMPLES / "flaky_faults.yaml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        match = re.search(r"on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        ib = ib_factory.new()
        await ib.connectAsync("127.0.0.1", int(match.group(1)), clientId=3, timeout=5)
        assert ib.managedAccounts() == ["DU1111111", "DU2222222"]
        # the faults file is active: duplicated execDetails in the reply
        fills = await asyncio.wait_for(ib.reqExecutionsAsync(), 5)
        assert len(fills) == 2 * len({f.execution.execId for f in fills})
        ib.disconnect()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_bad_scenario_or_faults_file_exits_2(tmp_path: Path, capsys: Any) -> None:
    from backend.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("positions: [{account: X, con_id: 1, qty: 1}]\n")
    assert main(["gateway", "--port", "0", "--scenario", str(bad)]) == 2
    assert "positions[0].con_id" in capsys.readouterr().out
    faults = tmp_path / "faults.json"
    faults.write_text('{"exec_corrections": {"x.01": 5}}')
    assert main(["gateway", "--port", "0", "--faults", str(faults)]) == 2
    assert "faults" in capsys.readouterr().out
