"""``reconciliation`` is the one library several processes append to (the running
PortfolioManager's reconciler and the cron job). Its writes are serialized by a short lock and
reload the version chain, so concurrent writers lose nothing; every other library still needs
the writer lease."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.errors import StorageError
from backend.reconcile.persist import report_frame, report_write
from backend.storage import Store, SymbolWrite, open_store
from backend.storage.schema import FILLS, RECONCILIATION

from .rows import fills

PER_WRITER = 25
T0 = datetime(2026, 11, 20, 21, 0, tzinfo=UTC)


def _append_reports(store: Store, writer_no: int) -> None:
    for i in range(PER_WRITER):
        started = T0 + timedelta(seconds=i)  # every writer uses the same times
        frame = report_frame({"writer": writer_no, "i": i}, run_id=f"w{writer_no}-{i}",
                             started_at=started, finished_at=started, gateway="sim",
                             outcome="clean", breaks=0)
        store.commit([report_write("DU111", frame, None)])


_CHILD = """
from datetime import timedelta
from backend.reconcile.persist import report_frame, report_write
from backend.storage import open_store
T0 = {t0!r}
store = open_store({uri!r}, writer=False)
try:
    for i in range({per}):
        started = T0 + timedelta(seconds=i)
        frame = report_frame({{"writer": {n}, "i": i}}, run_id=f"w{n}-{{i}}", started_at=started,
                             finished_at=started, gateway="sim", outcome="clean", breaks=0)
        store.commit([report_write("DU111", frame, None)])
finally:
    store.close()
"""


def test_concurrent_report_writers_in_three_processes_lose_nothing(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    holder = open_store(uri, writer=True)  # a running PortfolioManager holds the lease
    try:
        code = "from datetime import datetime, timezone as tz\n" + _CHILD.replace(
            "{t0!r}", "datetime(2026, 11, 20, 21, 0, tzinfo=tz.utc)")
        children = [subprocess.Popen([sys.executable, "-c",
                                      code.format(uri=uri, n=n, per=PER_WRITER)])
                    for n in (1, 2)]
        try:
            _append_reports(holder, 0)
        finally:
            codes = [child.wait(timeout=90) for child in children]
        assert codes == [0, 0]
    finally:
        holder.close()
    reader = open_store(uri, writer=False)
    try:
        frame = reader.read(RECONCILIATION, "DU111")
    finally:
        reader.close()
    assert len(frame) == 3 * PER_WRITER
    assert frame.index.is_unique
    assert frame.index.is_monotonic_increasing
    assert sorted(frame["run_id"]) == sorted(f"w{n}-{i}" for n in (0, 1, 2)
                                             for i in range(PER_WRITER))


def test_a_reader_store_still_cannot_write_other_libraries(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    open_store(uri, writer=True).close()
    reader = open_store(uri, writer=False)
    try:
        with pytest.raises(StorageError, match="read-only"):
            reader.commit([SymbolWrite(FILLS, "DU111", rows=fills([("2026-11-20", "e.01", 1)]))])
    finally:
        reader.close()
