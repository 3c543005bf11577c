"""Scenario: the simulated gateway's starting state, from Python, a dict, JSON or YAML.

All values use IB's conventions: ``avg_cost`` is price x multiplier, ``multiplier`` is text
("" for stocks, "50", "100"), sides are ``BOT``/``SLD`` for executions and ``BUY``/``SELL`` for
orders, quantities are positive for executions and signed for positions. See docs/simulator.md
for the file format; :meth:`Scenario.from_dict` names the offending field on bad input.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from backend.errors import InvalidFieldError

T = TypeVar("T")


@dataclass(frozen=True)
class ContractSpec:
    con_id: int
    symbol: str
    sec_type: str = "STK"
    currency: str = "USD"
    exchange: str = "SMART"
    primary_exchange: str = ""
    multiplier: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    long_name: str = ""
    market_name: str = ""
    min_tick: float = 0.01
    # exchange fee per share/contract for simulated fills (None: the scenario's default)
    commission_per_unit: float | None = None

    @property
    def mult(self) -> float:
        """Numeric multiplier (1 when IB leaves it empty, as for stocks)."""
        return float(self.multiplier) if self.multiplier else 1.0


@dataclass(frozen=True)
class PositionSpec:
    account: str
    con_id: int
    qty: float
    avg_cost: float = 0.0  # IB units: price x multiplier
    realized_pnl: float = 0.0


@dataclass(frozen=True)
class AccountValueSpec:
    account: str
    key: str
    value: str
    currency: str = "USD"


@dataclass(frozen=True)
class CommissionSpec:
    commission: float
    currency: str = "USD"
    realized_pnl: float | None = None  # None = IB's "unset" (opening fills)


@dataclass(frozen=True)
class ExecutionSpec:
    exec_id: str
    time: str  # "YYYYMMDD HH:MM:SS Zone" or ISO 8601 (converted to UTC on the wire)
    account: str
    con_id: int
    side: str  # BOT / SLD
    shares: float
    price: float
    order_id: int = 0
    perm_id: int = 0
    client_id: int = 0
    order_ref: str = ""
    exchange: str = "NYSE"
    liquidation: int = 0
    cum_qty: float = 0.0  # 0 = same as shares
    avg_price: float = 0.0  # 0 = same as price
    last_liquidity: int = 1
    commission: CommissionSpec | None = None

    def ib_time(self) -> str:
        """The execution time in the wire format the decoder parses."""
        return to_ib_time(self.time)


@dataclass(frozen=True)
class OrderSpec:
    """An order as the exchange reports it (open or completed)."""

    order_id: int
    perm_id: int
    client_id: int
    account: str
    con_id: int
    action: str  # BUY / SELL
    total_qty: float
    order_type: str = "LMT"
    lmt_price: float = 0.0
    aux_price: float = 0.0
    tif: str = "DAY"
    order_ref: str = ""
    status: str = "Submitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    completed_time: str = ""
    completed_status: str = ""

    @property
    def remaining(self) -> float:
        return max(self.total_qty - self.filled, 0.0)


@dataclass(frozen=True)
class QuoteSpec:
    con_id: int
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    close: float | None = None
    volume: float | None = None
    bid_size: float = 100.0
    ask_size: float = 100.0
    last_size: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """Starting state of a simulated gateway (immutable; the server copies what it changes)."""

    accounts: tuple[str, ...] = ("DU1234567",)
    contracts: tuple[ContractSpec, ...] = ()
    positions: tuple[PositionSpec, ...] = ()
    market_prices: Mapping[int, float] = field(default_factory=dict)
    account_values: tuple[AccountValueSpec, ...] = ()
    executions: tuple[ExecutionSpec, ...] = ()
    open_orders: tuple[OrderSpec, ...] = ()
    completed_orders: tuple[OrderSpec, ...] = ()
    quotes: tuple[QuoteSpec, ...] = ()
    price_paths: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    # seconds between automatic price steps (None: only on sim.advance_prices())
    price_step_seconds: float | None = None
    loop_price_paths: bool = True
    next_order_id: int = 1
    # Where the exchange's execId / permId counters start. IB never reuses an execId: a run
    # that writes into an existing ledger must start past the previous run's ids.
    exec_seq_start: int = 0x6A5B0000
    perm_id_start: int = 1_000_000_000
    # exchange: commission per share/contract, minimum per fill, largest single fill (0 = all)
    commission_per_unit: float = 0.005
    commission_min: float = 1.0
    max_fill_qty: float = 0.0
    market_data_type: int = 1

    def __post_init__(self) -> None:
        if not self.accounts or any(not a for a in self.accounts):
            raise InvalidFieldError("accounts", self.accounts, "need at least one non-empty id")
        seen: set[int] = set()
        for i, c in enumerate(self.contracts):
            if c.con_id <= 0 or c.con_id in seen:
                raise InvalidFieldError(
                    f"contracts[{i}].con_id", c.con_id, "must be positive and unique"
                )
            seen.add(c.con_id)
        refs: list[tuple[str, int]] = []
        refs += [(f"positions[{i}]", p.con_id) for i, p in enumerate(self.positions)]
        refs += [(f"executions[{i}]", e.con_id) for i, e in enumerate(self.executions)]
        refs += [(f"open_orders[{i}]", o.con_id) for i, o in enumerate(self.open_orders)]
        refs += [
            (f"completed_orders[{i}]", o.con_id) for i, o in enumerate(self.completed_orders)
        ]
        refs += [(f"quotes[{i}]", q.con_id) for i, q in enumerate(self.quotes)]
        refs += [(f"price_paths[{k}]", k) for k in self.price_paths]
        refs += [(f"market_prices[{k}]", k) for k in self.market_prices]
        for where, con_id in refs:
            if con_id not in seen:
                raise InvalidFieldError(f"{where}.con_id", con_id, "no such contract")
        for i, e in enumerate(self.executions):
            if e.side not in ("BOT", "SLD"):
                raise InvalidFieldError(f"executions[{i}].side", e.side, "must be BOT or SLD")
            to_ib_time(e.time)  # validates
        owned: list[tuple[str, str]] = []
        owned += [(f"positions[{i}]", x.account) for i, x in enumerate(self.positions)]
        owned += [(f"executions[{i}]", x.account) for i, x in enumerate(self.executions)]
        owned += [(f"account_values[{i}]", x.account) for i, x in enumerate(self.account_values)]
        owned += [(f"open_orders[{i}]", x.account) for i, x in enumerate(self.open_orders)]
        owned += [
            (f"completed_orders[{i}]", x.account) for i, x in enumerate(self.completed_orders)
        ]
        for where, account in owned:
            if account not in self.accounts:
                raise InvalidFieldError(f"{where}.account", account, "not in accounts")
        if self.next_order_id < 1:
            raise InvalidFieldError("next_order_id", self.next_order_id, "must be >= 1")

    def contract(self, con_id: int) -> ContractSpec:
        for c in self.contracts:
            if c.con_id == con_id:
                return c
        raise InvalidFieldError("con_id", con_id, "no such contract in the scenario")

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Build from plain data (the JSON/YAML shape documented in docs/simulator.md)."""
        if not isinstance(data, Mapping):
            raise InvalidFieldError("scenario", type(data).__name__, "must be a mapping")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidFieldError("scenario", sorted(unknown), f"unknown keys; known: {known}")
        kw: dict[str, Any] = dict(data)
        if "accounts" in kw:
            kw["accounts"] = tuple(str(a) for a in kw["accounts"])
        kw["contracts"] = _items(ContractSpec, "contracts", kw.get("contracts", ()))
        kw["positions"] = _items(PositionSpec, "positions", kw.get("positions", ()))
        kw["account_values"] = _items(
            AccountValueSpec, "account_values", kw.get("account_values", ())
        )
        kw["executions"] = _items(ExecutionSpec, "executions", kw.get("executions", ()))
        kw["open_orders"] = _items(OrderSpec, "open_orders", kw.get("open_orders", ()))
        kw["completed_orders"] = _items(
            OrderSpec, "completed_orders", kw.get("completed_orders", ())
        )
        kw["quotes"] = _items(QuoteSpec, "quotes", kw.get("quotes", ()))
        kw["market_prices"] = {int(k): float(v) for k, v in kw.get("market_prices", {}).items()}
        kw["price_paths"] = {
            int(k): tuple(float(x) for x in v) for k, v in kw.get("price_paths", {}).items()
        }
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a ``.json`` or ``.yaml``/``.yml`` scenario file."""
        p = Path(path)
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise InvalidFieldError("path", str(p), "scenario files end in .json, .yaml or .yml")
        return cls.from_dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back."""
        d = dataclasses.asdict(self)
        d["market_prices"] = dict(self.market_prices)
        d["price_paths"] = {k: list(v) for k, v in self.price_paths.items()}
        return d


