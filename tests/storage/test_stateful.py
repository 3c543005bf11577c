"""Random appends, late inserts and keyed corrections: the store and a pure model agree."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable

import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backend.storage import Store, SymbolWrite, open_store
from backend.storage.arctic import ArcticStore
from backend.storage.index import times_ns

from .rows import fills, rejects

BASE = pd.Timestamp("2026-11-20 14:30", tz="UTC").value
KEYS = [f"k{i}" for i in range(8)]

# A time is BASE + n * unit: nanosecond units collide with the offsets the store assigns,
# second units spread rows out; both kinds land before, inside and after the stored rows.
times = st.builds(lambda n, unit: BASE + n * unit, st.integers(0, 12), st.sampled_from([1, 10**9]))
fill_rows = st.lists(
    st.tuples(times, st.sampled_from(KEYS), st.integers(1, 10**6)), min_size=1, max_size=6
)


class Model:
    """The contract, stated directly: rows by time; a key's row is replaced wherever it is."""

    def __init__(self) -> None:
        self.fills: dict[int, tuple[str, float]] = {}  # time ns -> (key, price)
        self.rejects: dict[int, str] = {}

    @staticmethod
    def _place(raw: list[int], taken: set[int]) -> list[int]:
        out: list[int] = []
        prev: int | None = None
        for t in raw:  # raw is sorted; move forward to the next free nanosecond
            placed = t if prev is None else max(t, prev + 1)
            while placed in taken:
                placed += 1
            out.append(placed)
            prev = placed
        return out

    def commit_fills(self, batch: list[tuple[int, str, int]]) -> None:
        last: dict[str, tuple[int, int]] = {}
        for t, key, price in batch:
            last.pop(key, None)
            last[key] = (t, price)  # the last row of a key in a commit wins
        rows = sorted(((t, key, float(p)) for key, (t, p) in last.items()), key=lambda r: r[0])
        for time_ns, (key, _) in list(self.fills.items()):
            if key in last:
                del self.fills[time_ns]
        placed = self._place([t for t, _, _ in rows], set(self.fills))
        for t, (_, key, fprice) in zip(placed, rows, strict=True):
            self.fills[t] = (key, fprice)

    def commit_rejects(self, raw_times: list[int], text: str) -> None:
        placed = self._place(sorted(raw_times), set(self.rejects))
        for t in placed:
            self.rejects[t] = text


class StoreVsModel(RuleBasedStateMachine):
    open_uri: Callable[[], str] = staticmethod(lambda: "memory://")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="storage-stateful-")
        self.uri = type(self).open_uri().replace("TMP", self.tmp)
        self.store: Store = open_store(self.uri)
        self.model = Model()
        self.reject_seq = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _fills_frame(self, batch: list[tuple[int, str, int]]) -> pd.DataFrame:
        frame = fills([("2026-01-01", key, float(price)) for _, key, price in batch])
        frame.index = pd.DatetimeIndex(pd.to_datetime([t for t, _, _ in batch], utc=True))
        return frame

    @rule(batch=fill_rows)
    def commit_fills(self, batch: list[tuple[int, str, int]]) -> None:
        self.store.commit([SymbolWrite("fills", "U1", rows=self._fills_frame(batch))])
        self.model.commit_fills(batch)

    @precondition(lambda self: bool(self.model.fills))
    @rule(data=st.data())
    def append_after_tail(self, data: st.DataObject) -> None:
        tail = max(self.model.fills)
        n = data.draw(st.integers(1, 4))
        batch = [(tail + 10**9 * (i + 1), f"new{len(self.model.fills)}_{i}", 7) for i in range(n)]
        self.store.commit([SymbolWrite("fills", "U1", rows=self._fills_frame(batch))])
        self.model.commit_fills(batch)

    @precondition(lambda self: bool(self.model.fills))
    @rule(data=st.data(), when=times, price=st.integers(1, 100))
    def correct_existing(self, data: st.DataObject, when: int, price: int) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, _ in self.model.fills.values())))
        batch = [(when, key, price)]
        self.store.commit([SymbolWrite("fills", "U1", rows=self._fills_frame(batch))])
        self.model.commit_fills(batch)

    @rule(raw=st.lists(times, min_size=1, max_size=4))
    def commit_rejects(self, raw: list[int]) -> None:
        self.reject_seq += 1
        text = f'{{"n": {self.reject_seq}}}'
        frame = rejects([("2026-01-01", text)] * len(raw))
        frame.index = pd.DatetimeIndex(pd.to_datetime(raw, utc=True))
        self.store.commit([SymbolWrite("rejects", "_unknown", rows=frame)])
        self.model.commit_rejects(raw, text)

    @rule()
    def reopen(self) -> None:
        """A new writer starts from what is stored (its key index is loaded lazily)."""
        if self.uri.startswith("memory://"):
            return  # the twin has nothing but memory
        self.store.close()
        self.store = open_store(self.uri)

    @invariant()
    def reads_agree_with_the_model(self) -> None:
        got = self.store.read("fills", "U1")
        assert got.index.is_unique
        assert got.index.is_monotonic_increasing
        assert str(got.index.dtype) == "datetime64[ns, UTC]"
        want = sorted(self.model.fills.items())
        assert list(times_ns(got.index)) == [t for t, _ in want]
        assert list(zip(got["exec_id_base"], got["price"], strict=True)) == [v for _, v in want]
        if isinstance(self.store, ArcticStore) and self.model.fills:
            description = self.store.describe("fills", "U1")
            assert description is not None
            assert description["sorted"] == "ASCENDING"  # ArcticDB's own flag, never UNSORTED
            assert description["rows"] == len(want)
        rej = self.store.read("rejects", "_unknown")
        assert list(times_ns(rej.index)) == sorted(self.model.rejects)
        assert list(rej["raw"]) == [self.model.rejects[t] for t in sorted(self.model.rejects)]


class MemoryMachine(StoreVsModel):
    open_uri = staticmethod(lambda: "memory://")


class LmdbMachine(StoreVsModel):
    open_uri = staticmethod(lambda: "lmdb://TMP/arctic")


_SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]

TestMemoryStoreAgreesWithModel = MemoryMachine.TestCase
TestMemoryStoreAgreesWithModel.settings = settings(
    max_examples=80, stateful_step_count=20, deadline=None, database=None,
    suppress_health_check=_SLOW,
)
TestLmdbStoreAgreesWithModel = LmdbMachine.TestCase
TestLmdbStoreAgreesWithModel.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None, database=None,
    suppress_health_check=_SLOW,
)
