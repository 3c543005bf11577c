"""The ingest fast paths give the same results as the checked paths: the cached parse of
ib_async contracts, and the orjson journal payload (with its json fallback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from backend.core.messages import FillMessage, canonical, parse_message
from backend.core.portfolio_manager import _dumps
from backend.errors import InvalidFieldError

from .ib_objects import AAPL, ES, dict_fill, fill_msg, ib_fill

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def parse(msg: object) -> FillMessage:
    event = parse_message(msg, received_at=NOW)
    assert isinstance(event, FillMessage)
    return event


def test_cached_contract_equals_checked_parse_and_follows_field_changes() -> None:
    first = parse(fill_msg("alpha", ib_fill(1, "BOT", 1, 10.0, contract=ES)))
    again = parse(fill_msg("alpha", ib_fill(2, "BOT", 1, 10.0, contract=ES)))
    plain = parse(fill_msg("alpha", dict_fill(3, "BOT", 1, 10.0, contract=ES)))
    assert first.fill.instrument == again.fill.instrument == plain.fill.instrument
    assert first.fill.instrument.multiplier == 50.0
    # The same object, mutated: the cache is keyed by values, never by identity.
    fill = ib_fill(4, "BOT", 1, 10.0, contract=ES)
    fill.contract.multiplier = "5"
    assert parse(fill_msg("alpha", fill)).fill.instrument.multiplier == 5.0


@pytest.mark.parametrize(("field", "value"), [("conId", True), ("multiplier", True),
                                              ("strike", False), ("multiplier", "0")])
def test_cached_contract_never_admits_a_value_the_checked_path_refuses(field: str,
                                                                       value: object) -> None:
    base = dict(AAPL, conId=1, strike=0.0, multiplier="1")
    parse(fill_msg("alpha", ib_fill(1, "BOT", 1, 10.0, contract=base)))  # cached: equal values
    fill = ib_fill(2, "BOT", 1, 10.0, contract=base)
    setattr(fill.contract, field, value)
    with pytest.raises(InvalidFieldError) as err:
        parse(fill_msg("alpha", fill))
    assert err.value.field == f"fill.contract.{field}"


def test_journal_payload_round_trips_also_beyond_64_bit_ints() -> None:
    event = parse(fill_msg("alpha", ib_fill(1, "SLD", 2, 99.5, commission=0.0,
                                            order_id=2**70)))
    doc = canonical(event)
    text = _dumps(doc)
    assert json.loads(text) == doc
    assert parse(json.loads(text)) == event
    small = canonical(parse(fill_msg("beta", ib_fill(2, "BOT", 1, 10.0))))
    assert json.loads(_dumps(small)) == small
    assert parse(json.loads(_dumps(small))) == parse(json.loads(json.dumps(small)))
