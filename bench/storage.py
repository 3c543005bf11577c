"""Storage benchmark: batched commits vs 1-row appends; reads before/after compaction.

Everything is measured in one run on a fresh ``lmdb://`` root in a temp directory, and printed
as ratios against the baseline of the same run (absolute times on a shared machine are noise).
The last line is a JSON object.

    .venv/bin/python bench/storage.py [--live-batches 1500] [--symbols 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.storage import SymbolWrite
from backend.storage.arctic import ArcticStore
from backend.storage.handles import DEFAULT_COMPACT_EVERY
from backend.storage.schema import SCHEMAS

T0 = pd.Timestamp("2026-11-20 14:30", tz="UTC")


def fills_frame(start: int, n: int, account: str) -> pd.DataFrame:
    """``n`` fills with exec ids ``account-start..``, one microsecond apart from ``start``."""
    idx = np.arange(start, start + n)
    cols: dict[str, Any] = {}
    for name, dtype in SCHEMAS["fills"].items():
        if dtype == "float64":
            cols[name] = np.full(n, 1.5)
        elif dtype == "int64":
            cols[name] = idx.astype(np.int64)
        elif dtype == "object":
            cols[name] = np.array([f"{account}-{i}" for i in idx], dtype=object)
        else:
            cols[name] = np.full(n, np.datetime64("2026-11-20T14:30:00", "ns"))
    times = T0 + pd.to_timedelta(idx, unit="us")
    return pd.DataFrame(cols, index=pd.DatetimeIndex(times, name="time"))


def bench_batched(root: Path, symbols: int, batches: int, rows: int) -> float:
    """rows/s of commits that each carry ``rows`` rows for each of ``symbols`` symbols."""
    commits = [
        [
            SymbolWrite("fills", f"U{s}", rows=fills_frame(b * rows, rows, f"U{s}"))
            for s in range(symbols)
        ]
        for b in range(batches)
    ]
    store = ArcticStore(f"lmdb://{root}", compact_every=None)
    try:
        t = time.perf_counter()
        for writes in commits:
            store.commit(writes)
        return batches * symbols * rows / (time.perf_counter() - t)
    finally:
        store.close()


def bench_single(root: Path, n: int, compact_every: int | None) -> tuple[float, list[float]]:
    """rows/s of 1-row commits to one symbol, and each commit's latency (s)."""
    frames = [fills_frame(i, 1, "U1") for i in range(n)]
    store = ArcticStore(f"lmdb://{root}", compact_every=compact_every)
    try:
        lat = []
        for frame in frames:
            t1 = time.perf_counter()
            store.commit([SymbolWrite("fills", "U1", rows=frame)])
            lat.append(time.perf_counter() - t1)
        return n / sum(lat), lat
    finally:
        store.close()


def timed_read(store: ArcticStore, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        store.read("fills", "U1")
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live-batches", type=int, default=1500,
                        help="1-row commits to one symbol (default 1500)")
    parser.add_argument("--symbols", type=int, default=20)
    args = parser.parse_args(argv)
    n = args.live_batches
    window = max(1, n // 10)
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        base = Path(tmp)
        batched = bench_batched(base / "batched", args.symbols, batches=50, rows=50)
        single, lat_raw = bench_single(base / "single", n, compact_every=None)
        print(f"batched path ({args.symbols} symbols x 50 rows per commit): {batched:,.0f} rows/s")
        print(f"1-row commits: {single:,.0f} rows/s  -> batched is {batched / single:.1f}x")

        store = ArcticStore(f"lmdb://{base / 'single'}", compact_every=None)
        try:
            read_fragmented = timed_read(store)
            t = time.perf_counter()
            store.compact("fills")
            compact_s = time.perf_counter() - t
            read_compacted = timed_read(store)
        finally:
            store.close()
        print(f"read after {n} live 1-row commits: {read_fragmented * 1e3:.1f} ms; after "
              f"compaction ({compact_s:.2f} s): {read_compacted * 1e3:.1f} ms "
              f"-> {read_fragmented / read_compacted:.1f}x faster")

        _, lat_inline = bench_single(base / "inline", n, compact_every=DEFAULT_COMPACT_EVERY)
        store = ArcticStore(f"lmdb://{base / 'inline'}", writer=False)
        try:
            read_inline = timed_read(store)
        finally:
            store.close()
        print(f"read after {n} live 1-row commits with inline compaction every "
              f"{DEFAULT_COMPACT_EVERY}: {read_inline * 1e3:.1f} ms")
    first_raw = statistics.median(lat_raw[:window])
    last_raw = statistics.median(lat_raw[-window:])
    last_inline = statistics.median(lat_inline[-window:])
    first_inline = statistics.median(lat_inline[:window])
    print(f"1-row commit latency, first vs last {window}: no compaction "
          f"{first_raw * 1e3:.1f} -> {last_raw * 1e3:.1f} ms ({last_raw / first_raw:.2f}x); "
          f"inline compaction every {DEFAULT_COMPACT_EVERY} writes {first_inline * 1e3:.1f} -> "
          f"{last_inline * 1e3:.1f} ms ({last_inline / first_inline:.2f}x)")
    result = {
        "batched_rows_per_s": round(batched),
        "single_row_rows_per_s": round(single),
        "batched_vs_single": round(batched / single, 2),
        "live_batches": n,
        "read_ms_fragmented": round(read_fragmented * 1e3, 2),
        "read_ms_compacted": round(read_compacted * 1e3, 2),
        "read_speedup_after_compaction": round(read_fragmented / read_compacted, 2),
        "read_ms_inline_compaction": round(read_inline * 1e3, 2),
        "append_latency_growth_no_compaction": round(last_raw / first_raw, 2),
        "append_latency_growth_inline_compaction": round(last_inline / first_inline, 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
