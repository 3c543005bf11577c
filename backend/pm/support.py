"""Small pieces of the PortfolioManager: the run-tagged logger, default paths, the opener."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from backend.storage.api import Store
from backend.storage.journal import MEMORY
from backend.storage.uri import parse_uri


class RunLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every line carries run_id and account (``-`` when none applies)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        extra.setdefault("account", "-")
        kwargs["extra"] = extra
        return f"[run_id={extra['run_id']} account={extra['account']}] {msg}", kwargs


def default_journal_path(arctic_uri: str) -> str:
    """Beside the LMDB root for ``lmdb://``; in memory for ``mem://``/``memory://``; for
    ``s3://`` in the writer host's state directory (the journal never leaves the host)."""
    parsed = parse_uri(arctic_uri)
    if parsed.kind == "lmdb":
        return os.path.join(parsed.root, "_pm_journal.sqlite")
    if parsed.kind in ("mem", "memory"):
        return MEMORY
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    digest = hashlib.sha256(parsed.root.encode()).hexdigest()[:16]
    return os.path.join(state, "ib-arctic-ledger", f"journal-{digest}.sqlite")


def open_writer(uri: str) -> Store:
    from backend.storage import open_store

    return open_store(uri, writer=True)
