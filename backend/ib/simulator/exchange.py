"""The simulator's small exchange: book of orders, scripted prices, fills and positions.

Pure state + rules, no I/O: every mutating method returns the :data:`Event` list the server
turns into wire messages. Prices come from the scenario's price paths (stepped on demand or on
a timer), quotes or portfolio marks. MKT orders fill at once at the current price; LMT orders
fill when the price crosses the limit, at most ``max_fill_qty`` per step (partial fills).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from backend.errors import InvalidFieldError
from backend.ib.simulator.protocol import PortfolioRow
from backend.ib.simulator.scenario import (
    AccountValueSpec,
    CommissionSpec,
    ContractSpec,
    ExecutionSpec,
    OrderSpec,
    QuoteSpec,
    Scenario,
    to_ib_time,
)

OPEN_STATUSES = frozenset({"PendingSubmit", "PreSubmitted", "Submitted"})
SUPPORTED_TYPES = frozenset({"MKT", "LMT"})


@dataclass(frozen=True)
class OrderEvent:
    """An order changed: the owner gets openOrder + orderStatus."""

    order: OrderSpec


@dataclass(frozen=True)
class FillEvent:
    """An execution happened (live): execDetails(reqId -1) + commissionReport."""

    execution: ExecutionSpec


@dataclass(frozen=True)
class PositionEvent:
    """A position changed: position / updatePortfolio subscribers get a row."""

    account: str
    con_id: int
    qty_changed: bool = True  # False: only the price moved (no position message)


@dataclass(frozen=True)
class QuoteEvent:
    """A quote changed: streaming market data subscribers get ticks."""

    con_id: int


@dataclass(frozen=True)
class RejectEvent:
    """An order was refused: the owner gets error(orderId, code, text)."""

    order_id: int
    client_id: int
    code: int
    text: str


Event = OrderEvent | FillEvent | PositionEvent | QuoteEvent | RejectEvent


@dataclass
class PositionState:
    """Mutable on purpose: updated in place on every fill (IB units, avg_cost = px x mult)."""

    qty: float
    avg_cost: float
    realized_pnl: float = 0.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Exchange:
    """Simulated venue + account state, seeded from a :class:`Scenario`."""

    def __init__(self, scenario: Scenario, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self.scenario = scenario
        self.clock = clock
        self.contracts: dict[int, ContractSpec] = {c.con_id: c for c in scenario.contracts}
        self.positions: dict[tuple[str, int], PositionState] = {
            (p.account, p.con_id): PositionState(p.qty, p.avg_cost, p.realized_pnl)
            for p in scenario.positions
        }
        self.account_values: list[AccountValueSpec] = list(scenario.account_values)
        for acct in scenario.accounts:
            if not any(v.account == acct for v in self.account_values):
                self.account_values += [
                    AccountValueSpec(acct, "NetLiquidation", "1000000.00"),
                    AccountValueSpec(acct, "TotalCashValue", "1000000.00"),
                    AccountValueSpec(acct, "AvailableFunds", "1000000.00"),
                ]
        self.executions: list[ExecutionSpec] = list(scenario.executions)
        # orders by (client_id, order_id); completed ones keep their slot
        self.orders: dict[tuple[int, int], OrderSpec] = {}
        for o in scenario.open_orders:
            self.orders[(o.client_id, o.order_id)] = o
        self.completed: list[OrderSpec] = list(scenario.completed_orders)
        self.quotes: dict[int, QuoteSpec] = {q.con_id: q for q in scenario.quotes}
        self.marks: dict[int, float] = dict(scenario.market_prices)
        self.paths: dict[int, tuple[float, ...]] = {
            k: v for k, v in scenario.price_paths.items() if v
        }
        self.path_index: dict[int, int] = dict.fromkeys(self.paths, 0)
        self.next_order_id = scenario.next_order_id
        known_perm = [o.perm_id for o in (*scenario.open_orders, *scenario.completed_orders)]
        self._next_perm_id = max([scenario.perm_id_start, *known_perm]) + 1
        self._exec_seq = scenario.exec_seq_start

    # ------------------------------------------------------------------ prices

    def contract(self, con_id: int) -> ContractSpec:
        try:
            return self.contracts[con_id]
        except KeyError:
            raise InvalidFieldError("con_id", con_id, "no such contract") from None

    def price(self, con_id: int) -> float | None:
        """Current tradeable price: path step, else quote last/mid, else the portfolio mark."""
        if con_id in self.paths:
            return self.paths[con_id][self.path_index[con_id]]
        q = self.quotes.get(con_id)
        if q is not None:
            if q.last is not None:
                return q.last
            if q.bid is not None and q.ask is not None:
                return (q.bid + q.ask) / 2
        return self.marks.get(con_id)

    def mark(self, account: str, con_id: int) -> float:
        """Portfolio market price: the scenario mark until the price moves, then live."""
        if con_id in self.marks:
            return self.marks[con_id]
        live = self.price(con_id)
        if live is not None:
            return live
        pos = self.positions.get((account, con_id))
        return pos.avg_cost / self.contract(con_id).mult if pos else 0.0

    def quote(self, con_id: int) -> QuoteSpec:
        """The quote to publish; a path price fills in bid/ask/last around it."""
        q = self.quotes.get(con_id) or QuoteSpec(con_id)
        px = self.price(con_id)
        if px is None:
            return q
        tick = self.contract(con_id).min_tick
        return dataclasses.replace(
            q,
            last=q.last if q.last is not None else px,
            bid=q.bid if q.bid is not None else round(px - tick, 10),
            ask=q.ask if q.ask is not None else round(px + tick, 10),
        )

    def set_quote(
        self,
        con_id: int,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        **extra: float,
    ) -> list[Event]:
        self.contract(con_id)
        q = self.quotes.get(con_id) or QuoteSpec(con_id)
        changes: dict[str, float | None] = {"bid": bid, "ask": ask, "last": last, **extra}
        q = dataclasses.replace(q, **changes)  # type: ignore[arg-type]
        self.quotes[con_id] = q
        self.paths.pop(con_id, None)  # an explicit quote overrides the scripted path
        self.path_index.pop(con_id, None)
        return self._price_moved([con_id])

    def advance(self, steps: int = 1, con_ids: Iterable[int] | None = None) -> list[Event]:
        """Step the price paths; resting limit orders that now cross get (partial) fills."""
        moved: list[int] = []
        for con_id in list(con_ids) if con_ids is not None else list(self.paths):
            path = self.paths.get(con_id)
            if not path:
                continue
            i = self.path_index[con_id] + steps
            i = i % len(path) if self.scenario.loop_price_paths else min(i, len(path) - 1)
            self.path_index[con_id] = i
            q = self.quotes.get(con_id)
            if q is not None:  # keep the configured spread around the new price
                half = ((q.ask or 0) - (q.bid or 0)) / 2 if q.bid and q.ask else None
                px = path[i]
                self.quotes[con_id] = dataclasses.replace(
                    q,
                    last=px,
                    bid=px - half if half is not None else q.bid,
                    ask=px + half if half is not None else q.ask,
                )
            moved.append(con_id)
        return self._price_moved(moved)

    def _price_moved(self, con_ids: list[int]) -> list[Event]:
        events: list[Event] = []
        for con_id in con_ids:
            px = self.price(con_id)
            if px is not None:
                self.marks[con_id] = px
            events.append(QuoteEvent(con_id))
            for key, o in list(self.orders.items()):
                if o.con_id == con_id and o.status in OPEN_STATUSES:
                    events += self._match(key, resting=True)
            events += [
                PositionEvent(acct, cid, qty_changed=False)
                for (acct, cid) in self.positions
                if cid == con_id
            ]
        return events

    # ------------------------------------------------------------------ orders

    def new_exec_id(self) -> str:
        """A fresh execId in IB's dotted form, unused by any recorded execution."""
        known = {e.exec_id for e in self.executions}
        while True:
            self._exec_seq += 1
            exec_id = f"0000e215.{self._exec_seq:08x}.01.01"
            if exec_id not in known:
                return exec_id

    def new_perm_id(self) -> int:
        self._next_perm_id += 1
        return self._next_perm_id

    def place(self, order: OrderSpec) -> list[Event]:
        """Accept (or modify) an order from a client, then try to fill it."""
        if order.con_id not in self.contracts:
            return [RejectEvent(order.order_id, order.client_id, 200, "No security definition")]
        if order.order_type not in SUPPORTED_TYPES:
            text = f"Order rejected - reason: order type {order.order_type} not simulated"
            return [RejectEvent(order.order_id, order.client_id, 201, text)]
        if order.total_qty <= 0:
            return [RejectEvent(order.order_id, order.client_id, 434, "Order size is zero")]
        key = (order.client_id, order.order_id)
        self.next_order_id = max(self.next_order_id, order.order_id + 1)
        events: list[Event] = []
        old = self.orders.get(key)
        if old is not None and old.status in OPEN_STATUSES:  # modification
            order = dataclasses.replace(
                old,
                total_qty=order.total_qty,
                lmt_price=order.lmt_price,
                order_type=order.order_type,
                order_ref=order.order_ref,
            )
        else:
            perm = self.new_perm_id()
            order = dataclasses.replace(order, perm_id=perm, status="PreSubmitted")
            events.append(OrderEvent(order))
        order = dataclasses.replace(order, status="Submitted")
        self.orders[key] = order
        events.append(OrderEvent(order))
        events += self._match(key, resting=False)
        return events

    def cancel(self, client_id: int, order_id: int) -> list[Event]:
        key = (client_id, order_id)
        o = self.orders.get(key)
        if o is None or o.status not in OPEN_STATUSES:
            text = f"OrderId {order_id} that needs to be cancelled is not found."
            return [RejectEvent(order_id, client_id, 10147, text)]
        o = self._finish(key, dataclasses.replace(o, status="Cancelled"))
        return [OrderEvent(o), RejectEvent(order_id, client_id, 202, "Order Canceled - reason:")]

    def open_orders(self, client_id: int | None = None) -> list[OrderSpec]:
        return [
            o
            for o in self.orders.values()
            if o.status in OPEN_STATUSES and (client_id is None or o.client_id == client_id)
        ]

    def _finish(self, key: tuple[int, int], o: OrderSpec) -> OrderSpec:
        stamp = self.clock().strftime("%Y%m%d %H:%M:%S UTC")
        o = dataclasses.replace(o, completed_time=stamp, completed_status=o.status)
        self.orders[key] = o
        self.completed.append(o)
        return o

    def _match(self, key: tuple[int, int], *, resting: bool) -> list[Event]:
        o = self.orders[key]
        px = self.price(o.con_id)
        if px is None:
            if o.order_type == "MKT":
                self._finish(key, dataclasses.replace(o, status="Cancelled"))
                text = "Order rejected - reason: no market price for this contract"
                return [RejectEvent(o.order_id, o.client_id, 201, text)]
            return []
        buy = o.action == "BUY"
        if o.order_type == "LMT":
            crosses = px <= o.lmt_price if buy else px >= o.lmt_price
            if not crosses:
                return []
            fill_px = o.lmt_price if resting else px
        else:
            fill_px = px
        chunk = self.scenario.max_fill_qty
        events: list[Event] = []
        # MKT orders take every chunk now; a limit takes one chunk per price step.
        while o.remaining > 0:
            qty = min(o.remaining, chunk) if chunk > 0 else o.remaining
            events += self._fill(key, qty, fill_px)
            o = self.orders[key]
            if o.order_type == "LMT":
                break
        return events

    def _fill(self, key: tuple[int, int], qty: float, price: float) -> list[Event]:
        o = self.orders[key]
        filled = o.filled + qty
        avg = (o.avg_fill_price * o.filled + price * qty) / filled
        c = self.contract(o.con_id)
        execution = ExecutionSpec(
            exec_id=self.new_exec_id(),
            time=to_ib_time(self.clock()),
            account=o.account or self.scenario.accounts[0],
            con_id=o.con_id,
            side="BOT" if o.action == "BUY" else "SLD",
            shares=qty,
            price=price,
            order_id=o.order_id,
            perm_id=o.perm_id,
            client_id=o.client_id,
            order_ref=o.order_ref,
            exchange=c.primary_exchange or "ISLAND",
            cum_qty=filled,
            avg_price=avg,
        )
        status = "Filled" if filled >= o.total_qty else "Submitted"
        o = dataclasses.replace(
            o, filled=filled, avg_fill_price=avg, last_fill_price=price, status=status
        )
        self.orders[key] = o
        if status == "Filled":
            o = self._finish(key, o)
        events: list[Event] = []
        execution, pos_events = self.book_execution(execution)
        events.append(FillEvent(execution))
        events.append(OrderEvent(o))
        return events + pos_events

    # ------------------------------------------------------------------ executions, positions

    def commission_for(self, con_id: int, shares: float) -> float:
        s = self.scenario
        rate = self.contract(con_id).commission_per_unit
        rate = s.commission_per_unit if rate is None else rate
        return round(max(s.commission_min, rate * shares), 6)

    def book_execution(
        self, e: ExecutionSpec, *, update_position: bool = True, with_commission: bool = True
    ) -> tuple[ExecutionSpec, list[Event]]:
        """Record an execution (reqExecutions returns it later) and move the position."""
        if e.con_id not in self.contracts:
            raise InvalidFieldError("execution.con_id", e.con_id, "no such contract")
        events: list[Event] = []
        realized: float | None = None
        if update_position:
            realized = self._apply_to_position(e)
            events.append(PositionEvent(e.account, e.con_id))
        if e.commission is None and with_commission:
            fee = self.commission_for(e.con_id, e.shares)
            pnl = None if realized is None else realized - fee
            e = dataclasses.replace(e, commission=CommissionSpec(fee, realized_pnl=pnl))
        self.executions.append(e)
        return e, events

    def _apply_to_position(self, e: ExecutionSpec) -> float | None:
        """IB average-cost rules; returns the realized PnL of the closed part (None if none)."""
        mult = self.contract(e.con_id).mult
        signed = e.shares if e.side == "BOT" else -e.shares
        pos = self.positions.setdefault((e.account, e.con_id), PositionState(0.0, 0.0))
        cost = e.price * mult
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            new_qty = pos.qty + signed
            pos.avg_cost = (pos.avg_cost * abs(pos.qty) + cost * abs(signed)) / abs(new_qty)
            pos.qty = new_qty
            return None
        closed = min(abs(signed), abs(pos.qty))
        direction = 1.0 if pos.qty > 0 else -1.0
        realized = (cost - pos.avg_cost) * closed * direction
        pos.realized_pnl += realized
        new_qty = pos.qty + signed
        if new_qty == 0:
            pos.avg_cost = 0.0
        elif (new_qty > 0) != (pos.qty > 0):  # flipped: the rest opens at the fill price
            pos.avg_cost = cost
        pos.qty = new_qty
        return realized

    def portfolio_rows(self, account: str) -> list[PortfolioRow]:
        rows: list[PortfolioRow] = []
        for (acct, con_id), pos in self.positions.items():
            if acct != account:
                continue
            c = self.contract(con_id)
            px = self.mark(acct, con_id)
            value = pos.qty * px * c.mult
            rows.append(
                PortfolioRow(
                    account=acct,
                    contract=c,
                    qty=pos.qty,
                    market_price=px,
                    market_value=value,
                    avg_cost=pos.avg_cost,
                    unrealized_pnl=value - pos.qty * pos.avg_cost,
                    realized_pnl=pos.realized_pnl,
                )
            )
        return rows
