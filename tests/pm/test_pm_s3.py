"""The PortfolioManager on ``s3://``: a real S3 API (moto's server, in its own process, on
127.0.0.1) behind the real ArcticDB S3 backend.

What differs from ``lmdb://``: the write-ahead journal cannot sit beside the root, so it stays on
the writer's host (``$XDG_STATE_HOME/ib-arctic-ledger/``), and there is no writer lock (see
docs/storage.md). What must not differ: restart, re-delivery and a SIGKILL lose nothing and
double nothing, the stored libraries equal those of the same stream on ``lmdb://``.

moto runs as a separate process: ArcticDB holds the GIL while it opens a library, so an S3
server thread inside the test process would never answer it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from backend.core.portfolio_manager import (
    PortfolioManager,
    default_journal_path,
    journal_payload,
)
from backend.storage.journal import Journal, read_entries, read_last_seq
from backend.storage.schema import FILLS

from .harness import References, ingest, kill_child_at, start_child, stop_child
from .stream import assert_same, make_stream, snapshot

STREAM = make_stream(160, seed=23)
KEY, SECRET, REGION = "testing-key", "testing-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_server() -> Iterator[subprocess.Popen[bytes]]:
    """A moto S3 server on 127.0.0.1 for this module's tests (its port: ``server.port``)."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on port {port}: rc={server.poll()}")
                time.sleep(0.05)  # a process we do not own starting up: poll its socket
        server.port = port  # type: ignore[attr-defined]
        yield server
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_port(s3_server: subprocess.Popen[bytes]) -> int:
    return int(s3_server.port)  # type: ignore[attr-defined]


def make_bucket(port: int, name: str) -> str:
    """A new bucket; the ArcticDB URI of it (credentials in the query, as on a real host)."""
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                 aws_secret_access_key=SECRET, region_name=REGION).create_bucket(Bucket=name)
    return f"s3://127.0.0.1:{name}?port={port}&access={KEY}&secret={SECRET}&region={REGION}"


def bucket_keys(port: int, name: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET, region_name=REGION)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=name)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def on_host(journal: str, state_home: Path) -> bool:
    """The journal is a file under the host's state directory."""
    return Path(journal).is_file() and Path(journal).is_relative_to(state_home)


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> References:
    """The same stream on lmdb://, by length (filled lazily)."""
    return References(tmp_path_factory.mktemp("ref"), STREAM)


def test_the_journal_of_an_s3_root_stays_on_the_writer_host(s3_port: int,
                                                            state_home: Path) -> None:
    uri = make_bucket(s3_port, "journal-path")
    path = Path(default_journal_path(uri))
    assert path.parent == state_home / "ib-arctic-ledger"
    # the same root with other credentials or options is the same journal; another bucket,
    # port or path_prefix (two ledgers in one bucket) is another
    other_creds = uri.replace(f"secret={SECRET}", "secret=rotated") + "&use_virtual_addressing=0"
    assert default_journal_path(other_creds) == str(path)
    others = {default_journal_path(uri.replace("journal-path", "journal-path2")),
              default_journal_path(uri.replace(f"port={s3_port}", f"port={s3_port + 1}")),
              default_journal_path(uri + "&path_prefix=paper"),
              default_journal_path(uri + "&path_prefix=live")}
    assert len(others) == 4 and str(path) not in others
    prefixed = uri + "&path_prefix=paper"
    assert default_journal_path(prefixed.replace("region=us-east-1", "region=eu-west-1")) == \
        default_journal_path(prefixed)


@pytest.mark.asyncio
async def test_s3_restart_and_redelivery_equal_the_lmdb_run(
        s3_port: int, state_home: Path, reference: References) -> None:
    uri = make_bucket(s3_port, "restart")
    await ingest(uri, STREAM[:100])
    journal = default_journal_path(uri)
    assert on_host(journal, state_home)
    assert read_entries(journal) == []  # trimmed once durable in ArcticDB
    assert not [k for k in bucket_keys(s3_port, "restart") if "journal" in k or "sqlite" in k]
    assert_same(snapshot(uri), await reference.snapshot(100))
    async with PortfolioManager(uri) as pm:
        assert pm.replayed == 0
        known = len(pm.ledger)
        for msg in STREAM[:100]:  # everything again: no-ops after the restart
            await pm.process_message(msg)
        await pm.flush()
        assert len(pm.ledger) == known
        for msg in STREAM[100:]:
            await pm.process_message(msg)
        await pm.flush()
    assert_same(snapshot(uri), await reference.snapshot(len(STREAM)))


