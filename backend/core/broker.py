"""What the broker says the accounts hold: value objects filled by the IB adapter.

These are plain domain types (no ib_async here). The adapter converts IB's ``averageCost``
(price x multiplier) to price units before building a :class:`BrokerPosition`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from backend.core.model import NAN, CommissionReport, Fill, Instrument


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    """One (account, con_id) as IB reports it. Zero-quantity rows are kept: they mean flat."""

    account: str
    instrument: Instrument
    qty: float
    avg_cost: float  # price units (IB averageCost / multiplier); NaN when unknown
    market_price: float = NAN  # from the account's portfolio items, NaN when IB gave none
    unrealized_pnl: float = NAN  # IB's figure, for display only
    realized_pnl: float = NAN  # IB's figure, for display only

    @property
    def con_id(self) -> int:
        return self.instrument.con_id


@dataclass(frozen=True, slots=True)
class BrokerExecution:
    """An execution read back from IB (backfill), with its commission report if it came.

    ``fill.strategy`` is the order's ``orderRef`` when set, else ``_unattributed``.
    """

    fill: Fill
    commission: CommissionReport | None


@dataclass(frozen=True)
class BrokerSnapshot:
    """Everything one reconciliation run reads from IB, complete or not at all."""

    taken_at: datetime
    accounts: tuple[str, ...]
    positions: tuple[BrokerPosition, ...]
    # account -> tag -> value
    account_values: dict[str, dict[str, str]] = field(default_factory=dict)
    executions: tuple[BrokerExecution, ...] = ()
