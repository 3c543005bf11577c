"""Restart, SIGKILL and storage-failure behaviour of the PortfolioManager (real lmdb://)."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.core.portfolio_manager import PortfolioManager, default_journal_path
from backend.errors import PersistError
from backend.storage.journal import read_entries, read_last_seq
from backend.storage.schema import FILLS, REJECTS

from .harness import References, ingest, kill_child_at, start_child
from .ib_objects import ACCOUNT, exec_id, fill_msg, ib_fill, read
from .stream import assert_same, make_stream, snapshot

STREAM = make_stream(900, seed=7)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> References:
    """Uninterrupted runs, by stream length (filled lazily)."""
    return References(tmp_path_factory.mktemp("ref"), STREAM)


@pytest.mark.asyncio
async def test_restart_redelivery_is_idempotent(tmp_path: Path,
                                                reference: References) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    await ingest(uri, STREAM[:600])
    first = snapshot(uri)
    # reopen: deliver everything again, plus new messages
    async with PortfolioManager(uri) as pm:
        assert pm.replayed == 0  # a clean close left nothing in the journal
        before = len(pm.ledger)
        for msg in STREAM[:600]:
            await pm.process_message(msg)
        await pm.flush()
        assert len(pm.ledger) == before  # duplicates after a restart are no-ops
        assert_same(snapshot(uri), first)
        for msg in STREAM[600:]:
            await pm.process_message(msg)
        await pm.flush()
    assert_same(snapshot(uri), await reference.snapshot(len(STREAM)))
    assert_same(first, await reference.snapshot(600))


def arctic_in_child(uri: str, code: str) -> None:
    """Run ArcticDB calls in another process (one Arctic instance per LMDB path per process)."""
    script = ("import sys, arcticdb as adb, pandas as pd\n"
              f"lib = adb.Arctic({uri!r}).get_library('rejects')\n" + code)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)


@pytest.mark.asyncio
async def test_storage_failure_keeps_batch_pending_and_flush_raises(tmp_path: Path) -> None:
    root = tmp_path / "arctic"
    uri = f"lmdb://{root}"
    async with PortfolioManager(uri) as pm:  # creates the libraries
        await pm.process_message(fill_msg("alpha", ib_fill(1, "BOT", 1, 100.0)))
        await pm.flush()
    # Someone (ignoring the lease) leaves rejects/DU111 in a foreign layout: every append to
    # it fails in ArcticDB until an operator removes it.
    foreign = ("lib.write('DU111', pd.DataFrame({'seq': [0], 'other': ['x']}, "
               "index=pd.DatetimeIndex([pd.Timestamp('2020-01-01', tz='UTC')], name='time')))")
    arctic_in_child(f"{uri}?map_size=1GB", foreign)
    bad = fill_msg("alpha", ib_fill(2, "BOT", -1, 100.0))  # a reject for DU111
    pm = PortfolioManager(uri, flush_retries=2)
    async with pm:
        await pm.process_message(bad)
        await pm.process_message(fill_msg("alpha", ib_fill(3, "BOT", 1, 100.0)))
        with pytest.raises(PersistError) as info:
            await pm.flush()
        assert info.value.__cause__ is not None  # the storage error is the cause
        assert "rejects" in str(info.value.__cause__)
        assert pm.durable < pm.received == 2
        # nothing was dropped: the journal holds both messages, the batch stays pending
        assert [seq for seq, _ in read_entries(pm.journal_path)] == [2, 3]
        arctic_in_child(f"{uri}?map_size=1GB", "lib.delete('DU111')")
        # the retries go on in the background and succeed once the other process's change is
        # visible here (ArcticDB caches a symbol's version chain for ~2 s)
        deadline = time.monotonic() + 60
        while pm.durable < 2:
            assert time.monotonic() < deadline, "the pending batch never became durable"
            with contextlib.suppress(PersistError):
                await pm.flush()
        assert pm.durable == 2
        assert read_entries(pm.journal_path) == []
    assert read(uri, FILLS, ACCOUNT)["exec_id"].tolist() == [exec_id(1), exec_id(3)]
    assert read(uri, REJECTS, ACCOUNT)["field"].tolist() == ["fill.execution.shares"]


@pytest.mark.parametrize("seed", [11, 22, 33, 44])
@pytest.mark.asyncio
async def test_sigkill_at_random_points(tmp_path: Path, reference: References,
                                        seed: int) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    stream_path = tmp_path / "stream.json"
    stream_path.write_text(json.dumps(STREAM))
    kill_at = random.Random(seed).randint(1, len(STREAM) + 50)  # past the end: after "done"
    kill_child_at(start_child(uri, stream_path, seed), kill_at)
    journaled = read_last_seq(default_journal_path(uri))  # seq i == STREAM[i - 1]
    assert 0 <= journaled <= len(STREAM)
    # restart with NO re-delivery: everything the child journaled is in ArcticDB
    async with PortfolioManager(uri) as pm:
        assert pm.replayed <= journaled
    assert_same(snapshot(uri), await reference.snapshot(journaled))
    # every rejected message the child journaled is in rejects exactly once
    bad = [i + 1 for i, m in enumerate(STREAM[:journaled])
           if m["type"] == "fill" and m["fill"]["execution"]["shares"] <= 0]
    seqs = sorted(s for account in ("DU111", "DU222")
                  for s in read(uri, REJECTS, account)["seq"].tolist())
    assert seqs == bad
    # re-deliver the whole stream: equal to an uninterrupted run
    await ingest(uri, STREAM)
    assert_same(snapshot(uri), await reference.snapshot(len(STREAM)))
    assert read_entries(default_journal_path(uri)) == []
