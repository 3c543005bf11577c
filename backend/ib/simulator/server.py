"""The simulated IB Gateway: an asyncio TCP server speaking the TWS API at server version 178.

Use it in-process (same event loop as the ib_async client)::

    async with GatewaySimulator(scenario, faults=Faults(), port=0) as sim:
        ib = IB(); await ib.connectAsync("127.0.0.1", sim.port, clientId=1)

or from the command line: ``portfolio gateway --port 4002 --scenario FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any

from backend.errors import InvalidFieldError
from backend.ib.simulator import protocol as p
from backend.ib.simulator.exchange import (
    Event,
    Exchange,
    FillEvent,
    OrderEvent,
    PositionEvent,
    QuoteEvent,
    RejectEvent,
    utc_now,
)
from backend.ib.simulator.faults import ERROR_TEXTS, Faults, corrected_exec_id
from backend.ib.simulator.handlers import HANDLERS, REQ_ID_INDEX, REQUESTS, quote_ticks
from backend.ib.simulator.scenario import CommissionSpec, ExecutionSpec, Scenario, to_ib_time
from backend.ib.simulator.session import Session

log = logging.getLogger("backend.ib.simulator")


class GatewaySimulator:
    """A fake IB Gateway that the unmodified ib_async client can talk to."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], dt.datetime] = utc_now,
        server_version: int = p.SERVER_VERSION,
    ) -> None:
        if server_version not in p.SUPPORTED_SERVER_VERSIONS:
            raise InvalidFieldError(
                "server_version", server_version, f"supported: {p.SUPPORTED_SERVER_VERSIONS}"
            )
        self.server_version = server_version
        self.scenario = scenario or Scenario()
        self.faults = faults or Faults()
        self.host = host
        self._requested_port = port
        self._port = port
        self.now = clock
        self.exchange = Exchange(self.scenario, clock)
        # every client message after the handshake, as decoded fields, in arrival order
        self.received: list[list[str]] = []
        # the version-range strings of every handshake, e.g. "v157..178 +PACEAPI"
        self.handshakes: list[str] = []
        self.sessions: list[Session] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when constructed with port=0)."""
        return self._port

    @property
    def connected_client_ids(self) -> list[int]:
        return [s.client_id for s in self.sessions if s.ready and s.client_id is not None]

    async def start(self) -> GatewaySimulator:
        self._changed = asyncio.Event()
        await self._listen()
        if self.faults.refuse_connections:
            await self._unlisten()
        step = self.scenario.price_step_seconds
        if step:
            self._spawn(self._price_ticker(step))
        return self

    async def stop(self) -> None:
        await self._unlisten()
        for t in list(self._tasks):
            t.cancel()
        for s in list(self.sessions):
            await s.close()
        for t in list(self._tasks | self._handlers):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._handlers, return_exceptions=True)
        self._tasks.clear()
        self._handlers.clear()

    async def __aenter__(self) -> GatewaySimulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self._port or self._requested_port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("IB Gateway simulator listening on %s:%d", self.host, self._port)

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def set_refusing(self, refuse: bool) -> None:
        """Close (True) or reopen (False) the listening socket on the same port."""
        self.faults.refuse_connections = refuse
        if refuse:
            await self._unlisten()
        elif self._server is None:
            await self._listen()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _price_ticker(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.advance_prices(1)

    # ------------------------------------------------------------------ connection handling

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        peer = str(writer.get_extra_info("peername"))
        s = Session(writer, peer)
        try:
            if self.faults.refuse_connections:
                s.drop("rst")
                return
            self.sessions.append(s)
            s.drop_mode = self.faults.drop_mode
            s.split_writes = self.faults.split_writes
            if self.faults.drop_after_messages is not None:
                s.drop_after = self.faults.drop_after_messages
                if s.drop_after == 0:
                    s.drop(s.drop_mode)
                    return
            await self._serve(reader, s)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            if s in self.sessions:
                self.sessions.remove(s)
            await s.close()
            self._notify()
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, s: Session) -> None:
        magic = await reader.readexactly(4)
        if magic != b"API\0":
            log.warning("simulator: bad handshake magic %r from %s", magic, s.peer)
            return
        buf = p.FrameBuffer()
        handshaken = False
        while not s.closed:
            data = await reader.read(65536)
            if not data:
                return
            for payload in buf.feed(data):
                fields = p.split_payload(payload)
                if not handshaken:
                    handshaken = self._handshake(s, fields)
                    if not handshaken:
                        return
                    continue
                self.received.append(fields)
                self._notify()
                await self._on_message(s, fields)

    def _handshake(self, s: Session, fields: list[str]) -> bool:
        self.handshakes.append(fields[0] if fields else "")
        try:
            lo, hi = p.parse_version_range(fields[0] if fields else "")
        except ValueError:
            log.warning("simulator: bad version range %r from %s", fields[:1], s.peer)
            return False
        sv = self.server_version
        if hi < sv or lo > sv:
            log.warning("simulator: client versions %d..%d exclude %d", lo, hi, sv)
            return False
        s.server_version = sv
        if not self.faults.no_handshake_reply:
            s.send(p.handshake_reply(self.now().strftime("%Y%m%d %H:%M:%S UTC"), sv))
        return True

    async def _on_message(self, s: Session, fields: list[str]) -> None:
        msg_id = int(fields[0]) if fields and fields[0].lstrip("-").isdigit() else -1
        if msg_id == 71:
            await self._start_api(s, fields)
            return
        if not s.ready:
            return
        name = REQUESTS.get(msg_id)
        if name is None:
            log.info("simulator: unhandled client message %s", fields[:3])
            return
        f = self.faults
        if f.drop_on_request == name:
            s.drop_after = s.sent + f.drop_on_request_after
            s.drop_mode = f.drop_mode
            if f.drop_on_request_after == 0:
                s.drop(f.drop_mode)
                return
        idx = REQ_ID_INDEX.get(name)
        raw_id = fields[idx] if idx is not None and idx < len(fields) else ""
        req_id = int(raw_id) if raw_id.lstrip("-").isdigit() else -1
        code = f.request_errors.get(name)
        if code is not None:
            self.error_to(s, req_id, code, ERROR_TEXTS.get(code, "simulated error"))
            return
        try:
            HANDLERS[name](self, s, fields)
        except Exception as exc:  # a simulator bug or an odd request: answer, keep serving
            log.exception("simulator: %s failed on %s", name, fields[:4])
            # 320 is not one of ib_async's "warning" codes, so the request fails at once
            self.error_to(s, req_id, 320, f"Error reading request: simulator {exc!r}")

    async def _start_api(self, s: Session, fields: list[str]) -> None:
        try:
            client_id = int(fields[2])
        except (IndexError, ValueError):
            s.drop("fin")
            return
        s.client_id = client_id
        f = self.faults
        taken = any(o is not s and o.ready and o.client_id == client_id for o in self.sessions)
        if client_id in f.client_ids_in_use or (f.reject_duplicate_client_ids and taken):
            s.send(p.error(-1, 326, ERROR_TEXTS[326]))
            s.drop("fin")
            return
        if f.start_api_delay:
            await asyncio.sleep(f.start_api_delay)
        s.send(p.managed_accounts(self.scenario.accounts))
        s.send(p.next_valid_id(self.exchange.next_order_id))
        s.ready = True
        for code in f.notices_on_connect:
            s.send(p.error(-1, code, ERROR_TEXTS.get(code, "simulated notice")))
        self._notify()

    # ------------------------------------------------------------------ sending helpers

    def error_to(self, s: Session, req_id: int, code: int, text: str) -> None:
        s.send(p.error(req_id, code, text))

    def send_end(self, s: Session, name: str, fields: list[str]) -> None:
        """Send an End message, unless the fault knobs delay or omit it."""
        if name in self.faults.omit_end:
            return
        delay = self.faults.delay_end.get(name)
        if delay:
            self.send_later(s, delay, [fields])
        else:
            s.send(fields)

    def send_later(self, s: Session, delay: float, messages: Sequence[Sequence[str]]) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            s.send_all(messages)

        self._spawn(later())

    def _owners(self, client_id: int) -> list[Session]:
        """Sessions that get an order's messages: its client, else every ready client."""
        ready = [s for s in self.sessions if s.ready and not s.closed]
        own = [s for s in ready if s.client_id == client_id]
        return own or ready

    def dispatch(self, events: Iterable[Event]) -> None:
        """Turn exchange events into live messages for the connected clients."""
        for ev in events:
            if isinstance(ev, OrderEvent):
                c = self.exchange.contract(ev.order.con_id)
                for s in self._owners(ev.order.client_id):
                    if s.client_id == ev.order.client_id:
                        s.send(p.open_order(ev.order, c, sv=s.server_version))
                        s.send(p.order_status(ev.order))
            elif isinstance(ev, FillEvent):
                self._send_fill(ev.execution)
            elif isinstance(ev, PositionEvent):
                self._send_position(ev)
            elif isinstance(ev, QuoteEvent):
                self._send_quote(ev.con_id)
            elif isinstance(ev, RejectEvent):
                for s in self._owners(ev.client_id):
                    s.send(p.error(ev.order_id, ev.code, ev.text))
        self._notify()

    def _send_fill(self, e: ExecutionSpec) -> None:
        c = self.exchange.contract(e.con_id)
        mode = self.faults.commission_mode
        report = p.commission_report(e.exec_id, e.commission) if e.commission else None
        for s in self._owners(e.client_id):
            if report and mode == "before_exec":
                s.send(report)
            s.send(p.exec_details(-1, e, c, s.server_version))
            if self.faults.duplicate_exec_details:
                s.send(p.exec_details(-1, e, c, s.server_version))
            if report and mode == "inline":
                s.send(report)
            elif report and mode == "after_end":
                self.send_later(s, self.faults.commission_delay, [report])

    def _send_position(self, ev: PositionEvent) -> None:
        ex = self.exchange
        pos = ex.positions.get((ev.account, ev.con_id))
        if pos is None:
            return
        c = ex.contract(ev.con_id)
        rows = [r for r in ex.portfolio_rows(ev.account) if r.contract.con_id == ev.con_id]
        for s in self.sessions:
            if not s.ready or s.closed:
                continue
            if ev.qty_changed and s.subs.positions:
                s.send(p.position(ev.account, c, pos.qty, pos.avg_cost))
            if s.subs.account == ev.account:
                s.send_all([p.portfolio_value(r) for r in rows])

    def _send_quote(self, con_id: int) -> None:
        q = self.exchange.quote(con_id)
        for s in self.sessions:
            md_type = s.subs.market_data_type or self.scenario.market_data_type
            for req_id, cid in list(s.subs.market_data.items()):
                if cid == con_id and s.ready:
                    s.send_all(quote_ticks(req_id, q, md_type))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ scripting API

    async def wait_until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``predicate()`` is true (re-checked on every server-side change)."""
        async with asyncio.timeout(within):
            while not predicate():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    async def wait_for_request(self, msg_id: int, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``count`` client messages with this id have arrived."""
        await self.wait_until(
            lambda: sum(1 for m in self.received if m and m[0] == str(msg_id)) >= count, within
        )

    def set_quote(
        self,
        con_id: int,
        bid: float | None = None,
        ask: float | None = None,
        last: float | None = None,
        **extra: float,
    ) -> None:
        """Replace a quote (and stop its price path); resting limits may fill."""
        self.dispatch(self.exchange.set_quote(con_id, bid, ask, last, **extra))

    def advance_prices(self, steps: int = 1, con_ids: Iterable[int] | None = None) -> None:
        """Step the scripted price paths; streaming quotes and portfolio rows follow."""
        self.dispatch(self.exchange.advance(steps, con_ids))

    def add_execution(
        self, execution: ExecutionSpec, *, live: bool = False, update_position: bool = False
    ) -> ExecutionSpec:
        """Record an execution for later reqExecutions; ``live`` also pushes it (reqId -1)."""
        e, events = self.exchange.book_execution(
            execution, update_position=update_position, with_commission=False
        )
        if live:
            self.dispatch([FillEvent(e), *events])
        else:
            self.dispatch(events)
        return e

    def push_live_fill(
        self,
        con_id: int,
        side: str,
        shares: float,
        price: float,
        *,
        account: str | None = None,
        order_ref: str = "",
        client_id: int = 0,
        order_id: int = 0,
        perm_id: int = 0,
        commission: CommissionSpec | None = None,
    ) -> ExecutionSpec:
        """An unsolicited fill (e.g. a manual TWS order): moves the position and is pushed as
        execDetails(reqId -1) + commissionReport to the client (or all clients)."""
        if side not in ("BOT", "SLD"):
            raise InvalidFieldError("side", side, "must be BOT or SLD")
        e = ExecutionSpec(
            exec_id=self.exchange.new_exec_id(),
            time=to_ib_time(self.now()),
            account=account or self.scenario.accounts[0],
            con_id=con_id,
            side=side,
            shares=shares,
            price=price,
            order_id=order_id,
            perm_id=perm_id or self.exchange.new_perm_id(),
            client_id=client_id,
            order_ref=order_ref,
            commission=commission,
        )
        e, events = self.exchange.book_execution(e)
        self.dispatch([FillEvent(e), *events])
        return e

    def correct_execution(
        self, exec_id: str, *, shares: float | None = None, price: float | None = None
    ) -> ExecutionSpec:
        """Push and record IB's correction of ``exec_id`` (suffix +1, new shares/price)."""
        old = next((e for e in self.exchange.executions if e.exec_id == exec_id), None)
        if old is None:
            raise InvalidFieldError("exec_id", exec_id, "no such execution")
        new = dataclasses.replace(
            old,
            exec_id=corrected_exec_id(exec_id),
            shares=old.shares if shares is None else shares,
            price=old.price if price is None else price,
        )
        self.exchange.executions.append(new)
        self.dispatch([FillEvent(new)])
        return new

    def send_notice(self, code: int, text: str | None = None, req_id: int = -1) -> None:
        """Send an error/notice (e.g. 1100, 1102, 2104) to every connected client."""
        for s in self.sessions:
            if s.ready:
                s.send(p.error(req_id, code, text or ERROR_TEXTS.get(code, "simulated notice")))

    def drop_connections(self, mode: str = "fin") -> None:
        """Close every client connection now (``fin`` or ``rst``)."""
        for s in list(self.sessions):
            s.drop(mode)
