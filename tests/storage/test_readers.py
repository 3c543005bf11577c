"""Readers in another process than the writer: no lease, and a pruned version is retried."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from backend.errors import StorageError
from backend.storage import open_store

WRITER = """
import sys
import pandas as pd
sys.path.insert(0, {tests!r})
from rows import fills
from backend.storage import SymbolWrite, open_store
store = open_store({uri!r}, compact_every=0)
store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "e0", 1.0)]))])
print("READY", flush=True)
for i in range(1, {n}):
    t = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i)
    store.commit([SymbolWrite("fills", "U1", rows=fills([(str(t), f"e{{i}}", 1.0)]))])
    store.prune(keep_last=1, grace_seconds=0.0)  # the worst case: prune under every read
store.close()
"""


def test_reader_survives_versions_pruned_under_it(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'arctic'}"
    n = 80
    code = WRITER.format(tests=str(Path(__file__).parent), uri=uri, n=n)
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "READY"
        reader = open_store(uri, writer=False)
        reads, errors, lengths = 0, [], []
        try:
            while writer.poll() is None:
                try:
                    lengths.append(len(reader.read("fills", "U1")))
                    reads += 1
                except StorageError as exc:
                    errors.append(str(exc))
            writer.wait(timeout=120)
            # another process sees the last write after up to ~2 s (ArcticDB's version cache)
            deadline = time.monotonic() + 30
            final = reader.read("fills", "U1")
            while len(final) < n and time.monotonic() < deadline:
                final = reader.read("fills", "U1")
        finally:
            reader.close()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=60)
        writer.stdout.close()
    assert writer.returncode == 0
    assert errors == []
    assert reads > 0
    assert lengths == sorted(lengths)  # row counts never go backwards
    assert list(final["exec_id_base"]) == [f"e{i}" for i in range(n)]
