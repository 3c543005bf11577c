"""The Store contract, run on MemoryStore, ArcticStore(mem://) and ArcticStore(lmdb://)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backend.errors import InvalidFieldError, SchemaMismatchError, StorageError
from backend.storage import Store, SymbolWrite, open_store
from backend.storage.arctic import ArcticStore
from backend.storage.memory import MemoryStore
from backend.storage.schema import LIBRARIES, SCHEMAS, STATE_LIBRARIES

from .conftest import store_uri
from .rows import fills, frame, orders, positions, rejects, ts


def prices(store: Store, symbol: str = "U1") -> list[tuple[str, float]]:
    got = store.read("fills", symbol)
    return list(zip(got["exec_id_base"], got["price"], strict=True))


def times(store: Store, library: str = "fills", symbol: str = "U1") -> list[pd.Timestamp]:
    return list(store.read(library, symbol).index)


@pytest.mark.parametrize("library", LIBRARIES)
def test_missing_symbol_reads_as_empty_frame_with_schema(store: Store, library: str) -> None:
    got = store.read(library, "nobody")
    assert list(got.columns) == list(SCHEMAS[library])
    assert {c: str(t) for c, t in got.dtypes.items()} == SCHEMAS[library]
    assert len(got) == 0
    if library in STATE_LIBRARIES:
        assert isinstance(got.index, pd.RangeIndex)
    else:
        assert str(got.index.dtype) == "datetime64[ns, UTC]"
        assert got.index.name == "time"
    assert store.list_symbols(library) == []
    assert store.read_metadata(library, "nobody") is None


def test_round_trip_keeps_strings_nan_ints_and_utc_index(store: Store) -> None:
    rows = fills([("2026-11-20 14:30:00.123456789", "e1", 101.25)], order_ref="ref-ü")
    rows["commission"] = [np.nan]
    rows["perm_id"] = [2**40]
    store.commit([SymbolWrite("fills", "U1", rows=rows, metadata={"watermark": 3})])
    got = store.read("fills", "U1")
    assert str(got.index.dtype) == "datetime64[ns, UTC]"
    assert got.index[0] == ts("2026-11-20 14:30:00.123456789")
    assert got["order_ref"].iloc[0] == "ref-ü"
    assert math.isnan(got["commission"].iloc[0])
    assert got["perm_id"].iloc[0] == 2**40
    assert got["price"].iloc[0] == 101.25
    assert got["exec_time"].iloc[0] == pd.Timestamp("2026-11-20 14:30:00.123456789")
    assert {c: str(t) for c, t in got.dtypes.items()} == SCHEMAS["fills"]
    assert store.read_metadata("fills", "U1") == {"watermark": 3}
    assert store.list_symbols("fills") == ["U1"]


def test_commits_without_inline_compaction_then_compact_due_keep_every_row(store: Store
                                                                          ) -> None:
    """``commit(..., compact=False)`` then ``compact_due()`` (the manager's order) on every
    store: rows and their order are unchanged, and nothing is left due afterwards."""
    for i in range(3):
        store.commit([SymbolWrite("fills", "U1", rows=fills([(f"2026-01-0{i + 1}", f"e{i}",
                                                              float(i + 1))]))], compact=False)
    while store.compact_due():
        pass
    assert store.compact_due() is False
    assert prices(store) == [("e0", 1.0), ("e1", 2.0), ("e2", 3.0)]


def test_out_of_order_batch_is_sorted(store: Store) -> None:
    rows = fills([("2026-01-03", "c", 3.0), ("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0)])
    store.commit([SymbolWrite("fills", "U1", rows=rows)])
    assert prices(store) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert times(store) == [ts("2026-01-01"), ts("2026-01-02"), ts("2026-01-03")]


def test_equal_times_get_nanosecond_offsets_in_batch_and_against_the_tail(store: Store) -> None:
    t = "2026-01-01 10:00"
    store.commit([SymbolWrite("fills", "U1", rows=fills([(t, "a", 1.0), (t, "b", 2.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([(t, "c", 3.0)]))])
    base = ts(t)
    assert times(store) == [base, base + pd.Timedelta(1, "ns"), base + pd.Timedelta(2, "ns")]
    assert prices(store) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert store.read("fills", "U1").index.is_unique


def commit_two_at(uri: str, t: str) -> None:
    """A writer that stores fills a and b at the same time ``t`` (so b gets a 1 ns offset),
    then closes: what a restarted writer finds."""
    first = open_store(uri)
    try:
        first.commit([SymbolWrite("fills", "U1", rows=fills([(t, "a", 1.0), (t, "b", 2.0)]))])
    finally:
        first.close()


def test_offsets_survive_reopening_and_a_reopened_writer_avoids_them(tmp_path: Path) -> None:
    """On lmdb:// (mem:// and memory:// are fresh at every open): a new writer knows the stored
    times only from storage, and still puts an equal time after the stored offsets."""
    uri = store_uri("lmdb", tmp_path)
    t = "2026-01-01 10:00"
    base = ts(t)
    commit_two_at(uri, t)
    again = open_store(uri)
    try:
        assert times(again) == [base, base + pd.Timedelta(1, "ns")]
        again.commit([SymbolWrite("fills", "U1", rows=fills([(t, "c", 3.0)]))])
        assert times(again) == [base + pd.Timedelta(n, "ns") for n in range(3)]
        assert prices(again) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    finally:
        again.close()


def test_a_reopened_writer_that_preloads_commits_what_one_that_does_not_would(
        tmp_path: Path) -> None:
    """``preload`` takes the stored times and keys up front (what a restart does): the next
    commits (equal times after stored offsets, a corrected key, a new symbol) store exactly
    what they store when the first commit loads them itself."""
    t = "2026-01-01 10:00"
    results = []
    for preload in (False, True):
        uri = store_uri("lmdb", tmp_path / str(preload))
        commit_two_at(uri, t)
        again = open_store(uri)
        try:
            if preload:
                again.preload("fills", ["U1", "nobody"])
                again.preload("orders", [])
            again.commit([SymbolWrite("fills", "U1",
                                      rows=fills([(t, "c", 3.0), (t, "a", 1.5)]))])
            again.commit([SymbolWrite("fills", "nobody", rows=fills([(t, "z", 9.0)]))])
            results.append((again.read("fills", "U1"), again.read("fills", "nobody")))
        finally:
            again.close()
    (u1, nobody), (u1_pre, nobody_pre) = results
    pd.testing.assert_frame_equal(u1_pre, u1)
    pd.testing.assert_frame_equal(nobody_pre, nobody)
    assert sorted(zip(u1_pre["exec_id_base"], u1_pre["price"], strict=True)) == [
        ("a", 1.5), ("b", 2.0), ("c", 3.0)]
    assert u1_pre.index.is_unique


def test_preload_is_harmless_on_every_store(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
    store.preload("fills", ["U1", "U2"])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 2.0)]))])
    assert prices(store) == [("a", 2.0)]


def test_late_row_is_inserted_without_touching_neighbours(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-04", "d", 4.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-03", "c", 3.0)]))])
    assert prices(store) == [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]


def test_late_row_sharing_a_stored_time_never_replaces_it(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-03", "c", 3.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02", "x", 9.0)]))])
    assert prices(store) == [("a", 1.0), ("b", 2.0), ("x", 9.0), ("c", 3.0)]
    assert times(store)[2] == ts("2026-01-02") + pd.Timedelta(1, "ns")


def test_mixed_batch_of_late_and_new_rows(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-02", "b", 2.0), ("2026-01-04", "d", 4.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-05", "e", 5.0), ("2026-01-01", "a", 1.0), ("2026-01-03", "c", 3.0)]))])
    assert [k for k, _ in prices(store)] == ["a", "b", "c", "d", "e"]


def test_correction_replaces_in_place_and_keeps_neighbours(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-03", "c", 3.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02", "b", 20.0)]))])
    assert prices(store) == [("a", 1.0), ("b", 20.0), ("c", 3.0)]


def test_correction_moves_a_row_to_its_new_time(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-03", "c", 3.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-05", "a", 10.0)]))])
    assert prices(store) == [("b", 2.0), ("c", 3.0), ("a", 10.0)]
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02 12:00", "c", 30.0)]))])
    assert prices(store) == [("b", 2.0), ("c", 30.0), ("a", 10.0)]
    assert times(store) == [ts("2026-01-02"), ts("2026-01-02 12:00"), ts("2026-01-05")]


def test_correction_of_the_tail_row_and_new_rows_in_one_commit(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-03", "c", 3.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-02", "c", 30.0), ("2026-01-04", "d", 4.0)]))])
    assert prices(store) == [("a", 1.0), ("c", 30.0), ("d", 4.0)]


def test_last_row_of_a_key_in_one_commit_wins(store: Store) -> None:
    rows = fills([("2026-01-01", "a", 1.0), ("2026-01-02", "a", 2.0)])
    store.commit([SymbolWrite("fills", "U1", rows=rows)])
    assert prices(store) == [("a", 2.0)]


def test_replaying_a_commit_is_idempotent(store: Store) -> None:
    t = "2026-01-01"
    batch = fills([(t, "a", 1.0), (t, "b", 2.0), ("2026-01-02", "c", 3.0)])
    store.commit([SymbolWrite("fills", "U1", rows=batch)])
    first = store.read("fills", "U1")
    store.commit([SymbolWrite("fills", "U1", rows=batch)])
    pd.testing.assert_frame_equal(store.read("fills", "U1"), first)


def test_orders_event_is_updated_never_duplicated(store: Store) -> None:
    store.commit([SymbolWrite("orders", "U1", rows=orders(
        [("2026-01-01", "o1:Submitted", "Submitted"), ("2026-01-02", "o1:Filled", "Filled")]))])
    store.commit([SymbolWrite("orders", "U1", rows=orders(
        [("2026-01-01", "o1:Submitted", "PreSubmitted")]))])
    got = store.read("orders", "U1")
    assert list(got["event_key"]) == ["o1:Submitted", "o1:Filled"]
    assert list(got["status"]) == ["PreSubmitted", "Filled"]


def test_unkeyed_rejects_keep_every_row(store: Store) -> None:
    t = "2026-01-01"
    store.commit([SymbolWrite("rejects", "_unknown", rows=rejects([(t, "{}"), (t, "{}")]))])
    store.commit([SymbolWrite("rejects", "_unknown", rows=rejects([(t, "not json")]))])
    got = store.read("rejects", "_unknown")
    assert list(got["raw"]) == ["{}", "{}", "not json"]
    assert got.index.is_unique
    assert got.index.is_monotonic_increasing


def _versions(store: Store, library: str, symbol: str) -> list[int]:
    assert isinstance(store, ArcticStore | MemoryStore)
    return store.list_versions(library, symbol)


def test_many_symbols_in_one_commit(store: Store) -> None:
    def three_rows(day: str, prefix: str, i: int) -> pd.DataFrame:
        return fills([(f"{day} 10:0{j}", f"{prefix}{i}-{j}", float(i)) for j in range(3)])

    writes = [SymbolWrite("fills", f"U{i}", rows=three_rows("2026-01-01", "e", i))
              for i in range(5)]
    writes.append(SymbolWrite("positions", "alpha", state=positions([1.0, 0.0])))
    store.commit(writes)
    # one write per symbol: one version each, whatever the number of rows
    assert all(_versions(store, "fills", f"U{i}") == [0] for i in range(5))
    assert _versions(store, "positions", "alpha") == [0]
    store.commit([SymbolWrite("fills", f"U{i}", rows=three_rows("2026-01-02", "f", i))
                  for i in range(5)])
    # one append per symbol: one more version each; the state symbol was not touched
    assert all(_versions(store, "fills", f"U{i}") == [0, 1] for i in range(5))
    assert _versions(store, "positions", "alpha") == [0]
    assert store.list_symbols("fills") == [f"U{i}" for i in range(5)]
    for i in range(5):
        assert list(store.read("fills", f"U{i}")["exec_id_base"]) == [
            f"{p}{i}-{j}" for p in "ef" for j in range(3)]
    assert list(store.read("positions", "alpha")["qty"]) == [1.0, 0.0]


def test_naive_times_need_a_declared_zone(store_kind: str, tmp_path: Path) -> None:
    naive = fills([("2026-01-01 09:30", "a", 1.0)])
    naive.index = pd.DatetimeIndex(naive.index).tz_localize(None)
    plain = open_store(store_uri(store_kind, tmp_path))
    try:
        with pytest.raises(InvalidFieldError, match="time"):
            plain.commit([SymbolWrite("fills", "U1", rows=naive)])
    finally:
        plain.close()
    zoned = open_store(store_uri(store_kind, tmp_path), naive_tz="America/New_York")
    try:
        zoned.commit([SymbolWrite("fills", "U1", rows=naive)])
        assert times(zoned) == [ts("2026-01-01 14:30")]
    finally:
        zoned.close()


def test_aware_times_in_other_zones_read_back_utc(store: Store) -> None:
    rows = fills([("2026-07-01", "a", 1.0)])
    rows.index = pd.DatetimeIndex([pd.Timestamp("2026-07-01 09:30", tz="America/New_York")])
    store.commit([SymbolWrite("fills", "U1", rows=rows)])
    assert times(store) == [ts("2026-07-01 13:30")]


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("qty", "ten", r"'fills'.*'qty'.*float64"),
        ("order_id", 1.5, r"'fills'.*'order_id'.*int64"),
        ("symbol", None, r"'fills'.*'symbol'.*str"),
    ],
)
def test_schema_mismatch_names_library_column_dtype(
    store: Store, column: str, value: object, match: str
) -> None:
    good = fills([("2026-01-01", "a", 1.0)])
    bad = fills([("2026-01-02", "b", 2.0)])
    bad[column] = pd.Series([value], index=bad.index, dtype=object if value is None else None)
    with pytest.raises(SchemaMismatchError, match=match):
        store.commit([SymbolWrite("fills", "U2", rows=good), SymbolWrite("fills", "U1", rows=bad)])
    assert store.list_symbols("fills") == []  # validated before anything was written


def test_missing_and_extra_columns_are_refused(store: Store) -> None:
    rows = fills([("2026-01-01", "a", 1.0)])
    with pytest.raises(SchemaMismatchError, match="'price'"):
        store.commit([SymbolWrite("fills", "U1", rows=rows.drop(columns=["price"]))])
    with pytest.raises(SchemaMismatchError, match="'extra'"):
        store.commit([SymbolWrite("fills", "U1", rows=rows.assign(extra=1))])


def test_read_columns_and_date_range(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-03", "c", 3.0)]))])
    got = store.read("fills", "U1", columns=["price", "exec_id_base"],
                     date_range=(ts("2026-01-02"), None))
    assert list(got.columns) == ["price", "exec_id_base"]
    assert list(got["exec_id_base"]) == ["b", "c"]
    with pytest.raises(SchemaMismatchError, match="nope"):
        store.read("fills", "U1", columns=["nope"])


def test_state_versions_as_of_and_snapshots(store: Store) -> None:
    store.commit([SymbolWrite("positions", "alpha", state=positions([1.0]), metadata={"w": 1})])
    store.commit([SymbolWrite("positions", "alpha", state=positions([2.0, 0.0]),
                              metadata={"w": 2})])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
    store.snapshot("eod-2026-11-20")
    store.commit([SymbolWrite("positions", "alpha", state=positions([3.0]), metadata={"w": 3})])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02", "b", 2.0)]))])

    assert list(store.read("positions", "alpha")["qty"]) == [3.0]
    assert list(store.read("positions", "alpha", as_of=0)["qty"]) == [1.0]
    assert list(store.read("positions", "alpha", as_of="eod-2026-11-20")["qty"]) == [2.0, 0.0]
    assert store.read_metadata("positions", "alpha", as_of=0) == {"w": 1}
    assert store.read_metadata("positions", "alpha", as_of="eod-2026-11-20") == {"w": 2}
    assert store.read_metadata("positions", "alpha") == {"w": 3}
    assert len(store.read("fills", "U1", as_of="eod-2026-11-20")) == 1
    assert len(store.read("fills", "U1")) == 2
    assert isinstance(store.read("positions", "alpha").index, pd.RangeIndex)
    assert store.list_snapshots() == ["eod-2026-11-20"]
    assert len(store.read("portfolio", "U1", as_of="eod-2026-11-20")) == 0
    with pytest.raises(StorageError, match="no-such-snapshot"):
        store.read("positions", "alpha", as_of="no-such-snapshot")
    with pytest.raises(StorageError, match="already exists"):
        store.snapshot("eod-2026-11-20")


def test_as_of_a_timestamp(store: Store) -> None:
    store.commit([SymbolWrite("positions", "alpha", state=positions([1.0]))])
    between = pd.Timestamp.now(tz="UTC")
    deadline = between + pd.Timedelta(seconds=5)
    while pd.Timestamp.now(tz="UTC") <= between and pd.Timestamp.now(tz="UTC") < deadline:
        pass  # the next version must be strictly later than `between`
    store.commit([SymbolWrite("positions", "alpha", state=positions([2.0]))])
    assert list(store.read("positions", "alpha", as_of=between)["qty"]) == [1.0]


def test_empty_state_round_trips_with_schema(store: Store) -> None:
    store.commit([SymbolWrite("portfolio", "U1", state=frame("portfolio", []))])
    got = store.read("portfolio", "U1")
    assert len(got) == 0
    assert {c: str(t) for c, t in got.dtypes.items()} == SCHEMAS["portfolio"]
    assert store.list_symbols("portfolio") == ["U1"]


def test_metadata_only_commit_creates_an_empty_symbol(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills([]), metadata={"watermark": 9})])
    assert store.read_metadata("fills", "U1") == {"watermark": 9}
    assert len(store.read("fills", "U1")) == 0
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
    assert prices(store) == [("a", 1.0)]


def test_prune_keeps_latest_and_snapshotted_versions(store: Store) -> None:
    for q in (1.0, 2.0, 3.0):
        store.commit([SymbolWrite("positions", "alpha", state=positions([q]))])
    store.snapshot("eod-a")
    for q in (4.0, 5.0):
        store.commit([SymbolWrite("positions", "alpha", state=positions([q]))])
    assert store.prune(keep_last=1, grace_seconds=3600.0) == 0  # all inside the grace period
    removed = store.prune(keep_last=1, grace_seconds=0.0)
    assert removed == 3  # versions 0, 1 and 3 (2 is in the snapshot, 4 is the latest)
    assert list(store.read("positions", "alpha")["qty"]) == [5.0]
    assert list(store.read("positions", "alpha", as_of="eod-a")["qty"]) == [3.0]
    assert len(store.read("positions", "alpha", as_of=0)) == 0


def test_closed_store_refuses_commits(store: Store) -> None:
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])


def test_versions_line_up_across_stores_and_metadata_lands_on_the_last(store: Store) -> None:
    store.commit([SymbolWrite("fills", "U1", rows=fills(
        [("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0), ("2026-01-03", "c", 3.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-04", "d", 4.0)]))])
    store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02 12:00", "x", 9.0)]))])
    # move c (not the tail) before b, and d (the tail) after it: several ArcticDB versions
    store.commit([SymbolWrite("fills", "U1", metadata={"watermark": 7}, rows=fills(
        [("2026-01-01 12:00", "c", 30.0), ("2026-01-05", "d", 40.0)]))])
    assert prices(store) == [("a", 1.0), ("c", 30.0), ("b", 2.0), ("x", 9.0), ("d", 40.0)]
    versions = store.list_versions("fills", "U1")
    # write, append, late update; then one update replacing c's old row and d after the
    # remaining tail, and one update inserting c at its new (late) time
    assert versions == [0, 1, 2, 3, 4]
    assert store.read_metadata("fills", "U1") == {"watermark": 7}
    assert store.read_metadata("fills", "U1", as_of=3) is None
    assert len(store.read("fills", "U1", as_of=2)) == 5
    between = list(store.read("fills", "U1", as_of=3)["exec_id_base"])
    assert between == ["a", "b", "x", "d"]  # removal first: c missing for a moment, never twice


def test_text_subclasses_and_string_dtype_are_stored_as_plain_str(store: Store) -> None:
    from backend.core.model import Side

    rows = fills([("2026-01-01", "a", 1.0), ("2026-01-02", "b", 2.0)])
    rows["side"] = pd.Series([Side.BUY, Side.SELL], index=rows.index, dtype=object)
    rows["symbol"] = rows["symbol"].astype("string")
    store.commit([SymbolWrite("fills", "U1", rows=rows)])
    got = store.read("fills", "U1")
    assert list(got["side"]) == ["BUY", "SELL"]
    assert [type(v) for v in got["side"]] == [str, str]
    assert got["symbol"].dtype == object


def test_a_committed_frame_is_neither_changed_nor_aliased(store: Store) -> None:
    """The schema-exact hot path takes a shallow copy: the caller's frame keeps its own index,
    and writing into it after the commit does not reach what the store holds."""
    rows = fills([("2026-01-01 10:00", "a", 1.0), ("2026-01-01 10:00", "b", 2.0)])
    before_index = rows.index.copy()
    store.commit([SymbolWrite("fills", "U1", rows=rows)])
    assert rows.index.equals(before_index)  # the nanosecond offset went on the store's copy
    rows.loc[rows.index[0], "price"] = 99.0
    rows.loc[rows.index[0], "symbol"] = "MSFT"
    got = store.read("fills", "U1")
    assert list(got["price"]) == [1.0, 2.0]
    assert list(got["symbol"]) == ["AAPL", "AAPL"]
    assert got.index[1] - got.index[0] == pd.Timedelta(1, "ns")
