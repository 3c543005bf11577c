"""Builders of domain objects for core tests (plain functions, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backend.core.model import Fill, Instrument, Side

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
STOCK = Instrument(con_id=265598, symbol="AAPL", sec_type="STK", currency="USD")
FUTURE = Instrument(con_id=495512563, symbol="ES", sec_type="FUT", currency="USD",
                    multiplier=50.0, expiry="20261218")
OPTION = Instrument(con_id=612345678, symbol="AAPL", sec_type="OPT", currency="USD",
                    multiplier=100.0, expiry="20261218", strike=200.0, right="C")


def fill(
    n: int,
    side: str,
    qty: float,
    price: float,
    *,
    instrument: Instrument = STOCK,
    strategy: str = "alpha",
    account: str = "DU111",
    revision: int = 1,
    seconds: float | None = None,
) -> Fill:
    """Fill number ``n`` at T0 + n seconds (or ``seconds``), exec_id in IB's dotted form."""
    at = T0 + timedelta(seconds=n if seconds is None else seconds)
    return Fill(
        exec_id=f"0000e215.{n:08x}.01.{revision:02x}",
        account=account,
        strategy=strategy,
        instrument=instrument,
        side=Side.parse(side),
        qty=qty,
        price=price,
        time=at,
        order_id=n,
        perm_id=1000 + n,
    )
