"""End-of-day snapshots while the PortfolioManager runs (it holds the writer lease, so the
``portfolio snapshot`` CLI cannot take one): ``await pm.snapshot(name)`` on real lmdb://."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.cli import main
from backend.core.portfolio_manager import PortfolioManager
from backend.errors import InvalidInputError, StorageError
from backend.storage import open_store
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS

from .ib_objects import AAPL, ACCOUNT, dict_fill, exec_id, fill_msg

EOD = "eod-2026-11-20"


def _today() -> str:
    return f"eod-{datetime.now(UTC):%Y-%m-%d}"


@pytest.mark.asyncio
async def test_snapshot_while_the_manager_runs_holds_everything_received(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", dict_fill(1, "BOT", 10, 100.0)))
        await pm.process_message(fill_msg("alpha", dict_fill(2, "BOT", 5, 106.0)))
        # The CLI needs the lease the manager holds: it refuses and says what to do instead.
        assert main(["snapshot", "--arctic", uri, "--name", "eod-cli"]) == 2
        out = capsys.readouterr().out
        assert "held by another writer" in out
        assert "pm.snapshot" in out
        # No flush before: the snapshot flushes first, so it holds both fills and the
        # positions/portfolio state derived from them (state is only written on a flush or
        # after state_interval, so without the flush the snapshot would miss it).
        assert await pm.snapshot(EOD) == EOD
        await pm.process_message(fill_msg("alpha", dict_fill(3, "SLD", 15, 110.0)))
        await pm.flush()

        reader = open_store(uri, writer=False)  # a reader while the manager runs
        try:
            assert reader.list_snapshots() == [EOD]
            snap_fills = reader.read(FILLS, ACCOUNT, as_of=EOD)
            snap_pos = reader.read(POSITIONS, "alpha", as_of=EOD)
            snap_port = reader.read(PORTFOLIO, ACCOUNT, as_of=EOD)
            now_fills = reader.read(FILLS, ACCOUNT)
            now_pos = reader.read(POSITIONS, "alpha")
            now_port = reader.read(PORTFOLIO, ACCOUNT)
        finally:
            reader.close()

        # A name that is taken is refused; the manager keeps working afterwards.
        with pytest.raises(StorageError, match="already exists"):
            await pm.snapshot(EOD)
        await pm.process_message(fill_msg("alpha", dict_fill(4, "BOT", 1, 111.0)))
        before = _today()
        default = await pm.snapshot()
        assert default in {before, _today()}  # eod-<today, UTC> (midnight may pass)
        assert pm.store.list_snapshots() == sorted([EOD, default])
        latest = pm.store.read(FILLS, ACCOUNT, as_of=default)

    assert list(snap_fills["exec_id"]) == [exec_id(1), exec_id(2)]
    assert snap_pos[["con_id", "qty"]].values.tolist() == [[AAPL["conId"], 15.0]]
    assert snap_pos["avg_cost"].iloc[0] == pytest.approx(102.0)
    assert snap_port[["strategy", "qty"]].values.tolist() == [["alpha", 15.0]]
    # the live symbols moved on; the snapshot did not
    assert list(now_fills["exec_id"]) == [exec_id(1), exec_id(2), exec_id(3)]
    assert now_pos["qty"].tolist() == [0.0]
    assert now_pos["realized_pnl"].iloc[0] == pytest.approx(15 * (110.0 - 102.0))
    assert now_port.empty
    assert list(latest["exec_id"]) == [exec_id(n) for n in (1, 2, 3, 4)]


@pytest.mark.asyncio
async def test_snapshot_needs_an_open_manager(tmp_path: Path) -> None:
    pm = PortfolioManager(f"lmdb://{tmp_path / 'arctic'}")
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.snapshot(EOD)
    async with pm:
        pass
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.snapshot(EOD)
