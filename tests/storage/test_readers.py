"""Readers in another process than the writer: no lease, and a pruned version is retried."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from arcticdb.config import get_config_int, set_config_int

from backend.errors import StorageError
from backend.storage import arctic, lease_holder, open_store
from backend.storage.schema import LIBRARIES, SCHEMAS, STATE_LIBRARIES

from .conftest import store_uri

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


RELOAD = "VersionMap.ReloadInterval"


@pytest.fixture
def cached_version_chains() -> Iterator[None]:
    """ArcticDB's default ~2 s version-chain cache in this process, as a fresh notebook has it
    (an earlier retry in this process may have switched it off for good); restored after."""
    before = get_config_int(RELOAD)
    set_config_int(RELOAD, 2_000_000_000)  # ArcticDB's default (ns)
    try:
        yield
    finally:
        set_config_int(RELOAD, 2_000_000_000 if before is None else before)


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per retry of a read: the reader calls ``refresh_version_cache`` right before
    it retries a read whose version was pruned under it (and nowhere else)."""
    calls: list[int] = []
    original = arctic.refresh_version_cache  # type: ignore[attr-defined]  # patched below

    def counting() -> None:
        calls.append(1)
        original()

    monkeypatch.setattr(arctic, "refresh_version_cache", counting)
    return calls


@pytest.mark.usefixtures("cached_version_chains")
def test_reader_survives_versions_pruned_under_it(tmp_path: Path, retries: list[int]) -> None:
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
    # the reader did read a pruned version, and its retry succeeded (no error surfaced)
    assert len(retries) >= 1
    assert lengths == sorted(lengths)  # row counts never go backwards
    assert list(final["exec_id_base"]) == [f"e{i}" for i in range(n)]


@pytest.mark.parametrize("kind", ["mem", "lmdb"])
def test_reader_on_a_brand_new_root_reads_empty_frames_with_the_schema(
        kind: str, tmp_path: Path) -> None:
    uri = store_uri(kind, tmp_path)
    reader = open_store(uri, writer=False)
    try:
        assert lease_holder(uri) is None  # readers take no lease
        for library in LIBRARIES:
            got = reader.read(library, "U1")
            assert len(got) == 0
            assert {c: str(t) for c, t in got.dtypes.items()} == SCHEMAS[library]
            assert list(got.columns) == list(SCHEMAS[library])
            if library in STATE_LIBRARIES:
                assert list(got.index) == []
            else:
                assert str(got.index.dtype) == "datetime64[ns, UTC]"
                assert got.index.name == "time"
            assert reader.list_symbols(library) == []
            assert reader.read_metadata(library, "U1") is None
        assert reader.list_snapshots() == []
    finally:
        reader.close()
