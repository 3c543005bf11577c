"""End-of-day snapshots while the PortfolioManager runs (it holds the writer lease, so the
``portfolio snapshot`` CLI cannot take one): ``await pm.snapshot(name)`` on real lmdb://."""

from __future__ import annotations

import asyncio
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
async def test_snapshots_under_a_stream_pin_every_library_at_one_message(tmp_path: Path) -> None:
    """Fills keep arriving while snapshots are taken: each snapshot holds exactly the fills
    received before its call, and its positions and portfolio are those of exactly these
    fills (no fill without its position update, no position ahead of its fills), so an
    end-of-day analysis reads one consistent book."""
    uri = f"lmdb://{tmp_path / 'arctic'}"
    names = [f"eod-{i}" for i in range(4)]
    async with PortfolioManager(uri) as pm:
        stop = asyncio.Event()

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                side = "SLD" if n % 3 == 0 else "BOT"
                await pm.process_message(fill_msg("alpha", dict_fill(n, side, 1 + n % 4,
                                                                     100.0 + n % 7)))
                if n % 10 == 0:
                    await asyncio.sleep(0.002)  # a steady stream, not one burst

        moved, goal = asyncio.Event(), 0
        received: dict[str, int] = {}

        def durable(receipt: int) -> None:
            if receipt >= goal:
                moved.set()

        pm.on_durable = durable
        producer = asyncio.create_task(produce())
        for name in names:
            goal = pm.durable + 200  # the stream has moved on since the last snapshot
            moved.clear()
            await moved.wait()
            received[name] = pm.received
            await pm.snapshot(name)
        stop.set()
        await producer

    reader = open_store(uri, writer=False)
    try:
        for name in names:
            fills = reader.read(FILLS, ACCOUNT, as_of=name)
            pos = reader.read(POSITIONS, "alpha", as_of=name)
            port = reader.read(PORTFOLIO, ACCOUNT, as_of=name)
            signed = [q if s == "BUY" else -q for q, s in zip(fills["qty"], fills["side"],
                                                               strict=True)]
            assert len(fills) == received[name]  # exactly what came before the call
            assert len(pos) == 1
            assert pos["fill_count"].iloc[0] == len(fills), name
            assert pos["last_exec_id"].iloc[0] == fills["exec_id"].iloc[-1], name
            assert pos["qty"].iloc[0] == pytest.approx(sum(signed)), name
            held = port[port["strategy"] == "alpha"]["qty"].tolist()
            assert held == ([pytest.approx(sum(signed))] if sum(signed) else []), name
    finally:
        reader.close()


@pytest.mark.asyncio
async def test_snapshot_needs_an_open_manager(tmp_path: Path) -> None:
    pm = PortfolioManager(f"lmdb://{tmp_path / 'arctic'}")
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.snapshot(EOD)
    async with pm:
        pass
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.snapshot(EOD)


@pytest.mark.asyncio
async def test_prune_while_the_manager_runs_keeps_the_latest_and_the_snapshotted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    async with PortfolioManager(uri) as pm:
        for n in range(1, 7):  # one flush per fill: a version per symbol each time
            await pm.process_message(fill_msg("alpha", dict_fill(n, "BOT", 1, 100.0 + n)))
            await pm.flush()
            if n == 3:
                await pm.snapshot(EOD)
        store = pm.store
        before = {(lb, s): store.list_versions(lb, s) for lb in (FILLS, POSITIONS, PORTFOLIO)
                  for s in store.list_symbols(lb)}
        assert all(len(v) >= 4 for v in before.values()), before
        # The CLI cannot (the lease): it says what to do instead.
        assert main(["compact", "--arctic", uri, "--prune-keep", "1"]) == 2
        assert "pm.prune" in capsys.readouterr().out
        assert await pm.prune(keep_last=1, grace_seconds=3600) == 0  # all too young
        removed = await pm.prune(keep_last=1, grace_seconds=0)
        snapped = {(lb, s): store.read(lb, s, as_of=EOD) for lb, s in before}
        after = {(lb, s): store.list_versions(lb, s) for lb, s in before}
        assert removed == sum(len(before[k]) - len(after[k]) for k in before) > 0
        for key, versions in after.items():
            assert versions[-1] == before[key][-1]  # the latest stays
            assert len(versions) <= 2  # and the snapshotted one, if another
        # the manager goes on writing, and the snapshot still reads
        await pm.process_message(fill_msg("alpha", dict_fill(7, "SLD", 6, 110.0)))
        await pm.flush()
        assert list(store.read(FILLS, ACCOUNT)["exec_id"]) == [exec_id(n) for n in range(1, 8)]
        assert list(snapped[(FILLS, ACCOUNT)]["exec_id"]) == [exec_id(n) for n in (1, 2, 3)]
        assert store.read(POSITIONS, "alpha", as_of=EOD)["qty"].tolist() == [3.0]
    assert pm.position(ACCOUNT, "alpha", AAPL["conId"]).qty == 0.0
    with pytest.raises(InvalidInputError, match="not open"):
        await pm.prune()
