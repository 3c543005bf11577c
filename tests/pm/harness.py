"""What the restart and SIGKILL tests share: ingesting a stream, reference runs of it on
``lmdb://`` (cached by length), and driving the ``kill_child.py`` child to its SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backend.core.portfolio_manager import PortfolioManager

from .stream import snapshot

CHILD = Path(__file__).with_name("kill_child.py")


async def ingest(uri: str, messages: list[dict[str, Any]], **kwargs: Any) -> None:
    async with PortfolioManager(uri, **kwargs) as pm:
        for msg in messages:
            await pm.process_message(msg)
        await pm.flush()


class References:
    """Uninterrupted lmdb:// runs of a prefix of ``stream``, snapshotted, by length."""

    def __init__(self, root: Path, stream: list[dict[str, Any]]) -> None:
        self.root, self.stream = root, stream
        self._done: dict[int, Any] = {}

    async def snapshot(self, length: int) -> Any:
        if length not in self._done:
            uri = f"lmdb://{self.root / f'len{length}'}"
            await ingest(uri, self.stream[:length])
            self._done[length] = snapshot(uri)
        return self._done[length]


def start_child(uri: str, stream_path: Path, seed: int, *flags: str,
                env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), uri, str(stream_path), str(seed), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def stop_child(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def kill_child_at(child: subprocess.Popen[str], kill_at: int) -> None:
    """SIGKILL the child once it has handed over ``kill_at`` messages (or is done)."""
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "done" or int(line) >= kill_at:
                break
        else:  # pragma: no cover - the child died by itself
            pytest.fail(f"child exited early: {child.wait()} {child.stderr.read()}")  # type: ignore[union-attr]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        stop_child(child)
    assert child.returncode == -signal.SIGKILL
