"""``portfolio compact --arctic URI [--library L] [--prune-keep N --grace SECONDS]``.

Compacts fragmented journal symbols (many small appended segments make reads and appends slow)
and optionally prunes old versions (never the latest ``N``, never those in a snapshot, never
younger than the grace period). Takes the writer lease: run it when the PortfolioManager is
stopped (the live writer compacts each journal symbol inline every ``compact_every`` writes to
it, 100 by default).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arctic", required=True, metavar="URI",
                        help="store URI, e.g. lmdb:///var/lib/portfolio/arctic")
    parser.add_argument("--library", default=None, metavar="L",
                        help="only this library (default: every journal library)")
    parser.add_argument("--prune-keep", type=int, default=None, metavar="N",
                        help="also prune: keep the newest N versions of every symbol")
    parser.add_argument("--grace", type=float, default=86_400.0, metavar="SECONDS",
                        help="never prune versions younger than this (default 86400)")


def run(args: argparse.Namespace) -> int:
    from backend.cli._progress import progress_bar
    from backend.errors import LedgerError, WriterLeaseError
    from backend.storage import open_store
    from backend.storage.schema import LIBRARIES

    if args.library is not None and args.library not in LIBRARIES:
        print(f"--library={args.library!r}: not one of {list(LIBRARIES)}")
        return 2
    try:
        store = open_store(args.arctic)
    except WriterLeaseError as exc:
        print(f"cannot compact: {exc}\n(a running PortfolioManager compacts inline and "
              "prunes with 'await pm.prune(keep_last, grace_seconds)' in its own process)")
        return 2
    try:
        with progress_bar("compact") as report:
            done = store.compact(args.library, progress=report)
        print(f"compacted {done} symbol(s)")
        if args.prune_keep is not None:
            with progress_bar("prune") as report:
                removed = store.prune(args.prune_keep, args.grace, progress=report)
            print(f"pruned {removed} version(s)")
    except LedgerError as exc:
        print(f"failed: {exc}")
        return 1
    finally:
        store.close()
    return 0
