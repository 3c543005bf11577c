"""``portfolio reconcile``: the scheduled reconciliation against IB Gateway (cron).

    portfolio reconcile --arctic URI --host 127.0.0.1 --port 4002 --client-id 17 \\
        [--account DU...] [--json]

Exit codes: 0 clean; 1 breaks found (residual rows written); 2 could not reconcile (refused,
clientId in use, timeout, drop, partial snapshot): one line on stderr, nothing written to
``portfolio`` (a ``failed`` report row is still recorded in ``reconciliation/<account>`` for the
accounts named with ``--account``, or every managed one when the failure came after connecting).
ArcticDB's own console warnings are turned down to errors unless ``--verbose``.

Writer lease: when no process holds it, the job opens the PortfolioManager itself (backfill
through its idempotent ingest, residual rows into ``portfolio/<account>``, the report into
``reconciliation/<account>``). When a running PortfolioManager holds it, the job says so on
stderr, does not backfill and leaves ``portfolio`` alone; it still appends its report to
``reconciliation/<account>``, the one library shared between writers (backend/storage/lease.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay inside run(): `portfolio --help` is fast
    from backend.ib.adapter import IBAdapter
    from backend.reconcile.job import RunReport


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arctic", required=True, metavar="URI",
                        help="the store, e.g. lmdb:///var/lib/portfolio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4002, help="IB Gateway port (paper: 4002)")
    parser.add_argument("--client-id", type=int, default=17,
                        help="a clientId reserved for this job (not 0)")
    parser.add_argument("--account", action="append", default=None, metavar="ACCOUNT",
                        help="reconcile this account only (repeatable; default: all managed)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--gateway-tz", default="America/New_York",
                        help="the gateway's time zone: its executions start at its midnight")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per IB request (and per connect phase)")
    parser.add_argument("--qty-tolerance", type=float, default=1e-6,
                        help="absolute quantity tolerance (fractional shares allowed)")
    parser.add_argument("--avg-cost-tolerance", type=float, default=1e-4,
                        help="relative tolerance of average costs")
    parser.add_argument("--verbose", action="store_true", help="log to stderr")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging

    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL + 1,
                        stream=sys.stderr)
    if not args.verbose:
        # ArcticDB's C++ warnings (e.g. "Writing empty dataframe" when an account's portfolio
        # is all flat) go straight to stderr: cron would mail them, and a failed run must
        # leave exactly one line there.
        from arcticdb.config import set_log_level

        set_log_level(default_level="ERROR")
    from backend.errors import LedgerError

    try:
        report = asyncio.run(_main(args))
    except LedgerError as exc:  # the store could not be opened: nothing was written
        print(f"portfolio reconcile: could not reconcile: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_summary(report)
    if report.error:
        # Exactly one line for a failed run: its notes (e.g. the report could not be recorded
        # either) go on the same line.
        extra = f" ({'; '.join(report.notes)})" if report.notes else ""
        print(f"portfolio reconcile: could not reconcile: {report.error}{extra}",
              file=sys.stderr)
        return report.exit_code
    for note in report.notes:
        print(f"portfolio reconcile: {note}", file=sys.stderr)
    return report.exit_code


async def _main(args: argparse.Namespace) -> RunReport:
    from dataclasses import replace

    from backend.core.portfolio_manager import PortfolioManager
    from backend.core.reconcile import Tolerances
    from backend.errors import BrokerError, WriterLeaseError
    from backend.ib.adapter import IBAdapter
    from backend.reconcile.job import RunOptions, failed_run, run_once
    from backend.storage import lease_holder, open_store

    accounts = tuple(args.account) if args.account else None
    gateway = f"{args.host}:{args.port} client_id={args.client_id}"
    options = RunOptions(
        accounts=accounts, gateway=gateway, gateway_tz=args.gateway_tz,
        tolerances=Tolerances(qty_default=args.qty_tolerance,
                              avg_cost_rel=args.avg_cost_tolerance))
    adapter = IBAdapter(request_timeout=args.timeout)
    holder = lease_holder(args.arctic)
    if holder is None:
        try:
            async with PortfolioManager(args.arctic) as pm, adapter:
                try:
                    await _connect(adapter, args)
                except BrokerError as exc:
                    return await failed_run(pm.store, exc, options=options,
                                            accounts=accounts or ())
                return await run_once(adapter, books=pm, options=options)
        except WriterLeaseError as exc:
            holder = exc.holder  # taken between the check and the open
    # Another process writes the journal: read-only here, report only.
    options = replace(options, write_portfolio=False, lease_holder=holder)
    store = open_store(args.arctic, writer=False)
    try:
        async with adapter:
            try:
                await _connect(adapter, args)
            except BrokerError as exc:
                return await failed_run(store, exc, options=options, accounts=accounts or ())
            return await run_once(adapter, books=None, store=store, options=options)
    finally:
        store.close()


async def _connect(adapter: IBAdapter, args: argparse.Namespace) -> None:
    """Connect read-only. Every failure is a BrokerError (exit 2, one line on stderr):
    IBAdapter.connect maps them all, including a request error out of ib_async's startup
    sync (tests/ib/test_adapter.py)."""
    await adapter.connect(args.host, args.port, args.client_id, timeout=args.timeout,
                          readonly=True)


def _print_summary(report: RunReport) -> None:
    print(f"run {report.run_id} against {report.gateway}: {report.outcome} "
          f"(exit {report.exit_code})")
    for acct in report.accounts:
        result = acct.result
        if result is None:
            print(f"  {acct.account}: {acct.outcome}")
            continue
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(result.break_counts().items()))
        print(f"  {acct.account}: {acct.outcome}" + (f" ({counts})" if counts else ""))
        for b in result.breaks:
            where = f"{b.symbol or b.con_id}" if b.con_id else "account"
            print(f"    {b.kind}{'/' + b.detail if b.detail else ''} {where}: {b.message}"
                  + (f" [{b.hint}]" if b.hint else ""))
