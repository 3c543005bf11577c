"""The index-normalization helper on its own."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from backend.errors import InvalidFieldError, UnsortedIndexError
from backend.storage.index import Occupied, assign_unique, normalize_rows, to_utc_index


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
