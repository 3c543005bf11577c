"""PM test setup.

ArcticDB waits ``StorageLock.WaitMs`` (1 s by default) before it compacts the symbol
list of a library that has none yet, so the first ``list_symbols`` of each library on a fresh
root costs ~1 s (6 s per fresh root for the manager's recovery). Every test here starts on a
fresh root in one process, so the wait is lowered for this test process only; the behaviour
under test is unchanged (one writer, no concurrent compaction).
"""

from __future__ import annotations

from arcticdb_ext import set_config_int  # type: ignore[import-not-found]

set_config_int("StorageLock.InitialWaitMs", 10)
set_config_int("StorageLock.WaitMs", 10)
