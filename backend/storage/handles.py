"""Process-wide ArcticDB handles and the arcticdb-specific details behind ArcticStore.

ONE ``Arctic`` instance per root and ONE ``Library`` object per library per process: a second
Library object for the same library silently loses appends, and LMDB refuses a second open of
a path in one process. The registry hands out shared, reference-counted handles.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backend.errors import StorageError
from backend.storage.schema import KEY_COLUMNS
from backend.storage.uri import ParsedUri

# Keyed libraries receive in-place updates; an update rewrites the whole segment it touches
# (~100 ms for a 100k-row segment, ~9 ms for 10k), so their segments are kept small.
KEYED_ROWS_PER_SEGMENT = 10_000
DEFAULT_ROWS_PER_SEGMENT = 100_000
# Live appends make 1-segment-per-batch symbols; compact after this many writes to a symbol
# (inline, or by compact_due) so append and read cost stay flat (None disables; `portfolio
# compact` also does it).
DEFAULT_COMPACT_EVERY = 100


def library_options(library: str) -> Any:
    """The fixed LibraryOptions of ``library`` (static schema: dtypes never drift)."""
    from arcticdb import LibraryOptions

    rows = KEYED_ROWS_PER_SEGMENT if library in KEY_COLUMNS else DEFAULT_ROWS_PER_SEGMENT
    return LibraryOptions(dynamic_schema=False, dedup=False, rows_per_segment=rows)


@dataclass
class Handle:
    """One Arctic instance and its Library objects, shared in the process."""

    parsed: ParsedUri
    arctic: Any
    libs: dict[str, Any] = field(default_factory=dict)
    refs: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


_REGISTRY: dict[str, Handle] = {}
_REGISTRY_LOCK = threading.Lock()


def acquire_handle(parsed: ParsedUri) -> Handle:
    import arcticdb

    with _REGISTRY_LOCK:
        handle = _REGISTRY.get(parsed.key)
        if handle is None:
            try:
                arctic = arcticdb.Arctic(parsed.arctic_uri)
            except Exception as exc:
                raise StorageError(f"uri={parsed.arctic_uri!r}: cannot open: {exc}") from exc
            handle = Handle(parsed, arctic)
            _REGISTRY[parsed.key] = handle
        handle.refs += 1
        return handle


def release_handle(handle: Handle) -> None:
    with _REGISTRY_LOCK:
        handle.refs -= 1
        if handle.refs <= 0 and _REGISTRY.get(handle.parsed.key) is handle:
            del _REGISTRY[handle.parsed.key]


_WARN_LOCK = threading.Lock()
_NEED_QUIET = False  # set when a Library could not be switched to consolidated frames


def consolidated_frames(lib: Any) -> None:
    """arcticdb 6.28's ``Library`` builds read frames from an unconsolidated BlockManager,
    which pandas 2.3 deprecates with a DeprecationWarning on EVERY read (warnings are errors in
    our tests, and noise in notebooks). Switch this Library back to the plain constructor
    (one extra copy per read, negligible here); if the private switch is gone, fall back to
    filtering the warning around our reads."""
    global _NEED_QUIET
    normalizer = getattr(getattr(getattr(lib, "_nvs", None), "_normalizer", None), "df", None)
    if normalizer is not None and hasattr(normalizer, "_skip_df_consolidation"):
        normalizer._skip_df_consolidation = False
    else:
        _NEED_QUIET = True


@contextlib.contextmanager
def quiet_reads() -> Iterator[None]:
    """Fallback for :func:`consolidated_frames`: filter that DeprecationWarning. Only used
    when needed, because ``catch_warnings`` swaps a process-global list (hence the lock)."""
    if not _NEED_QUIET:
        yield
        return
    with _WARN_LOCK, warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*BlockManagerUnconsolidated.*", category=DeprecationWarning
        )
        yield


_CONFIG_LOCK = threading.Lock()


@contextlib.contextmanager
def _config_int(name: str, value: int, default: int) -> Iterator[None]:
    """Set ArcticDB's process-wide integer option ``name`` (read per operation) for the block,
    then restore it (``default`` is ArcticDB's own default, used when it was never set)."""
    from arcticdb.config import get_config_int, set_config_int

    with _CONFIG_LOCK:
        before = get_config_int(name)
        set_config_int(name, value)
        try:
            yield
        finally:
            set_config_int(name, default if before is None else before)


def fresh_version_chains() -> contextlib.AbstractContextManager[None]:
    """Within the block, every ArcticDB call reloads version chains instead of trusting the
    ~2 s cache (default 2e9 ns), so a write sees what another process wrote just before."""
    return _config_int("VersionMap.ReloadInterval", 0, 2_000_000_000)


def short_storage_lock_wait() -> contextlib.AbstractContextManager[None]:
    """ArcticDB waits ``StorageLock.WaitMs`` (1 s) before compacting a library's symbol list
    the first time it is listed: 6 s to open a fresh root with six libraries. The writer holds
    the lease while it creates them, so nobody else competes for that lock: wait 10 ms."""
    return _config_int("StorageLock.WaitMs", 10, 1000)


def refresh_version_cache() -> None:
    """Make this process's next reads reload version chains instead of trusting the ~2 s
    cache (the cached latest version may have just been pruned by the writer)."""
    from arcticdb.config import set_config_int

    set_config_int("VersionMap.ReloadInterval", 0)


def is_no_such_version(exc: BaseException) -> bool:
    from arcticdb.exceptions import NoSuchVersionException

    return isinstance(exc, NoSuchVersionException)


def is_missing_key(exc: BaseException) -> bool:
    from arcticdb.exceptions import KeyNotFoundException, NoDataFoundException

    return isinstance(exc, NoDataFoundException | KeyNotFoundException)