@pytest.mark.asyncio
async def test_s3_sigkill_loses_nothing_journaled_and_doubles_nothing(
        s3_port: int, state_home: Path, tmp_path: Path, reference: References) -> None:
    uri = make_bucket(s3_port, "sigkill")
    stream_path = tmp_path / "stream.json"
    stream_path.write_text(json.dumps(STREAM))
    kill_at = 70
    kill_child_at(start_child(uri, stream_path, 5, env={"XDG_STATE_HOME": str(state_home)}),
                  kill_at)
    journaled = read_last_seq(default_journal_path(uri))  # seq i == STREAM[i - 1]
    assert 0 <= journaled <= len(STREAM)
    async with PortfolioManager(uri) as pm:  # NO re-delivery
        assert pm.replayed <= journaled
    assert_same(snapshot(uri), await reference.snapshot(journaled))
    await ingest(uri, STREAM)  # the whole stream again
    assert_same(snapshot(uri), await reference.snapshot(len(STREAM)))
    assert read_entries(default_journal_path(uri)) == []


@pytest.mark.asyncio
async def test_s3_unreachable_then_sigkill_the_host_journal_is_replayed(
        s3_port: int, s3_server: subprocess.Popen[bytes], state_home: Path, tmp_path: Path,
        reference: References) -> None:
    """S3 stops answering (the server process is stopped) while the writer keeps accepting
    messages; the writer is then killed. Everything it accepted is only in the journal on its
    host: a restart, with S3 back and NO re-delivery, replays it into ArcticDB."""
    uri = make_bucket(s3_port, "unreachable")
    stream_path = tmp_path / "stream.json"
    stream_path.write_text(json.dumps(STREAM))
    journal = default_journal_path(uri)
    child = start_child(uri, stream_path, 5, "--no-flush",
                        env={"XDG_STATE_HOME": str(state_home)})
    try:
        assert child.stdout is not None
        first = child.stdout.readline()  # the child is open (it read S3) and sending
        assert first.strip().isdigit(), first
        os.kill(s3_server.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 60
            while read_last_seq(journal) < len(STREAM):  # the child keeps journaling
                assert child.poll() is None, child.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"journaled {read_last_seq(journal)}"
                await asyncio.sleep(0.02)  # another process's progress: poll its journal
            os.kill(child.pid, signal.SIGKILL)
        finally:
            os.kill(s3_server.pid, signal.SIGCONT)
    finally:
        stop_child(child)
    async with PortfolioManager(uri) as pm:  # NO re-delivery
        assert pm.replayed > 0
        assert pm.replayed <= len(STREAM)
    assert_same(snapshot(uri), await reference.snapshot(len(STREAM)))
    assert read_entries(journal) == []


def crashed_writer_journal(uri: str, messages: list[dict[str, Any]]) -> int:
    """Leave ``messages`` in ``uri``'s journal as a writer killed after journaling them
    (before ArcticDB held them) would; returns how many."""
    now = time.time()
    with Journal(default_journal_path(uri)) as journal:
        journal.append([journal_payload(msg, now) for msg in messages])
    return len(messages)


@pytest.mark.asyncio
async def test_two_prefixes_of_one_bucket_are_two_ledgers(s3_port: int, state_home: Path) -> None:
    """Two ArcticDB roots in one bucket (``path_prefix``), e.g. paper and live: each has its
    own host journal, so what one writer left unpersisted is replayed into its own root only."""
    uri = make_bucket(s3_port, "shared")
    paper, live = uri + "&path_prefix=paper", uri + "&path_prefix=live"
    await ingest(live, [])  # live exists, empty
    pending = crashed_writer_journal(paper, STREAM[:60])
    assert pending > 0
    async with PortfolioManager(live) as pm:
        assert pm.replayed == 0
        assert len(pm.ledger) == 0
    async with PortfolioManager(paper) as pm:
        assert pm.replayed == pending
        assert len(pm.ledger) > 0
    assert not [key for key in snapshot(live) if key[0] == FILLS]
    assert [key for key in snapshot(paper) if key[0] == FILLS]
    assert {k.split("/")[0] for k in bucket_keys(s3_port, "shared")} == {"paper", "live"}
