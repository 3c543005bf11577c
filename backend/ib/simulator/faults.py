"""Fault knobs for the simulated gateway.

:class:`Faults` is deliberately *mutable*: tests and the CLI change knobs while the server runs
(``sim.faults.omit_end.add("execDetailsEnd")``), and every knob is read at the moment it
applies, so a change takes effect for the next message or connection.

End-message names used by ``delay_end`` / ``omit_end``: ``positionEnd``, ``accountDownloadEnd``,
``accountUpdateMultiEnd``, ``execDetailsEnd``, ``openOrderEnd``, ``completedOrdersEnd``,
``contractDetailsEnd``, ``tickSnapshotEnd``, ``accountSummaryEnd``.

Request names used by ``request_errors`` / ``drop_on_request``: ``reqExecutions``,
``reqContractDetails``, ``reqMktData``, ``reqAccountUpdates``, ``reqAccountUpdatesMulti``,
``reqPositions``, ``reqOpenOrders``, ``reqAllOpenOrders``, ``reqCompletedOrders``,
``reqCurrentTime``, ``reqAccountSummary``, ``placeOrder``, ``cancelOrder``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.errors import InvalidFieldError

END_NAMES = frozenset(
    {
        "positionEnd",
        "accountDownloadEnd",
        "accountUpdateMultiEnd",
        "execDetailsEnd",
        "openOrderEnd",
        "completedOrdersEnd",
        "contractDetailsEnd",
        "tickSnapshotEnd",
        "accountSummaryEnd",
    }
)

REQUEST_NAMES = frozenset(
    {
        "reqExecutions",
        "reqContractDetails",
        "reqMktData",
        "reqAccountUpdates",
        "reqAccountUpdatesMulti",
        "reqPositions",
        "reqOpenOrders",
        "reqAllOpenOrders",
        "reqCompletedOrders",
        "reqCurrentTime",
        "reqAccountSummary",
        "placeOrder",
        "cancelOrder",
    }
)

# Texts of the IB error codes the knobs use (IB's message tables).
ERROR_TEXTS: dict[int, str] = {
    162: "Historical Market Data Service error message:API historical data query cancelled",
    200: "No security definition has been found for the request",
    201: "Order rejected - reason:",
    321: "Error validating request.-'bW' : cause - The API interface is in Read-Only mode.",
    322: "Error processing request.-'bX' : cause - Duplicate ticker id",
    326: "Unable to connect as the client id is already in use. Retry with a unique client id.",
    354: "Requested market data is not subscribed.",
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and TWS has been restored- data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2104: "Market data farm connection is OK:usfarm",
    2106: "HMDS data farm connection is OK:ushmds",
    10147: "OrderId that needs to be cancelled is not found.",
}


@dataclass(frozen=True)
class ExecCorrection:
    """Replace an execution by a corrected copy: execId suffix +1, new shares and/or price."""

    shares: float | None = None
    price: float | None = None


CommissionMode = Literal["inline", "after_end", "before_exec", "never"]


@dataclass
class Faults:
    """Runtime-changeable fault knobs (all off by default)."""

    # Connections ---------------------------------------------------------------------------
    # Listener closed: clients get ConnectionRefusedError. Use ``await sim.set_refusing(b)``
    # at runtime; setting the field alone makes new connections be reset on accept.
    refuse_connections: bool = False
    # Client ids that get error 326 and a close right after startApi.
    client_ids_in_use: set[int] = field(default_factory=set)
    # Also answer 326 when the id is already connected (real gateways do).
    reject_duplicate_client_ids: bool = True
    # Close each connection after it has been sent this many messages (handshake reply counts).
    drop_after_messages: int | None = None
    # When this request arrives, send ``drop_on_request_after`` messages of the answer, then drop.
    drop_on_request: str | None = None
    drop_on_request_after: int = 0
    drop_mode: Literal["fin", "rst"] = "fin"
    # > 0: write every message in pieces of this many bytes (frames split across TCP reads).
    split_writes: int = 0
    # Don't answer the handshake at all (the client times out).
    no_handshake_reply: bool = False
    # Seconds to wait before answering startApi (managedAccounts + nextValidId).
    start_api_delay: float = 0.0

    # End messages -----------------------------------------------------------------------------
    delay_end: dict[str, float] = field(default_factory=dict)  # End name -> seconds
    omit_end: set[str] = field(default_factory=set)

    # Executions -----------------------------------------------------------------------------
    duplicate_exec_details: bool = False  # every execDetails is sent twice
    exec_corrections: dict[str, ExecCorrection] = field(default_factory=dict)  # exec_id -> fix
    commission_mode: CommissionMode = "inline"
    commission_delay: float = 0.2  # seconds after End (after_end) or after a live fill

    # Errors -------------------------------------------------------------------------------------
    # request name -> IB error code sent *instead of* the answer (e.g. reqExecutions: 322)
    request_errors: dict[str, int] = field(default_factory=dict)
    # error codes sent (reqId -1) right after the API is ready, e.g. (1100,) or (2104, 2106)
    notices_on_connect: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check names and values; raise InvalidFieldError naming the knob."""
        for name in (*self.delay_end, *self.omit_end):
            if name not in END_NAMES:
                raise InvalidFieldError("faults.end", name, f"unknown End; known: {END_NAMES}")
        for name in self.request_errors:
            if name not in REQUEST_NAMES:
                raise InvalidFieldError("faults.request_errors", name, "unknown request name")
        if self.drop_on_request is not None and self.drop_on_request not in REQUEST_NAMES:
            raise InvalidFieldError("faults.drop_on_request", self.drop_on_request, "unknown")
        if self.drop_mode not in ("fin", "rst"):
            raise InvalidFieldError("faults.drop_mode", self.drop_mode, "must be fin or rst")
        if self.commission_mode not in ("inline", "after_end", "before_exec", "never"):
            raise InvalidFieldError("faults.commission_mode", self.commission_mode, "unknown")
        if self.drop_after_messages is not None and self.drop_after_messages < 0:
            raise InvalidFieldError("faults.drop_after_messages", self.drop_after_messages, "<0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """From plain data (the ``faults:`` block of a scenario-side file or CLI JSON)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidFieldError("faults", sorted(unknown), f"unknown keys; known: {known}")
        try:
            return cls(**cls._coerce(dict(data)))
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidFieldError):
                raise
            raise InvalidFieldError("faults", dict(data), str(exc)) from None

    @staticmethod
    def _coerce(kw: dict[str, Any]) -> dict[str, Any]:
        if "client_ids_in_use" in kw:
            kw["client_ids_in_use"] = {int(x) for x in kw["client_ids_in_use"]}
        if "omit_end" in kw:
            kw["omit_end"] = set(kw["omit_end"])
        if "notices_on_connect" in kw:
            kw["notices_on_connect"] = tuple(int(x) for x in kw["notices_on_connect"])
        if "exec_corrections" in kw:
            kw["exec_corrections"] = {
                str(k): ExecCorrection(**v) for k, v in kw["exec_corrections"].items()
            }
        if "request_errors" in kw:
            kw["request_errors"] = {str(k): int(v) for k, v in kw["request_errors"].items()}
        return kw


def corrected_exec_id(exec_id: str) -> str:
    """``0000e215.656d0000.01.01`` -> ``0000e215.656d0000.01.02`` (IB's correction rule)."""
    head, sep, tail = exec_id.rpartition(".")
    if not sep or not tail.isdigit():
        raise InvalidFieldError("exec_id", exec_id, "has no numeric suffix after the last '.'")
    return f"{head}.{int(tail) + 1:0{len(tail)}d}"
