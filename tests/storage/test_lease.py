"""Exactly one writer per Arctic root: real processes, a real SIGKILL."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.errors import StorageError, WriterLeaseError
from backend.storage import SymbolWrite, lease_holder, open_store, try_open_writer

from .rows import fills

HOLDER = """
import sys
from backend.storage import SymbolWrite, open_store
sys.path.insert(0, {tests!r})
from rows import fills
store = open_store({uri!r})
store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
print("READY", flush=True)
sys.stdin.read()  # hold the lease until killed or stdin closes
"""

CONTENDER = """
import sys
from backend.errors import WriterLeaseError
from backend.storage import open_store
try:
    store = open_store({uri!r})
except WriterLeaseError as exc:
    print(exc, flush=True)
    sys.exit(3)
store.close()
print("GOT LEASE", flush=True)
"""


def _python(code: str, **kw: str) -> list[str]:
    return [sys.executable, "-c", code.format(**kw)]


def _wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == expected:
                return
            if not line:
                break
    raise AssertionError(f"child did not print {expected!r} (rc={proc.poll()})")


@pytest.fixture
def lmdb_uri(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path / 'arctic'}"


def test_second_writer_process_is_refused_until_the_holder_is_killed(lmdb_uri: str) -> None:
    tests_dir = str(Path(__file__).parent)
    holder = subprocess.Popen(
        _python(HOLDER, uri=lmdb_uri, tests=tests_dir),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_line(holder, "READY")
        contender = subprocess.run(
            _python(CONTENDER, uri=lmdb_uri), capture_output=True, text=True, timeout=120
        )
        assert contender.returncode == 3, contender.stderr
        assert f"pid={holder.pid}" in contender.stdout
        assert "host=" in contender.stdout
        assert "since=" in contender.stdout
        # in this process too: refused, named, and asking does not take the lease
        with pytest.raises(WriterLeaseError, match=f"pid={holder.pid}"):
            open_store(lmdb_uri)
        assert try_open_writer(lmdb_uri) is None
        assert f"pid={holder.pid}" in (lease_holder(lmdb_uri) or "")
        # readers need no lease and see the holder's rows
        reader = open_store(lmdb_uri, writer=False)
        try:
            assert list(reader.read("fills", "U1")["exec_id_base"]) == ["a"]
            with pytest.raises(StorageError, match="read-only"):
                reader.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02", "b", 1.0)]))])
        finally:
            reader.close()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
        assert holder.stdin is not None
        assert holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    assert lease_holder(lmdb_uri) is None  # the OS dropped the lock with the process
    contender = subprocess.run(
        _python(CONTENDER, uri=lmdb_uri), capture_output=True, text=True, timeout=120
    )
    assert contender.returncode == 0, contender.stdout + contender.stderr
    assert "GOT LEASE" in contender.stdout
    store = open_store(lmdb_uri)
    try:
        assert f"pid={os.getpid()}" in (lease_holder(lmdb_uri) or "")
        store.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-02", "b", 2.0)]))])
        assert list(store.read("fills", "U1")["exec_id_base"]) == ["a", "b"]
    finally:
        store.close()
    assert lease_holder(lmdb_uri) is None


def test_second_writer_in_the_same_process_is_refused(lmdb_uri: str) -> None:
    first = open_store(lmdb_uri)
    try:
        with pytest.raises(WriterLeaseError, match=f"pid={os.getpid()}"):
            open_store(lmdb_uri)
    finally:
        first.close()
    second = open_store(lmdb_uri)  # released on close
    second.close()


def test_named_mem_root_has_one_writer_and_shares_data_with_readers() -> None:
    writer = open_store("mem://lease-test")
    try:
        with pytest.raises(WriterLeaseError, match="mem://lease-test"):
            open_store("mem://lease-test")
        writer.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
        reader = open_store("mem://lease-test", writer=False)
        try:
            assert len(reader.read("fills", "U1")) == 1
        finally:
            reader.close()
    finally:
        writer.close()
    assert lease_holder("mem://lease-test") is None
    # anonymous mem:// stores are private: two writers, two stores
    a, b = open_store("mem://"), open_store("mem://")
    try:
        a.commit([SymbolWrite("fills", "U1", rows=fills([("2026-01-01", "a", 1.0)]))])
        assert len(b.read("fills", "U1")) == 0
    finally:
        a.close()
        b.close()