def _build(cls: type[T], where: str, raw: Any) -> T:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidFieldError(where, raw, f"must be a mapping for {cls.__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - set(fields)
    if unknown:
        raise InvalidFieldError(where, sorted(unknown), f"unknown keys for {cls.__name__}")
    kw: dict[str, Any] = {}
    for name, value in raw.items():
        kw[name] = _coerce(f"{where}.{name}", fields[name].type, value)
    try:
        return cls(**kw)
    except TypeError as exc:
        raise InvalidFieldError(where, dict(raw), str(exc)) from None


def _coerce(where: str, type_text: Any, value: Any) -> Any:
    """Convert YAML/JSON scalars to the annotated type (annotations are strings here)."""
    t = str(type_text)
    if value is None:
        return None
    try:
        if t.startswith("CommissionSpec"):
            return _build(CommissionSpec, where, value)
        if t.startswith("float"):
            return float(value)
        if t == "int":
            return int(value)
        if t == "str":
            # multiplier 50 or 50.0 in a file means "50"
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return str(value)
    except (TypeError, ValueError):
        raise InvalidFieldError(where, value, f"must be {t}") from None
    return value


def _items(cls: type[T], where: str, raw: Any) -> tuple[T, ...]:
    if isinstance(raw, Mapping | str | bytes):
        raise InvalidFieldError(where, raw, "must be a list")
    return tuple(_build(cls, f"{where}[{i}]", r) for i, r in enumerate(raw))


def to_ib_time(value: str | dt.datetime) -> str:
    """``"YYYYMMDD HH:MM:SS Zone"`` as TWS sends; ISO strings/datetimes become UTC."""
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return when.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S UTC")
    text = str(value).strip()
    if len(text) >= 17 and text[8] == " " and text[:8].isdigit():
        if text.count(" ") < 2:
            raise InvalidFieldError("time", value, "IB format needs a zone: 'YYYYMMDD HH:MM:SS Z'")
        return text
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        reason = "not ISO 8601 nor 'YYYYMMDD HH:MM:SS Zone'"
        raise InvalidFieldError("time", value, reason) from None
    return to_ib_time(parsed)
