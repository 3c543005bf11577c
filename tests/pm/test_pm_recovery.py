"""Restart from positions rows checked against fills (real lmdb://): restored keys keep their
fills unread, disagreeing keys are refolded and rewritten, and every outcome equals a run that
never stopped."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.core.portfolio_manager import PortfolioManager
from backend.storage import SymbolWrite, open_store
from backend.storage.schema import PORTFOLIO, POSITIONS, SCHEMAS

from .ib_objects import AAPL, ACCOUNT, MSFT, fill_msg, ib_fill, read
from .stream import assert_same, make_stream, snapshot

STREAM = make_stream(400, seed=5)


async def ingest(uri: str, messages: list[dict[str, Any]]) -> None:
    async with PortfolioManager(uri) as pm:
        for msg in messages:
            await pm.process_message(msg)
        await pm.flush()


@pytest.mark.asyncio
async def test_clean_restart_restores_every_position_from_its_row(tmp_path: Path) -> None:
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM)
    async with PortfolioManager(uri) as pm:
        keys = len(list(pm.ledger.keys()))
        assert keys > 10
        assert pm.ledger.restored_keys == keys  # no fill was read back into the ledger
        stored = len(pm.ledger)
        for msg in STREAM:  # re-delivery of everything, then the rest
            await pm.process_message(msg)
        await pm.flush()
        assert len(pm.ledger) >= stored
    assert_same(snapshot(uri), snapshot(ref))


@pytest.mark.asyncio
async def test_one_fill_after_restart_keeps_the_other_portfolio_rows(tmp_path: Path) -> None:
    """The portfolio symbol is rewritten whole: instruments not touched since the restart keep
    their rows (they were lost before the book was rebuilt on recovery)."""
    uri = f"lmdb://{tmp_path / 'a'}"
    await ingest(uri, [fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=AAPL)),
                       fill_msg("alpha", ib_fill(2, "BOT", 5, 300.0, contract=MSFT))])
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(3, "BOT", 1, 101.0, contract=AAPL)))
        await pm.flush()
        # the new AAPL fill folds onto the restored row: neither key's fills were read
        assert pm.ledger.restored_keys == 2
    rows = read(uri, PORTFOLIO, ACCOUNT).set_index("con_id")["qty"].to_dict()
    assert rows == {AAPL["conId"]: 11.0, MSFT["conId"]: 5.0}


@pytest.mark.asyncio
async def test_disagreeing_row_is_refolded_from_fills_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM[:300])
    # An operator (or a bug) leaves a wrong quantity in one row of positions/alpha.
    store = open_store(uri)
    try:
        frame = store.read(POSITIONS, "alpha")
        frame.loc[0, "qty"] += 1.0
        meta = store.read_metadata(POSITIONS, "alpha")
        store.commit([SymbolWrite(POSITIONS, "alpha", state=frame, metadata=meta)])
    finally:
        store.close()
    keys_of_alpha = len(frame)
    with caplog.at_level(logging.WARNING, logger="backend.portfolio_manager"):
        async with PortfolioManager(uri) as pm:
            keys = len(list(pm.ledger.keys()))
            assert pm.ledger.restored_keys == keys - 1
            await pm.flush()  # the refolded strategy is rewritten without any new message
    assert any("positions/alpha disagrees with fills" in r.getMessage() and "qty=" in
               r.getMessage() for r in caplog.records)
    assert keys_of_alpha == len(read(uri, POSITIONS, "alpha"))
    assert_same(snapshot(uri), snapshot(ref))


@pytest.mark.asyncio
async def test_positions_row_without_fills_is_dropped(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'a'}"
    await ingest(uri, [fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=AAPL))])
    store = open_store(uri)
    try:
        frame = store.read(POSITIONS, "alpha")
        extra = frame.copy()
        extra["con_id"] = MSFT["conId"]
        both = pd.concat([frame, extra], ignore_index=True)
        store.commit([SymbolWrite(POSITIONS, "alpha", state=both,
                                  metadata=store.read_metadata(POSITIONS, "alpha"))])
    finally:
        store.close()
    async with PortfolioManager(uri) as pm:
        await pm.flush()
    assert read(uri, POSITIONS, "alpha")["con_id"].tolist() == [AAPL["conId"]]


@pytest.mark.asyncio
async def test_positions_of_an_older_schema_are_refolded_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A library written before positions rows carried open_price_min/max (plain arcticdb
    writes, as that version left them; they read back as NaN): the manager refolds the open
    keys from fills (restored, their range would stay NaN for good), rewrites the symbols in
    the current schema, and ends where a run that never stopped ends."""
    import arcticdb as adb

    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM)
    lib = adb.Arctic(uri)[POSITIONS]
    strategies = lib.list_symbols()
    assert strategies
    for strategy in strategies:
        with warnings.catch_warnings():  # arcticdb 6.28's own pandas internals (not ours)
            warnings.filterwarnings("ignore", message=".*BlockManagerUnconsolidated.*",
                                    category=DeprecationWarning)
            item = lib.read(strategy)
        old = item.data.drop(columns=["open_price_min", "open_price_max"])
        lib.write(strategy, old, metadata=item.metadata)
    del lib  # one Library object per root at a time (the manager opens its own)
    with caplog.at_level(logging.WARNING, logger="backend.portfolio_manager"):
        async with PortfolioManager(uri) as pm:
            keys = list(pm.ledger.keys())
            open_keys = [k for k in keys if not pm.ledger.position(k).is_flat]
            assert open_keys
            # flat keys agree with their rows (no range to keep); open ones are refolded
            assert pm.ledger.restored_keys == len(keys) - len(open_keys)
            for msg in STREAM:
                await pm.process_message(msg)
            await pm.flush()
    assert any("disagrees with fills" in r.getMessage() and "a row of an older schema" in
               r.getMessage() for r in caplog.records)
    for strategy in strategies:
        assert list(read(uri, POSITIONS, strategy).columns) == list(SCHEMAS[POSITIONS])
    assert_same(snapshot(uri), snapshot(ref))
