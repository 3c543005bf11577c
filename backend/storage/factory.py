"""Opening stores by URI; asking about the writer lease without taking it."""

from __future__ import annotations

from backend.storage.api import Store
from backend.storage.uri import parse_uri


def open_store(
    uri: str,
    *,
    writer: bool = True,
    naive_tz: str | None = None,
    compact_every: int | None = None,
) -> Store:
    """Open the store at ``uri``.

    * ``lmdb:///path`` (default map size added when absent), ``mem://[NAME]``, ``s3://...``:
      an :class:`~backend.storage.arctic.ArcticStore`. ``writer=True`` takes the root's
      exclusive lease (raises :class:`~backend.errors.WriterLeaseError` naming the holder);
      ``writer=False`` takes none and cannot commit.
    * ``memory://``: a fresh :class:`~backend.storage.memory.MemoryStore` (tests).

    ``naive_tz`` is the zone that naive journal timestamps are declared in (None: naive
    timestamps are refused). ``compact_every`` (writers) compacts a journal symbol after
    that many writes to it (inline, or by ``compact_due()`` for commits made with
    ``compact=False``); None keeps the store's default, 0 disables.
    """
    parsed = parse_uri(uri)
    if parsed.kind == "memory":
        from backend.storage.memory import MemoryStore

        return MemoryStore(uri, naive_tz=naive_tz)
    from backend.storage.arctic import ArcticStore
    from backend.storage.handles import DEFAULT_COMPACT_EVERY

    every = DEFAULT_COMPACT_EVERY if compact_every is None else compact_every
    return ArcticStore(uri, writer=writer, naive_tz=naive_tz, compact_every=every or None)


def try_open_writer(
    uri: str, *, naive_tz: str | None = None, compact_every: int | None = None
) -> Store | None:
    """A writer store, or None when another process (or store) holds the lease."""
    from backend.errors import WriterLeaseError

    try:
        return open_store(uri, writer=True, naive_tz=naive_tz, compact_every=compact_every)
    except WriterLeaseError:
        return None


def lease_holder(uri: str) -> str | None:
    """Who holds the writer lease of ``uri`` (``pid=.. host=.. since=..``), None when free.

    Does not take the lease. Always None for ``s3://`` (no lock there) and ``memory://``.
    """
    from backend.storage import lease

    parsed = parse_uri(uri)
    if parsed.kind in ("lmdb", "mem"):
        return lease.holder(parsed.kind, parsed.root)
    return None
