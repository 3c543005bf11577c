"""The ingest fast paths give the same results as the checked paths: the parse of ib_async
fills, the cached parse of ib_async contracts, and the orjson journal payload (with its json
fallback)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from ib_async import CommissionReport, Contract, Execution, Fill

from backend.core.messages import (
    FillMessage,
    _checked_fill,
    canonical,
    fast_fill,
    parse_message,
)
from backend.core.model import CommissionReport as ModelReport
from backend.core.portfolio_manager import _dumps
from backend.errors import InvalidFieldError, InvalidInputError
from backend.pm.payload import compact_fill, read_payload
from backend.pm.rows import FillEntry, epoch_column, fill_frame, fill_row, journal_frame
from backend.storage.schema import FILLS, SCHEMAS

from .ib_objects import AAPL, ES, T0, dict_fill, exec_id, fill_msg, ib_fill, ib_trade

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


_TEXT = st.sampled_from(["", "DU1", "alpha", "x" * 101, "a\nb"])
_ANY = st.sampled_from([None, 5, True, 5.0, "5"])
_NUMBER = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                    st.sampled_from([1e300, 1.7976931348623157e308, Decimal("2.5"), None, "1"]))
_TIMES = st.sampled_from([T0, T0.replace(tzinfo=None), T0.astimezone(timezone(timedelta(hours=1))),
                          datetime(1970, 1, 1, tzinfo=UTC), T0.isoformat(), None])


@st.composite
def ib_messages(draw: st.DrawFn) -> dict[str, object]:
    """ib_async fill messages: each field mostly as ib_async decodes it, sometimes wrong or
    right in another type (so that many messages pass and each wrong field is tried alone)."""
    def pick(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> Any:
        return draw(other) if draw(st.integers(0, 9)) == 0 else draw(usual)

    execution = Execution(
        execId=pick(st.sampled_from([exec_id(1), exec_id(2, 3)]),
                    st.sampled_from(["", "x.", ".01", "plain", 5])),
        acctNumber=pick(st.just("DU1"), st.one_of(_TEXT, _ANY)),
        side=pick(st.sampled_from(["BOT", "SLD"]), st.sampled_from(["BUY", "bot", "X", 1])),
        shares=pick(st.floats(0.001, 1e6), _NUMBER), price=pick(st.floats(0.01, 1e6), _NUMBER),
        time=pick(st.just(T0), _TIMES), orderRef=pick(_TEXT, _ANY),
        orderId=pick(st.integers(0, 2**40), _ANY), permId=pick(st.integers(0, 2**40), _ANY),
        exchange=pick(st.sampled_from(["", "NYSE"]), st.just(3)))
    report = pick(st.one_of(st.none(), st.just(CommissionReport()), st.builds(
        CommissionReport, execId=st.just(exec_id(1)),
        commission=st.floats(0, 100) | st.just(float("nan")), currency=st.just("USD"),
        realizedPNL=st.floats(-1e6, 1e6) | st.just(1.7976931348623157e308))),
        st.builds(CommissionReport, execId=st.sampled_from([exec_id(1), "", "bad.", 4]),
                  commission=_NUMBER, currency=st.sampled_from(["USD", "", 3]),
                  realizedPNL=_NUMBER))
    fill = Fill(Contract(**AAPL), execution, report, T0)
    trade = draw(st.one_of(st.none(), st.builds(
        lambda ref: ib_trade(7, "BUY", 1.0, order_ref=ref), _TEXT)))
    if trade is not None and draw(st.integers(0, 9)) == 0:
        order: Any = trade.order  # a wrong type on purpose
        order.orderRef = draw(_ANY)
    msg: dict[str, object] = {"type": "fill", "fill": fill, "trade": trade}
    strategy = pick(st.one_of(st.none(), _TEXT), _ANY)
    if strategy is not None or draw(st.booleans()):
        msg["strategy"] = strategy
    return msg


@settings(max_examples=1500, deadline=None)
@given(ib_messages())
def test_fast_fill_parse_accepts_only_what_the_checked_parse_accepts_and_equals_it(
        msg: dict[str, object]) -> None:
    """The fast path reads ib_async objects with one attrgetter and exact type checks; for
    anything else it steps aside (None) and the checked path reads the message, raising
    naming the field. It never accepts what the checked path refuses, and what it accepts
    equals the checked result, journal payload included."""
    parse(fill_msg("alpha", ib_fill(1, "BOT", 1.0, 10.0)))  # ib_async types are known
    fast = fast_fill(msg)
    try:
        checked = _checked_fill(msg)
    except InvalidInputError:
        assert fast is None
        return
    if fast is not None:
        assert fast.fill == checked.fill
        assert _dumps(canonical(fast)) == _dumps(canonical(checked))
    event(f"fast path taken: {fast is not None}")


def test_fast_fill_parse_takes_real_ib_async_fills() -> None:
    """What ib_async itself decodes (floats, aware UTC times, the empty report) takes the fast
    path; the manager's bench messages are of that kind."""
    for report in (None, 1.25):
        msg = fill_msg("alpha", ib_fill(1, "BOT", 3.0, 10.5, commission=report), ib_trade(
            1, "BUY", 3.0, order_ref="ref"))
        parse(msg)
        fast = fast_fill(msg)
        assert fast is not None and fast == _checked_fill(msg)


