"""THE index normalization of the journal libraries: every step lives here, and the one
persistence path (:mod:`backend.storage.plan`, executed by both stores) calls it.

A journal symbol's index is a tz-aware UTC ``DatetimeIndex`` named ``time``, sorted and unique.
Getting there from what callers hand in:

1. :func:`to_utc_index` (``plan.prepare``, per ``SymbolWrite``, so writes of one symbol in
   different zones can be merged): naive input takes a declared zone (``naive_tz``; refused
   when none is declared, because a naive time is ambiguous), aware input is converted to UTC,
   NaT refused.
2. :func:`normalize_rows` (``plan.prepare``, per symbol, once its writes are merged and
   duplicate keys dropped): rows sorted by time (stable, so equal times keep their input order)
   and made unique within the batch by nanosecond offsets.
3. :func:`assign_unique` (``plan.plan_journal``, against the symbol's stored times, an
   :class:`Occupied`): the same offsets, also against timestamps already stored (the stored
   tail and, for late rows, every stored timestamp): a row never lands on a stored row's time.
   Applied to rows that step 2 already made unique it gives the same times as one pass over
   the raw times would.

Offsets move a row forward by whole nanoseconds to the next free instant, so the order of
equal-time rows is their input order and a round trip through ArcticDB keeps every row.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from backend.errors import InvalidFieldError, UnsortedIndexError
from backend.storage.schema import INDEX_NAME


def to_utc_index(index: pd.Index, *, naive_tz: str | None = None) -> pd.DatetimeIndex:
    """``index`` as a tz-aware UTC ``DatetimeIndex[ns]`` named ``time`` (order unchanged).

    Naive values are taken to be in ``naive_tz`` (e.g. ``"America/New_York"``); without a
    declared zone they are refused. NaT is refused (ArcticDB rejects it too).
    """
    if len(index) == 0:  # nothing to be ambiguous about
        return pd.DatetimeIndex([], dtype="datetime64[ns, UTC]", name=INDEX_NAME)
    if not isinstance(index, pd.DatetimeIndex):
        if index.inferred_type not in ("datetime64", "datetime", "date"):
            # e.g. a RangeIndex would silently become 1970 timestamps
            raise InvalidFieldError(
                INDEX_NAME, type(index).__name__, "the index must hold timestamps"
            )
        try:
            index = pd.DatetimeIndex(index)
        except (TypeError, ValueError) as exc:
            raise InvalidFieldError(
                INDEX_NAME, type(index).__name__, f"must be a DatetimeIndex ({exc})"
            ) from exc
    if index.hasnans:
        raise InvalidFieldError(INDEX_NAME, "NaT", "the index must not contain NaT")
    if index.tz is None:
        if naive_tz is None:
            raise InvalidFieldError(
                INDEX_NAME,
                str(index[0]) if len(index) else "naive",
                "naive times need a declared zone (naive_tz=...) or tz-aware input",
            )
        index = index.tz_localize(naive_tz, ambiguous="raise", nonexistent="raise")
    out = index.tz_convert("UTC").as_unit("ns")
    out.name = INDEX_NAME
    return out


class Occupied:
    """Sorted nanosecond timestamps already taken in a symbol (what offsets must avoid)."""

    __slots__ = ("_times",)

    def __init__(self, times: Sequence[int] = ()) -> None:
        self._times: list[int] = sorted(int(t) for t in times)

    def __contains__(self, ts: object) -> bool:
        if not isinstance(ts, int):
            return False
        i = bisect.bisect_left(self._times, ts)
        return i < len(self._times) and self._times[i] == ts

    def __len__(self) -> int:
        return len(self._times)

    @property
    def tail(self) -> int | None:
        """The greatest stored timestamp (ns) or None when empty."""
        return self._times[-1] if self._times else None

    def add(self, ts: int) -> None:
        if self._times and ts > self._times[-1]:
            self._times.append(ts)  # the hot path: appends at the tail
        else:
            bisect.insort(self._times, ts)

    def extend(self, times: Sequence[int]) -> None:
        """Add every time of ``times`` (a batch's times, strictly increasing): one list
        extend when they all come after the tail (the hot path), else one by one."""
        if times and (not self._times or times[0] > self._times[-1]):
            self._times.extend(times)
        else:
            for ts in times:
                self.add(ts)

    def remove(self, ts: int) -> None:
        i = bisect.bisect_left(self._times, ts)
        if i < len(self._times) and self._times[i] == ts:
            del self._times[i]

    def count_between(self, lo: int, hi: int) -> int:
        """How many stored timestamps t satisfy lo < t < hi."""
        return bisect.bisect_left(self._times, hi) - bisect.bisect_right(self._times, lo)

    def copy(self) -> Occupied:
        out = Occupied()
        out._times = list(self._times)
        return out


def assign_unique(times_ns: np.ndarray, occupied: Occupied | None = None) -> np.ndarray:
    """Make sorted ``times_ns`` strictly increasing and free of ``occupied`` timestamps.

    Each time moves forward by whole nanoseconds to the first instant that is after the
    previous row of the batch and not occupied. Input must be sorted (non-decreasing).
    """
    times = np.asarray(times_ns, dtype=np.int64)
    if len(times) == 0:
        return times.copy()
    if np.any(np.diff(times) < 0):
        raise UnsortedIndexError("assign_unique: times must be sorted before offsets are assigned")
    tail = occupied.tail if occupied is not None else None
    # Fast path (the live hot path): strictly increasing and all after the stored tail.
    if bool(np.all(np.diff(times) > 0)) and (tail is None or int(times[0]) > tail):
        return times.copy()
    out = np.empty_like(times)
    prev: int | None = None
    for i, raw in enumerate(times.tolist()):
        t = raw if prev is None else max(raw, prev + 1)
        if occupied is not None:
            while t in occupied:
                t += 1
        out[i] = t
        prev = t
    return out


def normalize_rows(
    frame: pd.DataFrame, *, naive_tz: str | None = None, occupied: Occupied | None = None,
    owned: bool = False,
) -> pd.DataFrame:
    """``frame``'s rows with a UTC index named ``time``, sorted (stable) and unique: a new
    frame, ``frame`` left as it is, unless ``owned=True`` (the caller's own copy), where
    already sorted rows are not copied again: ``frame`` itself gets the index and is returned.

    Uniqueness is within the batch and, when ``occupied`` is given, against stored times.
    """
    index = to_utc_index(frame.index, naive_tz=naive_tz)
    raw = times_ns(index)
    if len(raw) > 1 and bool(np.any(raw[1:] < raw[:-1])):
        order = np.argsort(raw, kind="stable")
        out = frame.take(order)  # a new frame the caller owns (``take`` sets no _is_copy)
        index, raw = index.take(order), raw[order]
    else:
        out = frame if owned else frame.copy()
    times = assign_unique(raw, occupied)
    # the hot path (already unique): keep the UTC index rather than rebuild it (~60 us)
    out.index = index if np.array_equal(times, raw) else ns_index(times)
    return out


def times_ns(index: pd.Index) -> npt.NDArray[np.int64]:
    """The int64 nanoseconds (UTC epoch) of a DatetimeIndex."""
    return np.asarray(cast(Any, index).asi8, dtype=np.int64)


def ns_index(times_ns: np.ndarray | Sequence[int]) -> pd.DatetimeIndex:
    """A UTC ``DatetimeIndex`` named ``time`` from int64 nanoseconds since the epoch."""
    arr = np.asarray(times_ns, dtype=np.int64)
    return pd.DatetimeIndex(pd.to_datetime(arr, unit="ns", utc=True), name=INDEX_NAME)


def ts_ns(value: pd.Timestamp | str | None, *, naive_tz: str = "UTC") -> int | None:
    """A bound as int64 ns UTC (naive bounds are taken in ``naive_tz``, UTC by default)."""
    if value is None:
        return None
    ts: Any = pd.Timestamp(value)
    if pd.isna(ts):
        return None
    ts = ts.tz_localize(naive_tz) if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)
