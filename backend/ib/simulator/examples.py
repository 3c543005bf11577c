"""Ready-made scenarios: a stock, a future (x50) and an option (x100) in one or two accounts.

Used by the tests, the demo and ``portfolio gateway`` when no ``--scenario`` is given. The same
data as YAML lives in ``examples/scenarios/``.
"""

from __future__ import annotations

from backend.ib.simulator.scenario import (
    AccountValueSpec,
    CommissionSpec,
    ContractSpec,
    ExecutionSpec,
    OrderSpec,
    PositionSpec,
    QuoteSpec,
    Scenario,
)

AAPL = ContractSpec(
    con_id=265598, symbol="AAPL", sec_type="STK", currency="USD", exchange="SMART",
    primary_exchange="NASDAQ", local_symbol="AAPL", trading_class="NMS",
    long_name="APPLE INC", min_tick=0.01,
)  # fmt: skip
ES = ContractSpec(
    con_id=495512563, symbol="ES", sec_type="FUT", currency="USD", exchange="CME",
    primary_exchange="CME", multiplier="50", expiry="20261218", local_symbol="ESZ6",
    trading_class="ES", long_name="E-mini S&P 500", min_tick=0.25, commission_per_unit=2.25,
)  # fmt: skip
AAPL_C = ContractSpec(
    con_id=712345678, symbol="AAPL", sec_type="OPT", currency="USD", exchange="SMART",
    primary_exchange="CBOE", multiplier="100", expiry="20261218", strike=200.0, right="C",
    local_symbol="AAPL  261218C00200000", trading_class="AAPL", long_name="APPLE INC",
    min_tick=0.01, commission_per_unit=0.65,
)  # fmt: skip
MSFT = ContractSpec(
    con_id=272093, symbol="MSFT", sec_type="STK", currency="USD", exchange="SMART",
    primary_exchange="NASDAQ", local_symbol="MSFT", trading_class="NMS",
    long_name="MICROSOFT CORP", min_tick=0.01,
)  # fmt: skip

CONTRACTS = (AAPL, ES, AAPL_C, MSFT)


def basic_scenario(
    accounts: tuple[str, ...] = ("DU1234567",),
    *,
    price_step_seconds: float | None = None,
    next_order_id: int = 100,
) -> Scenario:
    """Positions (one flat row), executions with commissions, one open and one completed
    order, quotes and price paths, spread over ``accounts`` (the first gets most)."""
    a = accounts[0]
    b = accounts[1] if len(accounts) > 1 else a
    positions = [
        PositionSpec(a, AAPL.con_id, 100, 150.25 * 1),
        PositionSpec(a, ES.con_id, 2, 5000.0 * 50),
        PositionSpec(a, MSFT.con_id, 0, 0.0),  # closed today: a zero row
    ]
    if b != a:
        positions += [PositionSpec(b, AAPL_C.con_id, -3, 5.10 * 100)]
    values = []
    for acct in accounts:
        values += [
            AccountValueSpec(acct, "NetLiquidation", "1250000.50"),
            AccountValueSpec(acct, "TotalCashValue", "1000000.00"),
            AccountValueSpec(acct, "BuyingPower", "4000000.00"),
        ]
    executions = [
        ExecutionSpec(
            "0000e215.656d0001.01.01", "20261120 14:30:01 UTC", a, AAPL.con_id, "BOT", 100,
            150.25, order_id=11, perm_id=900000011, client_id=1, order_ref="momentum",
            exchange="ISLAND", commission=CommissionSpec(1.0),
        ),
        ExecutionSpec(
            "0000e215.656d0002.01.01", "20261120 15:00:00 UTC", a, ES.con_id, "BOT", 2,
            5000.0, order_id=12, perm_id=900000012, client_id=1, order_ref="carry",
            exchange="CME", commission=CommissionSpec(4.5),
        ),
        ExecutionSpec(
            "0000e215.656d0003.01.01", "20261120 15:30:00 UTC", a, MSFT.con_id, "BOT", 10,
            400.0, order_id=13, perm_id=900000013, client_id=1, order_ref="momentum",
            exchange="ISLAND", commission=CommissionSpec(1.0),
        ),
        ExecutionSpec(
            "0000e215.656d0004.01.01", "20261120 16:00:00 UTC", a, MSFT.con_id, "SLD", 10,
            405.0, order_id=14, perm_id=900000014, client_id=1, order_ref="momentum",
            exchange="ISLAND", commission=CommissionSpec(1.0, realized_pnl=48.0),
        ),
    ]
    if b != a:
        executions.append(
            ExecutionSpec(
                "0000e215.656d0005.01.01", "20261120 16:10:00 UTC", b, AAPL_C.con_id, "SLD",
                3, 5.10, order_id=15, perm_id=900000015, client_id=1, order_ref="vol",
                exchange="CBOE", commission=CommissionSpec(3.0),
            )
        )
    open_orders = [
        OrderSpec(
            order_id=21, perm_id=900000021, client_id=1, account=a, con_id=AAPL.con_id,
            action="BUY", total_qty=50, order_type="LMT", lmt_price=120.0,
            order_ref="momentum", status="Submitted",
        )
    ]
    completed_orders = [
        OrderSpec(
            order_id=14, perm_id=900000014, client_id=1, account=a, con_id=MSFT.con_id,
            action="SELL", total_qty=10, order_type="MKT", order_ref="momentum",
            status="Filled", filled=10, avg_fill_price=405.0, last_fill_price=405.0,
            completed_time="20261120 16:00:00 UTC", completed_status="Filled",
        )
    ]
    quotes = [
        QuoteSpec(AAPL.con_id, bid=151.0, ask=151.02, last=151.01, close=150.0, volume=120000),
        QuoteSpec(ES.con_id, bid=5010.0, ask=5010.25, last=5010.0, close=5000.0, volume=900000),
        QuoteSpec(AAPL_C.con_id, bid=5.0, ask=5.2, last=5.1, close=5.05, volume=1500),
        QuoteSpec(MSFT.con_id, bid=404.9, ask=405.1, last=405.0, close=400.0, volume=80000),
    ]
    return Scenario(
        accounts=accounts,
        contracts=CONTRACTS,
        positions=tuple(positions),
        market_prices={AAPL.con_id: 151.01, ES.con_id: 5010.0, AAPL_C.con_id: 5.1},
        account_values=tuple(values),
        executions=tuple(executions),
        open_orders=tuple(open_orders),
        completed_orders=tuple(completed_orders),
        quotes=tuple(quotes),
        price_paths={
            AAPL.con_id: (151.01, 151.5, 150.2, 149.8, 152.0, 153.1, 150.9),
            ES.con_id: (5010.0, 5012.25, 5005.5, 5020.0, 4998.75, 5015.0),
            AAPL_C.con_id: (5.1, 5.3, 4.9, 4.7, 5.6, 5.9, 5.0),
        },
        price_step_seconds=price_step_seconds,
        next_order_id=next_order_id,
    )
