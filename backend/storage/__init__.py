"""The only code that talks to ArcticDB.

Open a store with :func:`open_store`::

    store = open_store("lmdb:///var/lib/portfolio/arctic")           # writer: takes the lease
    reader = open_store("lmdb:///var/lib/portfolio/arctic", writer=False)  # no lease
    test_store = open_store("memory://")                               # the pure-Python twin

See docs/storage.md for the library contract and the persistence rules.
"""

from __future__ import annotations

from backend.storage.api import Progress, Store, SymbolWrite
from backend.storage.factory import lease_holder, open_store, try_open_writer

__all__ = [
    "Progress",
    "Store",
    "SymbolWrite",
    "lease_holder",
    "open_store",
    "try_open_writer",
]
