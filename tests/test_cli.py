"""The console script: --help lists every subcommand; replay prints the example's positions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backend.cli import SUBCOMMANDS, main


def test_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "backend.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_no_subcommand_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: portfolio" in capsys.readouterr().out


def test_replay_example_stream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line.split() for line in out.splitlines()[1:5]}
    # TT example inside the stream: 19 @ 99.98003629764065, realized 36.62068965517241
    assert lines["trend"][5:8] == ["19.0000", "99.9800", "36.6207"]
    # the ES correction replaced the original: realized (5010.25 - 5000.5) * 2 * 50
    assert lines["futs"][5:8] == ["-1.0000", "5,010.2500", "975.0000"]
    assert "12 messages, 10 live fills, 0 rejected" in out
