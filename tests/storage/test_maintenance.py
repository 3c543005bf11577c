"""Compaction (explicit and inline), snapshots and pruning on ArcticDB, and their CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from backend.cli import main
from backend.errors import StorageError
from backend.storage import Store, SymbolWrite, open_store
from backend.storage.arctic import ArcticStore

from .rows import fills, positions


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 'arctic'}"


def _one_row_commits(store: Store, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        t = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i)
        rows = fills([(str(t), f"e{i}", float(i))])
        store.commit([SymbolWrite("fills", "U1", rows=rows)])


def test_compact_defragments_and_keeps_every_row(uri: str) -> None:
    store = ArcticStore(uri, compact_every=None)
    try:
        _one_row_commits(store, 40)
        before = store.read("fills", "U1")
        versions = len(store.list_versions("fills", "U1"))
        seen: list[tuple[str, int, int]] = []
        assert store.compact(progress=lambda s, d, t: seen.append((s, d, t))) == 1
        assert seen == [("U1", 1, 1)]
        assert len(store.list_versions("fills", "U1")) == versions + 1  # one new version
        pd.testing.assert_frame_equal(store.read("fills", "U1"), before)
        assert store.compact() == 0  # nothing left to do
        _one_row_commits(store, 3, start=40)  # appends still work after compaction
        assert len(store.read("fills", "U1")) == 43
    finally:
        store.close()


def test_writer_compacts_inline_every_n_writes(uri: str) -> None:
    store = open_store(uri, compact_every=10)
    try:
        _one_row_commits(store, 25)
        assert isinstance(store, ArcticStore)
        # 25 appends + 2 inline compactions (after the 10th and the 20th write)
        assert len(store.list_versions("fills", "U1")) == 27
        assert list(store.read("fills", "U1")["exec_id_base"]) == [f"e{i}" for i in range(25)]
    finally:
        store.close()


def test_symbols_written_together_are_compacted_on_consecutive_commits(uri: str) -> None:
    """Two accounts' fills reach ``compact_every`` in the same commit: one is compacted after
    that commit, the other after the next one (one compaction pause per commit, not two)."""
    store = open_store(uri, compact_every=10)
    try:
        assert isinstance(store, ArcticStore)
        for i in range(11):
            t = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i)
            store.commit([SymbolWrite("fills", acct, rows=fills([(str(t), f"{acct}e{i}", 1.0)]))
                          for acct in ("U1", "U2")])
            counts = [len(store.list_versions("fills", a)) for a in ("U1", "U2")]
            if i < 9:
                assert counts == [i + 1, i + 1]
            elif i == 9:  # both due: exactly one of them got its compaction version
                assert sorted(counts) == [10, 11]
            else:  # the other one now, beside its 11th append
                assert counts == [12, 12]
        for acct in ("U1", "U2"):
            assert list(store.read("fills", acct)["exec_id_base"]) == [
                f"{acct}e{i}" for i in range(11)]
    finally:
        store.close()


def test_compact_due_compacts_what_commits_left_due(uri: str) -> None:
    """A writer that schedules compaction itself commits with ``compact=False``: no commit
    compacts; ``compact_due()`` then compacts the due symbol once and resets its count."""
    store = open_store(uri, compact_every=10)
    try:
        assert isinstance(store, ArcticStore)
        assert store.compact_due() is False  # nothing written yet
        for i in range(12):
            t = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i)
            store.commit([SymbolWrite("fills", "U1", rows=fills([(str(t), f"e{i}", 1.0)]))],
                         compact=False)
        assert len(store.list_versions("fills", "U1")) == 12  # no compaction version
        assert store.compact_due() is True
        assert len(store.list_versions("fills", "U1")) == 13
        assert store.compact_due() is False  # counted from zero again
        assert list(store.read("fills", "U1")["exec_id_base"]) == [f"e{i}" for i in range(12)]
    finally:
        store.close()


def test_cli_snapshot_compact_and_prune(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(uri)
    _one_row_commits(store, 5)
    store.commit([SymbolWrite("positions", "alpha", state=positions([1.0]))])
    store.commit([SymbolWrite("positions", "alpha", state=positions([2.0]))])
    # the lease is held: both commands refuse and name the holder
    assert main(["snapshot", "--arctic", uri, "--name", "eod-2026-11-20"]) == 2
    assert main(["compact", "--arctic", uri]) == 2
    assert "pid=" in capsys.readouterr().out
    store.close()

    assert main(["snapshot", "--arctic", uri, "--name", "eod-2026-11-20"]) == 0
    assert "eod-2026-11-20" in capsys.readouterr().out
    assert main(["compact", "--arctic", uri, "--prune-keep", "1", "--grace", "0"]) == 0
    out = capsys.readouterr().out
    assert "compacted 1 symbol(s)" in out
    assert "pruned" in out

    reader = ArcticStore(uri, writer=False)
    try:
        assert reader.list_snapshots() == ["eod-2026-11-20"]
        assert list(reader.read("positions", "alpha", as_of="eod-2026-11-20")["qty"]) == [2.0]
        assert len(reader.read("fills", "U1", as_of="eod-2026-11-20")) == 5
        assert len(reader.read("fills", "U1")) == 5
        assert len(reader.list_versions("fills", "U1")) == 2  # latest + the snapshotted one
    finally:
        reader.close()


def test_cli_rejects_unknown_library(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compact", "--arctic", uri, "--library", "nope"]) == 2
    assert "--library='nope'" in capsys.readouterr().out


def test_full_lmdb_map_fails_the_commit_and_a_larger_map_takes_the_retry(tmp_path: Path) -> None:
    root = tmp_path / "arctic"
    template = fills([(str(pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=j)),
                       f"t{j}", float(j)) for j in range(500)])

    def batch(i: int) -> pd.DataFrame:
        out = template.copy()
        out.index = template.index + pd.Timedelta(hours=i)
        out["exec_id_base"] = [f"e{i}-{j}" for j in range(500)]
        return out

    small = open_store(f"lmdb://{root}?map_size=3MB", compact_every=0)
    committed, error = 0, ""
    try:
        for i in range(200):
            try:
                small.commit([SymbolWrite("fills", "U1", rows=batch(i))])
            except StorageError as exc:
                error = str(exc)
                break
            committed += 1
        assert "map_size" in error
        assert len(small.read("fills", "U1")) == committed * 500  # reads still work
    finally:
        small.close()
    big = open_store(f"lmdb://{root}?map_size=256MB", compact_every=0)
    try:
        big.commit([SymbolWrite("fills", "U1", rows=batch(committed))])  # the caller's retry
        got = big.read("fills", "U1")
        assert len(got) == (committed + 1) * 500
        assert got["exec_id_base"].is_unique
    finally:
        big.close()


def test_compact_cli_text_states_the_inline_default() -> None:
    from backend.cli import compact
    from backend.storage.handles import DEFAULT_COMPACT_EVERY

    text = " ".join((compact.__doc__ or "").split())
    expected = f"inline every ``compact_every`` writes to it, {DEFAULT_COMPACT_EVERY} by default"
    assert expected in text
