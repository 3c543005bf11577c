"""The ``portfolio`` console script.

Each subcommand lives in its own module under :mod:`backend.cli` exposing
``configure(parser: argparse.ArgumentParser) -> None`` and ``run(args) -> int``. Modules are
kept light at import time (heavy imports go inside ``run``), so ``portfolio --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# name -> (module under backend.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("replay", "replay a JSON fill stream through the ledger and print positions"),
    "demo": ("demo", "run toy strategies on the IB simulator into an embedded ArcticDB store"),
    "reconcile": ("reconcile", "reconcile the journal with IB Gateway (exit 0 clean, 1 breaks, "
                  "2 failed)"),
    "gateway": ("gateway", "run the wire-level IB Gateway simulator until Ctrl-C"),
    "compact": ("compact", "compact fragmented ArcticDB symbols (and prune old versions)"),
    "snapshot": ("snapshot", "take a named end-of-day snapshot of every ArcticDB library"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="portfolio",
        description="ArcticDB-backed portfolio ledger for strategies trading through IB.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        module = importlib.import_module(f"backend.cli.{module_name}")
        module.configure(sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    module = importlib.import_module(f"backend.cli.{args._module}")
    result: int = module.run(args)
    return result
