"""The analysis notebook runs top to bottom against a ledger the PortfolioManager wrote."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from backend.core.portfolio_manager import PortfolioManager

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "ledger_analysis.ipynb"


@pytest.mark.asyncio
async def test_notebook_cells_run_and_positions_equal_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    messages = json.loads((ROOT / "examples" / "fills.json").read_text())
    async with PortfolioManager(uri) as pm:
        for msg in messages[:6]:
            await pm.process_message(msg)
        await pm.snapshot("eod-test")  # the book after the first 6 messages
        for msg in messages[6:]:
            await pm.process_message(msg)
        await pm.flush()
    monkeypatch.setenv("LEDGER_URI", uri)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in cells:
            exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    printed = out.getvalue()
    assert "positions equal a replay of fills: True" in printed
    # the end-of-day section replays the snapshot's own fills against its own positions
    assert "snapshots: ['eod-test']" in printed
    assert "snapshot eod-test: 6 fills; positions equal a replay of its fills: True" in printed
    summary = namespace["summary"]
    # 10 live fills (the duplicate and the corrected original are not rows)
    assert int(summary["fills"].sum()) == 10  # type: ignore[index]
    assert int(summary["commission_pending"].sum()) == 1  # type: ignore[index]
