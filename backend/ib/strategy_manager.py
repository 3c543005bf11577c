"""The StrategyManager: owns the runner's IB connection and publishes order events.

Strategies place orders through :meth:`StrategyManager.place_order`; the order's ``orderRef``
carries the strategy's name, so IB's own records (execDetails, the Trade Log) attribute every
execution even after a restart. Every event is published on :attr:`message_queue` as the
messages of docs/events.md::

    {"type": "fill", "strategy": str, "trade": Trade, "fill": Fill}
    {"type": "status_change", "strategy": str, "trade": Trade, "status": str}

A fill is published when its execDetails arrives (commission not known yet: ib_async's empty
placeholder report) and AGAIN when its commission report arrives (the same Fill object, now
with the report); consumers treat the second as an update of the first (same execId).
Publishing uses ``put_nowait`` on an unbounded queue: a slow consumer never blocks strategies
or the ib_async event handlers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from ib_async import IB, Contract, Order, Trade
from ib_async import CommissionReport as IBCommissionReport
from ib_async import Fill as IBFill

from backend.core.model import NAN
from backend.errors import (
    BrokerDisconnectedError,
    BrokerRequestError,
    InvalidFieldError,
)
from backend.ib.adapter import bounded, open_connection
from backend.ib.translate import quote_price

log = logging.getLogger(__name__)

Message = dict[str, Any]
Listener = Callable[[Message], None]


class Strategy:
    """A toy-sized strategy: give it a ``name`` and a :meth:`run` coroutine.

    ``run`` gets the manager and trades through ``sm.place_order(self.name, ...)``; the
    optional hooks are called (synchronously, from the ib_async event handlers) for the
    strategy's own orders.
    """

    name: str = ""

    async def run(self, sm: StrategyManager) -> None:
        raise NotImplementedError

    def on_fill(self, trade: Trade, fill: IBFill) -> None:
        """Called once per new execution of one of this strategy's orders."""

    def on_status(self, trade: Trade) -> None:
        """Called on every status change of one of this strategy's orders."""


