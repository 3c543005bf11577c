"""The IB adapter: a read-mostly connection that answers completely or raises.

Guarantees (docs/ib.md):

* Every request has a deadline (``asyncio.timeout``). ib_async leaves a request whose End
  message never comes pending forever, and answers some request errors with an empty list
  unless ``RaiseRequestErrors`` is on; both are closed here.
* A timeout, a dropped connection or a partial answer raises (:class:`BrokerTimeoutError`,
  :class:`BrokerDisconnectedError`, :class:`BrokerRequestError`). An empty result is only ever
  returned when IB said, completely, that there is nothing: it is never the result of a fault,
  because a reconciler would read it as "flat".
* ``clientId`` in use (IB error 326, which ib_async surfaces as a bare ``TimeoutError`` after the
  whole connect timeout) raises :class:`ClientIdInUseError`.
* Joins are on (account, conId), never on symbols.
* Commissions come from ``ib.fills()`` (the objects ib_async patches in place when the report
  arrives), never from a repeated ``reqExecutions`` (whose Fill objects carry empty reports).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import TypeVar

from ib_async import IB, Contract, PortfolioItem, RequestError
from ib_async import Fill as IBFill
from ib_async import Position as IBPosition

from backend.core.broker import BrokerExecution, BrokerPosition, BrokerSnapshot
from backend.core.model import Instrument, require_utc, utc_now
from backend.errors import (
    BrokerDisconnectedError,
    BrokerError,
    BrokerRequestError,
    BrokerTimeoutError,
    ClientIdInUseError,
    InvalidFieldError,
)
from backend.ib import translate
from backend.ib.translate import FillMessage

log = logging.getLogger(__name__)

T = TypeVar("T")

CLIENT_ID_IN_USE = 326
# IB connectivity notices (the socket to the gateway stays up): lost, restored with data
# lost, restored with data kept. While the link is down the gateway's answers may be stale.
LINK_LOST, LINK_RESTORED_DATA_LOST, LINK_RESTORED = 1100, 1101, 1102
LINK_CODES = frozenset({LINK_LOST, LINK_RESTORED_DATA_LOST, LINK_RESTORED})
DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_COMMISSION_GRACE = 1.0


def map_connect_error(exc: BaseException, client_id: int, codes: Sequence[int],
                      where: str) -> BrokerError:
    """The broker error for an exception out of ``IB.connectAsync``."""
    if CLIENT_ID_IN_USE in codes:
        return ClientIdInUseError(client_id)
    if isinstance(exc, TimeoutError):
        return BrokerTimeoutError(f"connect to {where}: no complete answer in time")
    if isinstance(exc, ConnectionError) and exc.args and isinstance(exc.args[0], list):
        # raiseSyncErrors=True: the startup sync timed out for the named requests.
        return BrokerTimeoutError(f"connect to {where}: startup sync incomplete: {exc.args[0]}")
    return BrokerDisconnectedError(f"connect to {where}: {exc!r}")


async def bounded(what: str, awaitable: Awaitable[T], deadline: float) -> T:
    """Await one ib_async request under ``deadline``, mapping its failures to BrokerErrors.

    ``asyncio.timeout``, not ``wait_for``: Python 3.11's ``wait_for`` can swallow a
    cancellation that races with the result, leaving the caller's task uncancellable.
    """
    try:
        async with asyncio.timeout(deadline):
            return await awaitable
    except RequestError as exc:
        raise BrokerRequestError(what, exc.code, exc.message) from exc
    except TimeoutError as exc:
        raise BrokerTimeoutError(f"{what}: no complete answer within {deadline}s") from exc
    except ConnectionError as exc:
        raise BrokerDisconnectedError(f"{what}: {exc}") from exc


async def open_connection(ib: IB, host: str, port: int, client_id: int,
                          timeout: float, *, readonly: bool) -> None:  # noqa: ASYNC109
    """``ib.connectAsync`` with ``raiseSyncErrors=True``, every failure as a BrokerError.

    ``timeout`` bounds each of ib_async's phases (handshake, the concurrent startup requests,
    the executions request), so the worst case is about 3x; an outer deadline guards that.
    """
    if timeout is None or timeout <= 0:
        # ib_async waits forever with timeout 0/None when the peer closes before ready.
        raise InvalidFieldError("timeout", timeout, "must be > 0")
    if ib.isConnected():
        raise InvalidFieldError("client_id", client_id, "this client is already connected")
    where = f"{host}:{port} client_id={client_id}"
    codes: list[int] = []

    def on_error(req_id: int, code: int, message: str, contract: object) -> None:
        codes.append(code)

    ib.errorEvent += on_error
    try:
        async with asyncio.timeout(timeout * 3 + 1.0):
            await ib.connectAsync(host, port, clientId=client_id, timeout=timeout,
                                  readonly=readonly, raiseSyncErrors=True)
    except RequestError as exc:
        # The executions request of the startup sync is not gathered: its error escapes.
        ib.disconnect()
        raise BrokerRequestError(f"connect to {where}: startup request", exc.code,
                                 exc.message) from exc
    except (TimeoutError, ConnectionError, OSError) as exc:
        ib.disconnect()
        raise map_connect_error(exc, client_id, codes, where) from exc
    finally:
        ib.errorEvent -= on_error
    if CLIENT_ID_IN_USE in codes:  # 326 but ib_async still came up: do not trust it
        ib.disconnect()
        raise ClientIdInUseError(client_id)


class IBAdapter:
    """One ib_async connection used for reconciliation reads and quotes.

    Use as ``async with IBAdapter() as ib: await ib.connect(...)`` or call :meth:`disconnect`.
    """

    def __init__(
        self,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        commission_grace: float = DEFAULT_COMMISSION_GRACE,
    ) -> None:
        if request_timeout <= 0:
            raise InvalidFieldError("request_timeout", request_timeout, "must be > 0")
        if commission_grace < 0:
            raise InvalidFieldError("commission_grace", commission_grace, "must be >= 0")
        self.request_timeout = request_timeout
        self.commission_grace = commission_grace
        self._ib = IB()
        self._ib.RaiseRequestErrors = True
        self._drops = 0
        self._where = ""
        self._contracts: dict[int, Contract] = {}
        # One reqAccountUpdates subscription at a time (ib_async keys it "accountValues").
        self._account_lock = asyncio.Lock()
        self._link_up = True
        self._link_events = 0  # connectivity notices seen (a snapshot spanning one is partial)
        self._last_link_code = 0
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.errorEvent += self._on_error

    # ------------------------------------------------------------ connection
    @property
    def ib(self) -> IB:
        """The underlying ib_async client (for code in backend/ib only)."""
        return self._ib

    @property
    def accounts(self) -> list[str]:
        return list(self._ib.managedAccounts())

    def is_connected(self) -> bool:
        return bool(self._ib.isConnected())

    def _on_disconnected(self) -> None:
        self._drops += 1

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if code in LINK_CODES:
            self._link_events += 1
            self._last_link_code = code
            self._link_up = code != LINK_LOST
            log.warning("IB connectivity notice %d: %s", code, message)

    @property
    def link_up(self) -> bool:
        """False after IB error 1100 (gateway lost IB) until 1101/1102 restores it."""
        return self._link_up

    async def connect(
        self,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 (ib_async's own per-phase timeout)
        *,
        readonly: bool = True,
    ) -> None:
        """Connect and run ib_async's startup sync with ``raiseSyncErrors=True``.

        ``timeout`` bounds each phase (ib_async applies it to the handshake, the concurrent
        startup requests and the executions request), so the worst case is about 3x.
        """
        self._where = f"{host}:{port} client_id={client_id}"
        self._link_up, self._last_link_code = True, 0
        await open_connection(self._ib, host, port, client_id, timeout, readonly=readonly)
        self._drops = 0

    def disconnect(self) -> None:
        self._ib.disconnect()

    async def __aenter__(self) -> IBAdapter:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.disconnect()

    # ------------------------------------------------------------- requests
    def _require_connected(self, what: str) -> None:
        if not self._ib.isConnected():
            raise BrokerDisconnectedError(f"{what}: not connected ({self._where or 'never'})")

    async def _call(self, what: str, start: Callable[[], Awaitable[T]],
                    deadline: float | None = None) -> T:
        """Run one ib_async request under a deadline, mapping every failure to a BrokerError."""
        self._require_connected(what)
        drops = self._drops
        try:
            # start() sends the request; ib_async raises ConnectionError if the socket is gone.
            result = await bounded(what, start(), deadline or self.request_timeout)
        except BrokerTimeoutError as exc:
            if self._drops != drops or not self._ib.isConnected():
                raise BrokerDisconnectedError(f"{what}: connection dropped") from exc
            raise
        except BrokerError:
            raise
        except ConnectionError as exc:
            raise BrokerDisconnectedError(f"{what}: {exc}") from exc
        self._check_alive(what, drops)
        return result

    def _require_link(self, what: str) -> None:
        if not self._link_up:
            raise BrokerDisconnectedError(
                f"{what}: the gateway reports IB connectivity lost (error {LINK_LOST})")

    def _check_alive(self, what: str, drops: int) -> None:
        # A drop resets ib_async's caches: whatever was gathered is partial.
        if self._drops != drops or not self._ib.isConnected():
            raise BrokerDisconnectedError(f"{what}: connection dropped during the request")

    async def positions(self) -> list[BrokerPosition]:
        """Positions of every account via reqPositions, zero rows kept (they mean flat)."""
        rows = await self._position_rows()
        return [translate.broker_position(row) for row in rows.values()]

    async def _position_rows(self) -> dict[tuple[str, int], IBPosition]:
        rows = await self._call("reqPositions", self._ib.reqPositionsAsync)
        latest: dict[tuple[str, int], IBPosition] = {}
        for row in rows:  # a later row for the same (account, conId) supersedes
            latest[(row.account, row.contract.conId)] = row
        return latest

    async def portfolio(self, account: str) -> dict[int, PortfolioItem]:
        """The account's portfolio items (conId -> item, zero rows included), one account at a
        time through reqAccountUpdates."""
        items: dict[int, PortfolioItem] = {}

        def on_item(item: PortfolioItem) -> None:
            if item.account == account:
                items[item.contract.conId] = item

        async with self._account_lock:
            self._ib.updatePortfolioEvent += on_item
            try:
                await self._call(f"reqAccountUpdates({account})",
                                 lambda: self._ib.reqAccountUpdatesAsync(account))
            finally:
                self._ib.updatePortfolioEvent -= on_item
        # Items sent before this subscription (e.g. at connect) that were not re-sent.
        for item in self._ib.portfolio(account):
            items.setdefault(item.contract.conId, item)
        return items

    def account_values(self, account: str) -> dict[str, str]:
        """The account's values as last received (tag -> value, see translate.account_values)."""
        return translate.account_values(
            (v.tag, v.value, v.currency) for v in self._ib.accountValues(account)
            if not v.modelCode)

    async def executions(self, since: datetime | None = None) -> list[IBFill]:
        """The session's executions since ``since`` (all if None), as ib_async's cached Fill
        objects, after waiting up to ``commission_grace`` seconds for late commission reports.

        IB reports only executions since midnight; a repeated request returns fresh Fill
        objects with empty commissions, so the answer is looked up in ``ib.fills()`` by execId.
        Duplicated execDetails collapse to one. Filtering by time is done here, on
        ``execution.time``, so the server's interpretation of filter times does not matter.
        """
        cutoff = require_utc("since", since) if since is not None else None
        rows = await self._call("reqExecutions", self._ib.reqExecutionsAsync)
        wanted: dict[str, None] = {}  # ordered set: duplicated execDetails collapse
        for row in rows:
            if cutoff is None or row.execution.time >= cutoff:
                wanted[row.execution.execId] = None
        drops = self._drops
        cached = await self._cached_fills(list(wanted))
        self._check_alive("reqExecutions", drops)
        return cached

    async def _cached_fills(self, exec_ids: Sequence[str]) -> list[IBFill]:
        deadline = time.monotonic() + self.commission_grace
        while True:
            by_id = {f.execution.execId: f for f in self._ib.fills()}
            missing = [e for e in exec_ids if e not in by_id]
            if missing:
                raise BrokerDisconnectedError(
                    f"reqExecutions: execIds {missing} vanished from the session cache")
            fills = [by_id[e] for e in exec_ids]
            if all(translate.commission_known(f) for f in fills) or time.monotonic() >= deadline:
                return fills
            await asyncio.sleep(0.02)  # poll: reports arrive as separate messages

    async def executions_since(self, since: datetime | None = None) -> list[FillMessage]:
        """Executions as queue messages for the PortfolioManager's idempotent backfill path."""
        return [translate.fill_message(f) for f in await self.executions(since)]

    async def contract(self, con_id: int) -> Contract:
        """The qualified contract of ``con_id`` (cached), via reqContractDetails."""
        cached = self._contracts.get(con_id)
        if cached is not None:
            return cached
        details = await self._call(f"reqContractDetails(conId={con_id})",
                                   lambda: self._ib.reqContractDetailsAsync(Contract(conId=con_id)))
        matches = [d.contract for d in details if d.contract and d.contract.conId == con_id]
        if len(matches) != 1:
            raise BrokerRequestError(f"reqContractDetails(conId={con_id})", 200,
                                     f"{len(matches)} contracts matched")
        self._contracts[con_id] = matches[0]
        return matches[0]

    async def instrument(self, con_id: int) -> Instrument:
        return translate.instrument(await self.contract(con_id))

    async def quotes(self, con_ids: Iterable[int]) -> dict[int, float]:
        """Snapshot prices by conId (NaN when IB had no price for a known contract)."""
        ids = list(dict.fromkeys(con_ids))
        if not ids:
            return {}
        contracts = [await self.contract(c) for c in ids]
        tickers = await self._call("reqMktData(snapshot)",
                                   lambda: self._ib.reqTickersAsync(*contracts))
        prices = {t.contract.conId: translate.quote_price(t) for t in tickers if t.contract}
        missing = [c for c in ids if c not in prices]
        if missing:
            raise BrokerRequestError("reqMktData(snapshot)", 0, f"no ticker for conIds {missing}")
        return {c: prices[c] for c in ids}

    # ------------------------------------------------------------- snapshot
    async def snapshot(self, accounts: Sequence[str] | None = None,
                       executions_since: datetime | None = None) -> BrokerSnapshot:
        """Everything a reconciliation run reads, complete or raising.

        Positions for all accounts (zero rows kept), each account's portfolio (one
        reqAccountUpdates at a time) for market prices, account values, and, when
        ``executions_since`` is given, the executions since then with their commissions.
        """
        self._require_connected("snapshot")
        self._require_link("snapshot")
        link_events = self._link_events
        managed = self.accounts
        wanted = list(accounts) if accounts is not None else managed
        unknown = [a for a in wanted if a not in managed]
        if unknown:
            raise InvalidFieldError("accounts", unknown, f"not managed here (managed: {managed})")
        drops = self._drops
        taken_at = utc_now()
        rows = {k: r for k, r in (await self._position_rows()).items() if k[0] in wanted}
        by_key = {key: translate.broker_position(row) for key, row in rows.items()}
        values: dict[str, dict[str, str]] = {}
        for account in wanted:
            items = await self.portfolio(account)
            for con_id, item in items.items():
                key = (account, con_id)
                row = rows.get(key)
                if row is None:
                    # The portfolio knows a position reqPositions did not list: keep it.
                    by_key[key] = translate.position_from_portfolio(item)
                else:
                    by_key[key] = translate.broker_position(row, item)
            values[account] = self.account_values(account)
        executions: tuple[BrokerExecution, ...] = ()
        if executions_since is not None:
            fills = await self.executions(executions_since)
            executions = tuple(translate.broker_execution(f) for f in fills
                               if f.execution.acctNumber in wanted)
        self._check_alive("snapshot", drops)
        if self._link_events != link_events:
            raise BrokerDisconnectedError(
                f"snapshot: IB connectivity notice {self._last_link_code} during the snapshot")
        ordered = sorted(by_key.values(), key=lambda p: (p.account, p.con_id))
        return BrokerSnapshot(taken_at=taken_at, accounts=tuple(wanted),
                              positions=tuple(ordered), account_values=values,
                              executions=executions)

