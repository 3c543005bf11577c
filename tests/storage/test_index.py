"""Index normalization (backend/storage/index.py) on its own, and that the persistence path
uses it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import InvalidFieldError, UnsortedIndexError
from backend.storage import SymbolWrite, plan
from backend.storage.index import Occupied, assign_unique, normalize_rows, to_utc_index

from .rows import fills, positions


def test_naive_takes_the_declared_zone_and_aware_goes_to_utc() -> None:
    naive = pd.DatetimeIndex(["2026-07-01 09:30"])
    assert to_utc_index(naive, naive_tz="America/New_York")[0] == pd.Timestamp(
        "2026-07-01 13:30", tz="UTC")
    aware = pd.DatetimeIndex([pd.Timestamp("2026-07-01 09:30", tz="Europe/Zurich")])
    out = to_utc_index(aware)
    assert str(out.dtype) == "datetime64[ns, UTC]"
    assert out.name == "time"
    assert out[0] == pd.Timestamp("2026-07-01 07:30", tz="UTC")
    objects = pd.Index([datetime(2026, 7, 1, 9, 30, tzinfo=UTC)], dtype=object)
    assert to_utc_index(objects)[0] == pd.Timestamp("2026-07-01 09:30", tz="UTC")


@pytest.mark.parametrize(
    "index",
    [pd.DatetimeIndex(["2026-07-01"]), pd.RangeIndex(2), pd.DatetimeIndex(["2026-07-01", None])],
)
def test_refused_indexes_name_the_field(index: pd.Index) -> None:
    with pytest.raises(InvalidFieldError, match="time"):
        to_utc_index(index, naive_tz=None if len(index) == 1 else "UTC")


def test_offsets_within_the_batch_and_against_stored_times() -> None:
    stored = Occupied([10, 11, 20])
    got = assign_unique(np.array([5, 5, 10, 10, 25]), stored)
    assert got.tolist() == [5, 6, 12, 13, 25]
    assert assign_unique(np.array([30, 31]), stored).tolist() == [30, 31]  # fast path
    with pytest.raises(UnsortedIndexError):
        assign_unique(np.array([2, 1]))


def test_normalize_rows_sorts_stably_and_keeps_input_order_of_ties() -> None:
    t = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame(
        {"v": ["late", "first", "second"]},
        index=pd.DatetimeIndex([t + pd.Timedelta(seconds=1), t, t]),
    )
    out = normalize_rows(frame)
    assert list(out["v"]) == ["first", "second", "late"]
    assert list(out.index) == [t, t + pd.Timedelta(1, "ns"), t + pd.Timedelta(seconds=1)]


def test_normalize_rows_leaves_its_input_alone_and_refuses_naive_without_zone() -> None:
    t = pd.Timestamp("2026-01-01 09:30")
    frame = pd.DataFrame({"v": ["b", "a"]}, index=pd.DatetimeIndex([t, t - pd.Timedelta(1)]))
    out = normalize_rows(frame, naive_tz="America/New_York")
    assert list(out["v"]) == ["a", "b"]
    assert out.index[1] == pd.Timestamp("2026-01-01 14:30", tz="UTC")
    assert pd.DatetimeIndex(frame.index).tz is None  # a new frame: the caller's frame is unchanged
    assert list(frame["v"]) == ["b", "a"]
    with pytest.raises(InvalidFieldError, match="naive"):
        normalize_rows(frame)


def test_normalize_rows_owned_reuses_a_sorted_frame_and_copies_an_unsorted_one() -> None:
    """``owned=True`` (the store's own copy): sorted rows get their unique index in place;
    unsorted rows still come back as a new frame and the input keeps its order."""
    t = pd.Timestamp("2026-01-01", tz="UTC")
    sorted_frame = pd.DataFrame({"v": ["a", "b"]}, index=pd.DatetimeIndex([t, t]))
    out = normalize_rows(sorted_frame, owned=True)
    assert out is sorted_frame
    assert list(sorted_frame.index) == [t, t + pd.Timedelta(1, "ns")]
    unsorted = pd.DataFrame({"v": ["b", "a"]},
                            index=pd.DatetimeIndex([t + pd.Timedelta(seconds=1), t]))
    out = normalize_rows(unsorted, owned=True)
    assert out is not unsorted
    assert list(out["v"]) == ["a", "b"]
    assert list(unsorted["v"]) == ["b", "a"]


def test_the_persistence_path_normalizes_with_normalize_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``plan.prepare`` (both stores' commit path) calls index.normalize_rows once per journal
    symbol of a commit, after merging its writes: one module owns index normalization."""
    seen: list[list[str]] = []

    def spy(frame: pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
        seen.append(list(frame["exec_id_base"]))
        return normalize_rows(frame, **kwargs)

    monkeypatch.setattr(plan, "normalize_rows", spy)
    t = "2026-01-01 10:00"
    prepared = plan.prepare([
        SymbolWrite("fills", "U1", rows=fills([(t, "b", 2.0), ("2026-01-01 09:00", "a", 1.0)])),
        SymbolWrite("fills", "U1", rows=fills([(t, "c", 3.0)])),
        SymbolWrite("fills", "U2", rows=fills([(t, "x", 1.0)])),
        SymbolWrite("positions", "alpha", state=positions([1.0])),
    ])
    assert seen == [["b", "a", "c"], ["x"]]  # merged in commit order, then normalized
    (u1, u2, state) = prepared
    assert u1.rows is not None
    assert u2.rows is not None
    assert list(u2.rows.index) == [pd.Timestamp(t, tz="UTC")]
    assert state.rows is None  # state symbols have a RangeIndex: nothing to normalize
    assert list(u1.rows["exec_id_base"]) == ["a", "b", "c"]
    base = pd.Timestamp(t, tz="UTC")
    assert list(u1.rows.index) == [pd.Timestamp("2026-01-01 09:00", tz="UTC"), base,
                                   base + pd.Timedelta(1, "ns")]


@given(
    raw=st.lists(st.integers(0, 40), min_size=0, max_size=30).map(sorted),
    stored=st.lists(st.integers(0, 60), max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_batch_offsets_then_stored_offsets_equal_one_pass(raw: list[int],
                                                          stored: list[int]) -> None:
    """What the two-step path (normalize_rows in prepare, then assign_unique against the
    stored times in plan_journal) gives is what one pass over the raw times would give."""
    times = np.array(raw, dtype=np.int64)
    two_step = assign_unique(assign_unique(times), Occupied(stored))
    one_pass = assign_unique(times, Occupied(stored))
    assert two_step.tolist() == one_pass.tolist()
    assert set(one_pass.tolist()).isdisjoint(stored)
    assert all(a < b for a, b in zip(one_pass.tolist(), one_pass.tolist()[1:], strict=False))