# receipt times (epoch seconds): round values, sub-microsecond fractions, halves of a
# microsecond (rounded to even, as datetime.fromtimestamp rounds them)
_RECEIVED = st.one_of(st.floats(0, 4e9, allow_nan=False), st.just(1764694800.0000005),
                      st.just(1764694800.9999996), st.just(1764694800.0000015),
                      st.integers(0, 4 * 10**9).map(lambda s: s + 0.5e-6))


@settings(max_examples=300, deadline=None)
@given(st.lists(ib_messages(), min_size=1, max_size=6), st.data())
def test_fill_frame_equals_the_frame_of_fill_rows(msgs: list[dict[str, object]],
                                                  data: st.DataObject) -> None:
    """The commit builds the ``fills`` frame column by column from the live fills
    (:func:`fill_frame`); it equals the frame of :func:`fill_row` rows, value for value and
    dtype for dtype, reports known, unknown or absent."""
    assert fill_frame([]).empty and list(fill_frame([]).dtypes) == list(SCHEMAS[FILLS].values())
    entries: list[FillEntry] = []
    for n, msg in enumerate([fill_msg("alpha", ib_fill(9, "SLD", 2.0, 11.0)), *msgs]):
        try:
            parsed = _checked_fill(msg)
        except InvalidInputError:
            continue
        report = parsed.commission
        if report is None and data.draw(st.booleans()):
            report = ModelReport(parsed.fill.exec_id, 1.5, "EUR")
        entries.append((parsed.fill, report, n, data.draw(_RECEIVED)))
    rows = [fill_row(f, r, seq, datetime.fromtimestamp(at, UTC)) for f, r, seq, at in entries]
    want = journal_frame(FILLS, rows, [entry[0].time for entry in entries])
    got = fill_frame(entries)
    assert list(got.dtypes) == list(want.dtypes)
    pd.testing.assert_frame_equal(got, want)


@settings(max_examples=800, deadline=None)
@given(ib_messages())
def test_compact_journal_entry_reads_back_to_the_same_event(msg: dict[str, object]) -> None:
    """A parsed fill is journaled in the compact positional form; reading it back (with every
    field checked again) gives the same fill and report, NaN for NaN."""
    try:
        event = _checked_fill(msg)
    except InvalidInputError:
        return
    text = compact_fill(event)
    assert text is not None
    back = read_payload(text)
    assert isinstance(back, FillMessage)
    assert back.fill == event.fill
    assert back.fill.time.tzinfo is not None
    assert _dumps(canonical(back)) == _dumps(canonical(event))


def test_compact_entry_falls_back_and_bad_entries_name_their_field() -> None:
    big = _checked_fill(fill_msg("alpha", ib_fill(1, "BOT", 1.0, 10.0)))
    huge = FillMessage(big.fill._replace(perm_id=2**70), None)
    assert compact_fill(huge) is None  # beyond orjson: the canonical dict form is journaled
    text = compact_fill(big)
    assert text is not None
    entry = json.loads(text)
    entry[6] = -1.0  # qty
    with pytest.raises(InvalidFieldError) as err:
        read_payload(json.dumps(entry))
    assert err.value.field == "qty"
    entry = json.loads(text)
    entry[8] = "yesterday"
    with pytest.raises(InvalidFieldError) as err:
        read_payload(json.dumps(entry))
    assert err.value.field == "fill.execution.time"
    with pytest.raises(InvalidInputError, match="14 elements"):
        read_payload(json.dumps(entry[:5]))
    assert read_payload('{"type": "fill", "x": NaN}')["type"] == "fill"  # json reads NaN


@settings(max_examples=2000, deadline=None)
@given(st.lists(_RECEIVED, min_size=1, max_size=8))
def test_epoch_column_rounds_as_datetime_fromtimestamp(seconds: list[float]) -> None:
    """The fills frame converts receipt times in bulk; each value is the microsecond
    ``datetime.fromtimestamp`` gives, halves of a microsecond rounded to even."""
    got = pd.DatetimeIndex(epoch_column(seconds)).tz_localize("UTC").to_pydatetime().tolist()
    assert got == [datetime.fromtimestamp(x, UTC) for x in seconds]
