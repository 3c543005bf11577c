"""``portfolio demo``: the simulated gateway, toy strategies and the ledger, in one process."""

from __future__ import annotations

import argparse
from pathlib import Path

from backend.errors import InvalidFieldError, LedgerError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=30.0, metavar="SECONDS",
                        help="how long to trade (0 = until Ctrl-C; default 30)")
    parser.add_argument("--data", type=Path, default=Path("data"), metavar="DIR",
                        help="directory of the embedded lmdb:// ArcticDB store (default ./data)")
    parser.add_argument("--plain", action="store_true",
                        help="print a plain periodic summary even on a terminal")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from arcticdb.config import set_log_level

    from backend.ib.demo import run_demo

    if args.duration < 0:
        raise InvalidFieldError("--duration", args.duration, "must be >= 0")
    # ArcticDB's C++ warnings (e.g. "Writing empty dataframe") would print over the live view.
    set_log_level(default_level="ERROR")
    try:
        result = asyncio.run(run_demo(args.duration, args.data,
                                      live=False if args.plain else None))
    except KeyboardInterrupt:  # a second Ctrl-C during the wind-down
        print("\ninterrupted; the data written so far is in", args.data.resolve())
        return 130
    except LedgerError as exc:  # e.g. another process holds the store's writer lease
        print(f"portfolio demo: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:  # Ctrl-C: wound down and flushed, exit as an interrupted command
        return 130
    return 0 if result.fills > 0 else 1
