"""StrategyManager through the real ib_async client against the simulator's exchange."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from ib_async import Contract, LimitOrder, MarketOrder, Trade
from ib_async import Fill as IBFill

from backend.errors import ClientIdInUseError, InvalidFieldError
from backend.ib import translate
from backend.ib.simulator import Faults, GatewaySimulator, Scenario
from backend.ib.strategy_manager import Message, Strategy, StrategyManager, drain

A1, A2 = "DU1111111", "DU2222222"
STK, FUT = 265598, 495512563


def scenario(accounts: tuple[str, ...] = (A1,), **extra: Any) -> Scenario:
    return Scenario.from_dict({
        "accounts": list(accounts),
        "contracts": [
            {"con_id": STK, "symbol": "AAPL", "sec_type": "STK", "primary_exchange": "NASDAQ"},
            {"con_id": FUT, "symbol": "ES", "sec_type": "FUT", "exchange": "CME",
             "multiplier": "50", "expiry": "20261218", "min_tick": 0.25},
        ],
        "price_paths": {STK: [100.0, 101.0, 99.0, 98.0, 102.0], FUT: [6000.0, 6001.0]},
        **extra,
    })


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[GatewaySimulator]:
    async with GatewaySimulator(scenario(), faults=Faults(), port=0) as server:
        yield server


@pytest_asyncio.fixture
async def sm(sim: GatewaySimulator) -> AsyncIterator[StrategyManager]:
    manager = StrategyManager(request_timeout=2.0)
    await manager.connect("127.0.0.1", sim.port, 1, timeout=2.0)
    try:
        yield manager
    finally:
        manager.disconnect()


class Recorder:
    """Records every published message with the commission state AT publish time."""

    def __init__(self, sm: StrategyManager) -> None:
        self.seen: list[tuple[Message, bool]] = []
        sm.add_listener(self.on_message)

    def on_message(self, message: Message) -> None:
        known = message["type"] == "fill" and translate.commission_known(message["fill"])
        self.seen.append((message, known))

    def fills(self) -> list[tuple[str, str, bool]]:
        return [(m["strategy"], m["fill"].execution.execId, known)
                for m, known in self.seen if m["type"] == "fill"]

    def statuses(self, trade: Trade) -> list[str]:
        return [m["status"] for m, _ in self.seen
                if m["type"] == "status_change" and m["trade"] is trade]


async def until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


async def stock(sm: StrategyManager) -> Contract:
    (contract,) = await sm.qualify(Contract(conId=STK))
    return contract


@pytest.mark.asyncio
async def test_market_order_fill_is_published_then_republished_with_commission(
        sm: StrategyManager) -> None:
    rec = Recorder(sm)
    trade = sm.place_order("alpha", await stock(sm), MarketOrder("BUY", 10))
    await until(lambda: any(known for _, _, known in rec.fills()))
    fills = rec.fills()
    assert len({exec_id for _, exec_id, _ in fills}) == 1
    assert [(s, known) for s, _, known in fills] == [("alpha", False), ("alpha", True)]
    assert trade.order.orderRef == "alpha"
    ib_fill: IBFill = [m for m, _ in rec.seen if m["type"] == "fill"][-1]["fill"]
    assert ib_fill.execution.orderRef == "alpha"
    assert ib_fill.execution.shares == 10.0
    assert ib_fill.commissionReport.commission > 0
    await until(lambda: "Filled" in rec.statuses(trade))
    assert all(m["strategy"] == "alpha" for m, _ in rec.seen)
    # The queue carries exactly what the listener saw, in order.
    queued = drain(sm.message_queue)
    assert [m["type"] for m in queued] == [m["type"] for m, _ in rec.seen]
    assert set(queued[0]) in ({"type", "strategy", "trade", "fill"},
                              {"type", "strategy", "trade", "status"})


@pytest.mark.asyncio
async def test_limit_order_rests_then_fills_when_the_price_crosses(
        sim: GatewaySimulator, sm: StrategyManager) -> None:
    rec = Recorder(sm)
    trade = sm.place_order("beta", await stock(sm), LimitOrder("BUY", 5, 99.5))
    await until(lambda: "Submitted" in rec.statuses(trade))
    assert rec.fills() == []
    sim.advance_prices(2)  # 100 -> 99: crosses the 99.5 limit
    await until(lambda: len(rec.fills()) == 2)
    fill_msgs = [m for m, _ in rec.seen if m["type"] == "fill"]
    execution = fill_msgs[0]["fill"].execution
    assert (execution.price, execution.side, execution.shares) == (99.5, "BOT", 5.0)
    assert {m["strategy"] for m in fill_msgs} == {"beta"}
    await until(lambda: "Filled" in rec.statuses(trade))


@pytest.mark.asyncio
async def test_cancel_publishes_the_cancelled_status(sm: StrategyManager) -> None:
    rec = Recorder(sm)
    trade = sm.place_order("gamma", await stock(sm), LimitOrder("SELL", 5, 150.0))
    await until(lambda: "Submitted" in rec.statuses(trade))
    sm.cancel_order(trade)
    await until(lambda: "Cancelled" in rec.statuses(trade))
    assert rec.fills() == []


@pytest.mark.asyncio
async def test_rejected_order_is_published_as_cancelled(sm: StrategyManager) -> None:
    rec = Recorder(sm)
    unknown = Contract(conId=999999, symbol="NOPE", secType="STK", exchange="SMART",
                       currency="USD")
    trade = sm.place_order("rejected", unknown, MarketOrder("BUY", 1))
    await until(lambda: "Cancelled" in rec.statuses(trade))
    assert rec.fills() == []
    assert {m["strategy"] for m, _ in rec.seen} == {"rejected"}
    assert any(entry.errorCode == 200 for entry in trade.log)


@pytest.mark.asyncio
async def test_partial_fills_each_published_with_their_commission() -> None:
    async with GatewaySimulator(scenario(max_fill_qty=4), port=0) as sim:
        manager = StrategyManager()
        await manager.connect("127.0.0.1", sim.port, 3, timeout=2.0)
        try:
            rec = Recorder(manager)
            trade = manager.place_order("delta", await stock(manager), MarketOrder("SELL", 10))
            await until(lambda: sum(known for _, _, known in rec.fills()) == 3)
            await until(lambda: "Filled" in rec.statuses(trade))
        finally:
            manager.disconnect()
    shares = sorted(m["fill"].execution.shares for m, known in rec.seen
                    if m["type"] == "fill" and known)
    assert shares == [2.0, 4.0, 4.0]
    assert len(rec.fills()) == 6  # each execution twice: on execDetails and on its report


@pytest.mark.asyncio
async def test_two_strategies_on_one_con_id_keep_their_attribution(sm: StrategyManager) -> None:
    rec = Recorder(sm)
    contract = await stock(sm)
    sm.place_order("long_side", contract, MarketOrder("BUY", 7))
    sm.place_order("short_side", contract, MarketOrder("SELL", 3))
    await until(lambda: sum(known for _, _, known in rec.fills()) == 2)
    by_strategy = {m["strategy"]: m["fill"].execution for m, known in rec.seen
                   if m["type"] == "fill" and known}
    assert (by_strategy["long_side"].side, by_strategy["long_side"].shares) == ("BOT", 7.0)
    assert (by_strategy["short_side"].side, by_strategy["short_side"].shares) == ("SLD", 3.0)
    assert by_strategy["long_side"].orderRef == "long_side"


@pytest.mark.asyncio
async def test_several_accounts_need_an_explicit_account() -> None:
    async with GatewaySimulator(scenario((A1, A2)), port=0) as sim:
        manager = StrategyManager()
        await manager.connect("127.0.0.1", sim.port, 4, timeout=2.0)
        try:
            rec = Recorder(manager)
            contract = await stock(manager)
            with pytest.raises(InvalidFieldError, match=r"order\.account"):
                manager.place_order("eps", contract, MarketOrder("BUY", 1))
            order = MarketOrder("BUY", 2)
            order.account = A2
            manager.place_order("eps", contract, order)
            await until(lambda: any(known for _, _, known in rec.fills()))
        finally:
            manager.disconnect()
    fill_msg = next(m for m, _ in rec.seen if m["type"] == "fill")
    assert fill_msg["fill"].execution.acctNumber == A2


@pytest.mark.asyncio
async def test_order_ref_must_not_name_another_strategy(sm: StrategyManager) -> None:
    order = MarketOrder("BUY", 1)
    order.orderRef = "someone_else"
    with pytest.raises(InvalidFieldError, match="orderRef"):
        sm.place_order("zeta", await stock(sm), order)
    with pytest.raises(InvalidFieldError, match="strategy"):
        sm.place_order("", await stock(sm), MarketOrder("BUY", 1))


class OneShot(Strategy):
    def __init__(self, name: str, contract: Contract) -> None:
        self.name = name
        self.contract = contract
        self.filled: list[float] = []
        self.statuses: list[str] = []
        self.got_fill = asyncio.Event()

    async def run(self, sm: StrategyManager) -> None:
        sm.place_order(self.name, self.contract, MarketOrder("BUY", 3))
        await self.got_fill.wait()

    def on_fill(self, trade: Trade, fill: IBFill) -> None:
        self.filled.append(fill.execution.shares)
        self.got_fill.set()

    def on_status(self, trade: Trade) -> None:
        self.statuses.append(trade.orderStatus.status)


@pytest.mark.asyncio
async def test_strategy_base_class_runs_and_gets_its_hooks(sm: StrategyManager) -> None:
    strategy = OneShot("one_shot", await stock(sm))
    await asyncio.wait_for(sm.run([strategy]), 5.0)
    assert strategy.filled == [3.0]
    await until(lambda: "Filled" in strategy.statuses)
    with pytest.raises(InvalidFieldError, match="already added"):
        sm.add(OneShot("one_shot", strategy.contract))


@pytest.mark.asyncio
async def test_quote_of_a_qualified_contract(sim: GatewaySimulator,
                                             sm: StrategyManager) -> None:
    contract = await stock(sm)
    assert await sm.quote(contract) == 100.0
    sim.advance_prices(1)
    assert await sm.quote(contract) == 101.0


@pytest.mark.asyncio
async def test_orders_after_a_drop_raise_disconnected(sim: GatewaySimulator,
                                                      sm: StrategyManager) -> None:
    from backend.errors import BrokerDisconnectedError

    contract = await stock(sm)
    sim.drop_connections()
    await until(lambda: not sm.ib.isConnected())
    with pytest.raises(BrokerDisconnectedError, match="placeOrder"):
        sm.place_order("late", contract, MarketOrder("BUY", 1))
    with pytest.raises(BrokerDisconnectedError):
        await sm.quote(contract)


@pytest.mark.asyncio
async def test_client_id_in_use_on_the_runner_connection(sim: GatewaySimulator,
                                                         sm: StrategyManager) -> None:
    other = StrategyManager()
    with pytest.raises(ClientIdInUseError):
        await other.connect("127.0.0.1", sim.port, 1, timeout=1.0)  # sm holds clientId 1
    assert sm.ib.isConnected()


@pytest.mark.asyncio
async def test_live_fills_then_adapter_backfill_book_each_execution_once(
        sim: GatewaySimulator, sm: StrategyManager) -> None:
    from backend.core.portfolio_manager import PortfolioManager
    from backend.ib.adapter import IBAdapter

    contract = await stock(sm)
    async with PortfolioManager("memory://sm_backfill") as pm:
        pm.subscribe(sm)
        rec = Recorder(sm)
        sm.place_order("live_a", contract, MarketOrder("BUY", 6))
        sm.place_order("live_b", contract, MarketOrder("SELL", 2))
        await until(lambda: sum(known for _, _, known in rec.fills()) == 2)
        await asyncio.wait_for(sm.message_queue.join(), 5.0)
        await pm.flush()
        before = {(p.key, p.qty, p.fill_count) for p in pm.ledger.positions()}
        adapter = IBAdapter(request_timeout=2.0)
        await adapter.connect("127.0.0.1", sim.port, 9, timeout=2.0)
        try:
            backfill = await adapter.executions_since(None)
        finally:
            adapter.disconnect()
        assert len(backfill) == 2
        for message in backfill:
            await pm.process_message(message)
        await pm.flush()
        after = {(p.key, p.qty, p.fill_count) for p in pm.ledger.positions()}
        assert len(pm.ledger) == 2
    assert after == before
    assert {(k.strategy, qty) for k, qty, _ in after} == {("live_a", 6.0), ("live_b", -2.0)}


class Stubborn(Strategy):
    """Swallows the first cancellation, as a Python 3.11 wait_for race can."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.swallowed = 0

    async def run(self, sm: StrategyManager) -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()


class Polite(Strategy):
    def __init__(self, name: str) -> None:
        self.name = name
        self.loops = 0

    async def run(self, sm: StrategyManager) -> None:
        while not sm.stopping:
            self.loops += 1
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_stop_ends_strategies_even_one_that_swallows_a_cancel() -> None:
    manager = StrategyManager()
    stubborn, polite = Stubborn("stubborn"), Polite("polite")
    runner = asyncio.create_task(manager.run([stubborn, polite]))
    await until(lambda: polite.loops > 3)
    await asyncio.wait_for(manager.stop(), 5.0)
    assert manager.stopping
    assert stubborn.swallowed == 1
    await asyncio.wait_for(runner, 5.0)  # run() returns once its strategies are stopped
    assert runner.done()
    assert not runner.cancelled()
