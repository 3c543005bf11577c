"""``portfolio snapshot --arctic URI [--name eod-YYYY-MM-DD]``: a named snapshot of every library.

Readers then see that day's state with ``read(..., as_of="eod-2026-11-20")``. Takes the writer
lease, so it refuses (exit 2) while a PortfolioManager runs on the root. To snapshot while the
manager runs, call it in the manager's process: ``await pm.snapshot("eod-2026-11-20")`` (it
flushes first, then pins every library, and returns the name).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arctic", required=True, metavar="URI",
                        help="store URI, e.g. lmdb:///var/lib/portfolio/arctic")
    parser.add_argument("--name", default=None, metavar="NAME",
                        help="snapshot name (default eod-<today, UTC>)")


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from backend.cli._progress import progress_bar
    from backend.errors import LedgerError, WriterLeaseError
    from backend.storage import open_store

    name = args.name or f"eod-{datetime.now(UTC):%Y-%m-%d}"
    try:
        store = open_store(args.arctic)
    except WriterLeaseError as exc:
        print(f"cannot snapshot: {exc}\n(a running PortfolioManager takes it with "
              "'await pm.snapshot(name)' in its own process)")
        return 2
    try:
        with progress_bar(f"snapshot {name}") as report:
            store.snapshot(name, progress=report)
        print(f"snapshot {name!r} taken; snapshots: {', '.join(store.list_snapshots())}")
    except LedgerError as exc:
        print(f"failed: {exc}")
        return 1
    finally:
        store.close()
    return 0
