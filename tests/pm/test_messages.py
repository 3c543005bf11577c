"""Parsing queue messages (real ib_async objects and the dict form) into domain events."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from ib_async import CommissionReport, Contract

from backend.core.messages import (
    FillMessage,
    StatusMessage,
    canonical,
    encode_raw,
    message_account,
    parse_message,
)
from backend.core.model import UNATTRIBUTED, Side
from backend.errors import InvalidFieldError, InvalidMessageError

from .ib_objects import ACCOUNT, ES, T0, dict_fill, exec_id, fill_msg, ib_fill, ib_trade, status_msg

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def parse(msg: Any) -> Any:
    return parse_message(msg, received_at=NOW)


def test_ib_fill_uses_execution_time_not_arrival_time() -> None:
    fill = ib_fill(1, "BOT", 10, 100.0, contract=ES)
    event = parse(fill_msg("alpha", fill))
    assert isinstance(event, FillMessage)
    f = event.fill
    assert f.time == T0 + timedelta(seconds=1) != fill.time
    assert (f.exec_id, f.account, f.side, f.qty, f.price) == (
        exec_id(1), ACCOUNT, Side.BUY, 10.0, 100.0)
    assert f.instrument.multiplier == 50.0
    assert f.instrument.expiry == "20261218"
    assert event.commission is None  # empty CommissionReport(): not arrived


def test_dict_form_equals_ib_form() -> None:
    a = parse(fill_msg("alpha", ib_fill(1, "SLD", 3, 99.5, commission=0.0)))
    b = parse(fill_msg("alpha", dict_fill(1, "SLD", 3, 99.5, commission=0.0)))
    assert a.fill == b.fill
    assert a.commission is not None
    assert a.commission.commission == 0.0
    assert b.commission is not None
    assert b.commission.known


def test_naive_and_offset_iso_times_are_utc() -> None:
    naive = dict_fill(1, "BOT", 1, 100.0)
    naive["execution"]["time"] = "2026-11-20T14:30:01"
    offset = dict_fill(1, "BOT", 1, 100.0)
    offset["execution"]["time"] = datetime(2026, 11, 20, 9, 30, 1,
                                           tzinfo=timezone(timedelta(hours=-5)))
    assert parse(fill_msg("a", naive)).fill.time == parse(fill_msg("a", offset)).fill.time


@pytest.mark.parametrize(("strategy", "trade_ref", "exec_ref", "expected"), [
    ("alpha", "beta", "gamma", "alpha"),
    ("", "beta", "gamma", "beta"),
    (None, "", "gamma", "gamma"),
    ("", "", "", UNATTRIBUTED),
])
def test_strategy_attribution(strategy: str | None, trade_ref: str, exec_ref: str,
                              expected: str) -> None:
    trade = ib_trade(1, "BUY", 1, order_ref=trade_ref)
    msg = fill_msg("", ib_fill(1, "BOT", 1, 100.0, order_ref=exec_ref), trade)
    msg["strategy"] = strategy
    assert parse(msg).fill.strategy == expected


def test_backfilled_execution_without_trade() -> None:
    msg = {"type": "fill", "fill": ib_fill(1, "BOT", 1, 100.0, order_ref="alpha")}
    assert parse(msg).fill.strategy == "alpha"


@pytest.mark.parametrize(("mutate", "field", "error"), [
    (lambda m: m.update(type="heartbeat"), "type", InvalidMessageError),
    (lambda m: m.pop("fill"), "fill", InvalidMessageError),
    (lambda m: m["fill"]["execution"].pop("shares"), "fill.execution.shares",
     InvalidMessageError),
    (lambda m: m["fill"]["execution"].update(shares=float("nan")), "fill.execution.shares",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(shares=-1), "fill.execution.shares",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(shares="10"), "fill.execution.shares",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(price=0.0), "fill.execution.price",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(side="SHORT"), "fill.execution.side",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(acctNumber=7), "fill.execution.acctNumber",
     InvalidFieldError),
    (lambda m: m["fill"]["execution"].update(time="yesterday"), "fill.execution.time",
     InvalidFieldError),
    (lambda m: m["fill"]["contract"].update(conId=0), "fill.contract.conId", InvalidFieldError),
    (lambda m: m["fill"].update(contract=None), "fill.contract", InvalidMessageError),
    (lambda m: m.update(strategy=5), "strategy", InvalidFieldError),
    (lambda m: m.update(strategy="x" * 500), "strategy", InvalidFieldError),
])
def test_bad_fields_are_named(mutate: Any, field: str, error: type[Exception]) -> None:
    msg = fill_msg("alpha", dict_fill(1, "BOT", 1, 100.0))
    mutate(msg)
    with pytest.raises(error) as info:
        parse(msg)
    assert info.value.field == field  # type: ignore[attr-defined]
    assert field.split(".")[-1] in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidMessageError, match="message"):
        parse(["fill"])


def test_status_change_from_ib_trade() -> None:
    trade = ib_trade(4, "SELL", 10, lmt=101.0, status="Submitted", filled=4.0, order_ref="alpha")
    event = parse(status_msg("", trade))
    assert isinstance(event, StatusMessage)
    assert (event.account, event.strategy, event.side, event.status) == (
        ACCOUNT, "alpha", "SELL", "Submitted")
    assert (event.total_qty, event.filled_qty, event.remaining_qty, event.lmt_price) == (
        10.0, 4.0, 6.0, 101.0)
    assert event.time == T0 + timedelta(seconds=4)  # the trade log's time for this status
    assert event.event_key == "p5004|Submitted|4.0"


def test_status_unset_price_is_nan_and_unqualified_contract_is_kept() -> None:
    trade = ib_trade(1, "BUY", 1)
    trade.order.lmtPrice = 1.7976931348623157e308  # ib_async UNSET_DOUBLE
    trade.contract = Contract(symbol="AAPL", secType="STK")  # conId 0 before qualification
    trade.log = []
    event = parse(status_msg("alpha", trade, "PendingSubmit"))
    assert math.isnan(event.lmt_price)
    assert event.con_id == 0
    assert event.symbol == "AAPL"
    assert event.time == NOW  # no log entry: the receipt time


def test_status_account_falls_back_to_fills() -> None:
    fill = ib_fill(1, "BOT", 1, 100.0, account="DU999")
    trade = ib_trade(1, "BUY", 1, account="", fills=[fill])
    event = parse(status_msg("alpha", trade))
    assert isinstance(event, StatusMessage)
    assert event.account == "DU999"
    with pytest.raises(InvalidFieldError, match=r"trade\.order\.account"):
        parse(status_msg("alpha", ib_trade(1, "BUY", 1, account="")))
    event = parse_message(status_msg("alpha", ib_trade(1, "BUY", 1, account="")),
                          received_at=NOW, default_account="DU1")
    assert isinstance(event, StatusMessage)
    assert event.account == "DU1"


def test_status_identity_ignores_price_changes_but_not_progress() -> None:
    a = parse(status_msg("a", ib_trade(1, "BUY", 10, lmt=100.0)))
    b = parse(status_msg("a", ib_trade(1, "BUY", 12, lmt=101.0)))
    c = parse(status_msg("a", ib_trade(1, "BUY", 10, lmt=100.0, filled=2.0)))
    assert a.event_key == b.event_key != c.event_key
    assert a.content() != b.content()


@pytest.mark.parametrize("msg", [
    fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=ES, commission=1.5)),
    fill_msg("", ib_fill(2, "SLD", 1, 99.0), ib_trade(2, "SELL", 1, order_ref="beta")),
    status_msg("alpha", ib_trade(3, "BUY", 5, lmt=100.0, contract=ES)),
])
def test_canonical_form_round_trips_through_json(msg: dict[str, Any]) -> None:
    event = parse(msg)
    again = parse(json.loads(json.dumps(canonical(event))))
    assert again == event
    if isinstance(event, FillMessage):
        assert again.commission == event.commission or (
            again.commission is not None and event.commission is not None
            and math.isnan(again.commission.realized_pnl))


def test_encode_raw_keeps_ib_objects_whole_and_falls_back_to_repr() -> None:
    msg = fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0), ib_trade(1, "BUY", 10))
    text = encode_raw(msg)
    data = json.loads(text)
    assert data["fill"]["execution"]["execId"] == exec_id(1)
    assert data["fill"]["commissionReport"] == json.loads(json.dumps(
        {k: v for k, v in vars(CommissionReport()).items()}))
    assert data["trade"]["order"]["action"] == "BUY"
    assert json.loads(encode_raw({"x": object()}))["x"].startswith("<object")
    assert message_account(msg) == ACCOUNT
    assert message_account("junk") is None
