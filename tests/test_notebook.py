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
    async with PortfolioManager(uri) as pm:
        for msg in json.loads((ROOT / "examples" / "fills.json").read_text()):
            await pm.process_message(msg)
        await pm.flush()
    monkeypatch.setenv("LEDGER_URI", uri)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in cells:
            exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    assert "positions equal a replay of fills: True" in out.getvalue()
    summary = namespace["summary"]
    # 10 live fills (the duplicate and the corrected original are not rows)
    assert int(summary["fills"].sum()) == 10  # type: ignore[index]
    assert int(summary["commission_pending"].sum()) == 1  # type: ignore[index]
