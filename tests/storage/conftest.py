"""Fixtures: the same contract runs on the twin and on real ArcticDB (mem:// and lmdb://)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from arcticdb.config import set_config_int

from backend.storage import Store, open_store

# ArcticDB's storage lock (symbol-list compaction, snapshots) waits StorageLock.WaitMs (1 s) to
# detect a competing locker; every fresh test root pays it per library. Tests have no competing
# lockers, so a short window keeps the suite fast. Production keeps the default.
set_config_int("StorageLock.WaitMs", 5)

KINDS = ["memory", "mem", "lmdb"]


def store_uri(kind: str, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "mem":
        return "mem://"
    return f"lmdb://{tmp_path / 'arctic'}"


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def store(store_kind: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(store_uri(store_kind, tmp_path))
    try:
        yield s
    finally:
        s.close()
