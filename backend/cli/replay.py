"""``portfolio replay [FILE]``: fold a JSON fill stream through the ledger, print positions.

The file holds a JSON list of queue messages in the dict form of docs/events.md. No storage is
touched: this shows the pure accounting on its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "examples" / "fills.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE,
                        help="JSON list of messages (default: examples/fills.json)")


def run(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from backend.core.ledger import Ledger
    from backend.core.messages import FillMessage, parse_message
    from backend.core.model import utc_now
    from backend.errors import InvalidInputError

    messages = json.loads(Path(args.file).read_text())
    ledger = Ledger()
    rejected = 0
    for i, msg in enumerate(messages):
        try:
            parsed = parse_message(msg, received_at=utc_now())
        except InvalidInputError as exc:
            print(f"message {i} rejected: {exc}")
            rejected += 1
            continue
        if isinstance(parsed, FillMessage):
            ledger.apply_fill(parsed.fill)
            if parsed.commission is not None:
                ledger.apply_commission(parsed.commission)
    rows = []
    for pos in sorted(ledger.positions(), key=lambda p: (p.key.account, p.key.strategy,
                                                         p.instrument.symbol, p.key.con_id)):
        mark = ledger.mark(pos.key.con_id)
        comm = ledger.commissions(pos.key)
        rows.append({
            "account": pos.key.account, "strategy": pos.key.strategy,
            "symbol": pos.instrument.symbol, "sec_type": pos.instrument.sec_type,
            "con_id": pos.key.con_id, "qty": pos.qty, "avg_cost": pos.avg_cost,
            "realized": pos.realized_pnl, "mark": mark, "unrealized": pos.unrealized_pnl(mark),
            "commissions": comm.total, "pending": comm.pending,
        })
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:,.4f}"))
    print(f"\n{len(messages)} messages, {len(ledger)} live fills, {rejected} rejected")
    return 0
