"""The exclusive writer lease of an Arctic root (exactly one writer process).

ArcticDB has no locks: two writers on one symbol both "succeed" while rows vanish. So opening
a store for writing takes a lease first:

* ``lmdb://PATH``: an OS ``fcntl.flock`` (exclusive, non-blocking) on ``PATH/.writer.lock``.
  The OS drops it when the holder dies (even on SIGKILL), so there is no stale lease to clean
  up. The file records ``pid host since`` of the holder for the error message; a lock file
  with content but no lock is a previous holder that died, not a holder.
* ``mem://NAME``: a process-local lease per name (a ``mem://`` store only exists in-process).
* ``s3://``: no lock (see docs/storage.md for what the deployment must ensure).

The ``reconciliation`` library is the one exception to "one writer": the running
PortfolioManager's periodic reconciler and the cron job both append run reports to it. Each such
write holds :func:`shared_write_lock` (a blocking ``flock`` on ``PATH/.reconciliation.lock``,
held only for the write) and reloads the version chain first, so the two never lose each
other's rows. No other library may be written without the writer lease.

:func:`try_acquire` returns None when someone else holds it; :func:`acquire` raises
:class:`WriterLeaseError` naming the holder; :func:`holder` describes the current holder
without taking the lease.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backend.errors import StorageError, WriterLeaseError

LOCK_NAME = ".writer.lock"

_MEM_LOCK = threading.Lock()
_MEM_HOLDERS: dict[str, str] = {}


def _describe_self() -> str:
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return f"pid={os.getpid()} host={socket.gethostname()} since={since}"


@dataclass
class Lease:
    """A held lease; :meth:`release` (or process death) gives it up."""

    root: str
    holder: str
    _fd: int | None = None
    _mem_key: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._mem_key is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # no holder recorded once released
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        if self._mem_key is not None:
            with _MEM_LOCK:
                _MEM_HOLDERS.pop(self._mem_key, None)
            self._mem_key = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_SHARED_MEM: dict[str, threading.Lock] = {}


@contextmanager
def shared_write_lock(kind: str, root: str, name: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold the short write lock of the shared library ``name`` of ``root`` (blocking, with
    ``timeout`` seconds before :class:`StorageError`). Held only around one write."""
    if kind == "lmdb":
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageError(
                            f"library {name!r} at {root!r}: its write lock is still held after "
                            f"timeout={timeout}s") from None
                    time.sleep(0.01)  # another process is writing one report: a few ms
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    if kind == "mem":
        with _MEM_LOCK:
            lock = _SHARED_MEM.setdefault(f"{root}/{name}", threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise StorageError(f"library {name!r} at {root!r}: write lock timeout={timeout}s")
        try:
            yield
        finally:
            lock.release()
        return
    yield  # s3: no lock (docs/storage.md)


def lock_path(lmdb_root: str | os.PathLike[str]) -> Path:
    return Path(lmdb_root) / LOCK_NAME


def _try_lmdb(root: Path) -> Lease | None:
    root.mkdir(parents=True, exist_ok=True)
    path = lock_path(root)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"writer lease {str(path)!r}: flock failed: {exc}") from exc
    me = _describe_self()
    os.ftruncate(fd, 0)
    os.pwrite(fd, (me + "\n").encode(), 0)
    os.fsync(fd)
    return Lease(str(root), me, _fd=fd)


def _lmdb_holder(root: Path) -> str | None:
    path = lock_path(root)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            return text or "unknown holder (lock file is empty)"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def try_acquire(kind: str, root: str) -> Lease | None:
    """Take the lease of ``root`` (``kind`` is ``lmdb``, ``mem`` or ``s3``), None if held."""
    if kind == "lmdb":
        return _try_lmdb(Path(root))
    if kind == "mem":
        with _MEM_LOCK:
            if root in _MEM_HOLDERS:
                return None
            me = _describe_self()
            _MEM_HOLDERS[root] = me
        return Lease(root, me, _mem_key=root)
    return Lease(root, "no lease on this backend")


def acquire(kind: str, root: str) -> Lease:
    """Take the lease or raise :class:`WriterLeaseError` naming the holder."""
    lease = try_acquire(kind, root)
    if lease is None:
        raise WriterLeaseError(root, holder(kind, root) or "unknown (released meanwhile)")
    return lease


def holder(kind: str, root: str) -> str | None:
    """Who holds the lease of ``root`` (``pid=.. host=.. since=..``), or None when free.

    Asking does not take the lease. In the process that holds it, this names itself.
    """
    if kind == "lmdb":
        return _lmdb_holder(Path(root))
    if kind == "mem":
        with _MEM_LOCK:
            return _MEM_HOLDERS.get(root)
    return None