class StrategyManager:
    """Runs strategies on one ib_async connection and publishes their order events."""

    def __init__(self, *, request_timeout: float = 10.0) -> None:
        self.message_queue: asyncio.Queue[Message] = asyncio.Queue()
        self.request_timeout = request_timeout
        self._ib = IB()
        self._ib.RaiseRequestErrors = True
        self._strategies: dict[str, Strategy] = {}
        # (clientId, orderId) -> strategy name, for orders placed through this manager
        self._owners: dict[tuple[int, int], str] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._listening_since: datetime | None = None
        # Any (re)connect of this IB, ours or a watchdog's, restarts the coverage; a drop ends it.
        self._ib.connectedEvent += self._on_connected
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.execDetailsEvent += self._on_exec_details
        self._ib.commissionReportEvent += self._on_commission
        self._ib.orderStatusEvent += self._on_status

    # ------------------------------------------------------------ connection
    @property
    def ib(self) -> IB:
        return self._ib

    @property
    def accounts(self) -> list[str]:
        return list(self._ib.managedAccounts())

    async def connect(self, host: str = "127.0.0.1", port: int = 4002, client_id: int = 1,
                      timeout: float = 5.0) -> None:  # noqa: ASYNC109 (ib_async's timeout)
        """Connect read-write (orders need it), with the startup sync raising on timeouts."""
        await open_connection(self._ib, host, port, client_id, timeout, readonly=False)

    @property
    def listening_since(self) -> datetime | None:
        """When the current connection came up (UTC); None while disconnected. Since then this
        client's executions reach ``message_queue`` live (the periodic reconciliation counts
        that as journal coverage across the gateway's midnight)."""
        return self._listening_since if self._ib.isConnected() else None

    def _on_connected(self) -> None:
        self._listening_since = datetime.now(UTC)

    def _on_disconnected(self) -> None:
        self._listening_since = None

    def disconnect(self) -> None:
        self._ib.disconnect()

    async def __aenter__(self) -> StrategyManager:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.disconnect()

    # ------------------------------------------------------------ strategies
    def add(self, strategy: Strategy) -> None:
        if not strategy.name:
            raise InvalidFieldError("strategy.name", strategy.name, "must not be empty")
        if strategy.name in self._strategies:
            raise InvalidFieldError("strategy.name", strategy.name, "already added")
        self._strategies[strategy.name] = strategy

    @property
    def strategies(self) -> list[Strategy]:
        return list(self._strategies.values())

    async def run(self, strategies: Iterable[Strategy] = ()) -> None:
        """Run every added strategy (and ``strategies``) until all return or one raises
        (then the others are cancelled), or until :meth:`stop`."""
        for s in strategies:
            self.add(s)
        self._stopping = False
        async with asyncio.TaskGroup() as tg:
            self._tasks = [tg.create_task(s.run(self), name=f"strategy:{s.name}")
                           for s in self._strategies.values()]

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: strategy loops should return."""
        return self._stopping

    async def stop(self) -> None:
        """Stop the strategies: set :attr:`stopping`, then cancel them until they are done.

        The cancel is repeated: a task can swallow one cancellation (in Python 3.11 e.g. in a
        ``wait_for`` whose result races with it) and go on running.
        """
        self._stopping = True
        while pending := [t for t in self._tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.2)

    def add_listener(self, listener: Listener) -> None:
        """Also call ``listener(message)`` for every published message (e.g. a display)."""
        self._listeners.append(listener)

    async def qualify(self, *contracts: Contract) -> list[Contract]:
        """Qualified contracts (conId filled in) or a BrokerRequestError naming the first miss."""
        result = await bounded("qualifyContracts", self._ib.qualifyContractsAsync(*contracts),
                               self.request_timeout)
        out: list[Contract] = []
        for asked, got in zip(contracts, result, strict=True):
            if not isinstance(got, Contract) or not got.conId:
                raise BrokerRequestError("qualifyContracts", 200, f"unknown contract {asked}")
            out.append(got)
        return out

    async def quote(self, contract: Contract) -> float:
        """A snapshot price for a qualified contract (NaN when IB has none)."""
        tickers = await bounded("reqMktData(snapshot)", self._ib.reqTickersAsync(contract),
                                self.request_timeout)
        return quote_price(tickers[0]) if tickers else NAN

    def place_order(self, strategy: str, contract: Contract, order: Order) -> Trade:
        """Place ``order`` for ``strategy``; ``orderRef`` is set to the strategy's name."""
        if not strategy:
            raise InvalidFieldError("strategy", strategy, "must not be empty")
        if order.orderRef and order.orderRef != strategy:
            raise InvalidFieldError("order.orderRef", order.orderRef,
                                    f"carries the strategy name; expected {strategy!r}")
        if not self._ib.isConnected():
            raise BrokerDisconnectedError(f"placeOrder for strategy={strategy!r}: not connected")
        if not order.account:
            accounts = self.accounts
            if len(accounts) != 1:
                raise InvalidFieldError("order.account", order.account,
                                        f"required with several accounts {accounts}")
            order.account = accounts[0]
        order.orderRef = strategy
        try:
            trade = self._ib.placeOrder(contract, order)
        except ConnectionError as exc:  # ib_async: "Not connected"
            raise BrokerDisconnectedError(f"placeOrder for strategy={strategy!r}: {exc}") from exc
        self._owners[(trade.order.clientId, trade.order.orderId)] = strategy
        return trade

    def cancel_order(self, trade: Trade) -> None:
        try:
            self._ib.cancelOrder(trade.order)
        except ConnectionError as exc:
            raise BrokerDisconnectedError(f"cancelOrder({trade.order.orderId}): {exc}") from exc

    def strategy_of(self, trade: Trade) -> str:
        """The strategy a trade belongs to: placed here, else its orderRef, else ''."""
        owner = self._owners.get((trade.order.clientId, trade.order.orderId))
        return owner or trade.order.orderRef or ""

    # ---------------------------------------------------------------- events
    def _publish(self, message: Message) -> None:
        self.message_queue.put_nowait(message)
        for listener in self._listeners:
            try:
                listener(message)
            except Exception:  # a display must never break the event path
                log.exception("listener %r failed on %s", listener, message["type"])

    def _on_exec_details(self, trade: Trade, fill: IBFill) -> None:
        strategy = self.strategy_of(trade)
        self._publish({"type": "fill", "strategy": strategy, "trade": trade, "fill": fill})
        self._notify(strategy, lambda s: s.on_fill(trade, fill))

    def _on_commission(self, trade: Trade, fill: IBFill, report: IBCommissionReport) -> None:
        # Same Fill object, now carrying its report: the consumer updates the commission.
        self._publish({"type": "fill", "strategy": self.strategy_of(trade), "trade": trade,
                       "fill": fill})

    def _on_status(self, trade: Trade) -> None:
        strategy = self.strategy_of(trade)
        self._publish({"type": "status_change", "strategy": strategy, "trade": trade,
                       "status": trade.orderStatus.status})
        self._notify(strategy, lambda s: s.on_status(trade))

    def _notify(self, strategy: str, call: Callable[[Strategy], None]) -> None:
        target = self._strategies.get(strategy)
        if target is None:
            return
        try:
            call(target)
        except Exception:  # one strategy's bug must not stop the others' events
            log.exception("strategy %r hook failed", strategy)


def drain(queue: asyncio.Queue[Message]) -> list[Message]:
    """Everything currently in ``queue`` (non-blocking), for tests and displays.

    Each item is marked done, so ``queue.join()`` keeps working for other consumers.
    """
    out: list[Message] = []
    while not queue.empty():
        out.append(queue.get_nowait())
        queue.task_done()
    return out


__all__: Sequence[str] = ("Message", "Strategy", "StrategyManager", "drain")
