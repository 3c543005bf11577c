"""Value objects: execId parsing, validation errors that name field and value."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from backend.core.model import (
    CommissionReport,
    Fill,
    Instrument,
    Side,
    is_flat,
    money_close,
    parse_exec_id,
    require_utc,
)
from backend.errors import InvalidExecIdError, InvalidFieldError, InvalidInputError, LedgerError

from .factories import STOCK, fill


@pytest.mark.parametrize(
    ("exec_id", "base", "revision"),
    [
        ("0000e215.656d0000.01.01", "0000e215.656d0000.01", 1),
        ("0000e215.656d0000.01.02", "0000e215.656d0000.01", 2),
        ("0000e215.656d0000.01.0a", "0000e215.656d0000.01", 10),
        ("0001f4e8.657a1b2c.01.01.01", "0001f4e8.657a1b2c.01.01", 1),  # combo leg: 5 parts
        ("plainid", "plainid", 0),
        ("sim.fill.xyz", "sim.fill.xyz", 0),
    ],
)
def test_parse_exec_id(exec_id: str, base: str, revision: int) -> None:
    assert parse_exec_id(exec_id) == (base, revision)


@pytest.mark.parametrize("bad", ["", ".01", None, 5])
def test_parse_exec_id_rejects(bad: object) -> None:
    with pytest.raises(InvalidExecIdError) as err:
        parse_exec_id(bad)  # type: ignore[arg-type]
    assert "exec_id=" in str(err.value)


def test_fill_derives_base_and_revision() -> None:
    f = fill(7, "BUY", 1, 1, revision=3)
    assert f.exec_id_base == "0000e215.00000007.01" and f.revision == 3
    assert f.signed_qty == 1 and fill(8, "SLD", 2, 1).signed_qty == -2


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("qty", -5.0, "qty=-5.0: must be > 0"),
        ("qty", float("nan"), "qty=nan: must be finite"),
        ("qty", 0.0, "qty=0.0: must be > 0"),
        ("price", 0.0, "price=0.0: must be > 0"),
        ("account", "", "account='': must not be empty"),
        ("account", 42, "account=42: must be a string"),
        ("time", datetime(2026, 1, 1), "must be timezone-aware"),
    ],
)
def test_fill_validation_names_field_and_value(field: str, value: object, needle: str) -> None:
    good = fill(1, "BUY", 1, 1)
    changes: dict[str, Any] = {field: value}
    with pytest.raises(InvalidFieldError) as err:
        good._replace(**changes)
    assert err.value.field == field
    assert needle in str(err.value)
    assert isinstance(err.value, InvalidInputError) and isinstance(err.value, LedgerError)
    assert isinstance(err.value, ValueError)


def test_side_parse() -> None:
    assert Side.parse("BOT") is Side.BUY and Side.parse("sld") is Side.SELL
    with pytest.raises(InvalidFieldError, match=r"side='HOLD'"):
        Side.parse("HOLD")


def test_instrument_validation() -> None:
    with pytest.raises(InvalidFieldError, match=r"con_id=0"):
        Instrument(con_id=0, symbol="X")
    with pytest.raises(InvalidFieldError, match=r"multiplier=0"):
        Instrument(con_id=1, symbol="X", multiplier=0)
    assert STOCK.multiplier == 1.0


def test_times_become_utc() -> None:
    est = timezone(timedelta(hours=-5))
    t = require_utc("time", datetime(2026, 11, 20, 9, 30, tzinfo=est))
    assert t.utcoffset() == timedelta(0) and t.hour == 14
    f = fill(1, "BUY", 1, 1)._replace(time=datetime(2026, 11, 20, 9, 30, tzinfo=est))
    assert f.time.tzinfo is not None and f.time.utcoffset() == timedelta(0)


def test_commission_report_unknown_is_nan_and_zero_is_known() -> None:
    assert not CommissionReport("a.01").known
    assert CommissionReport("a.01", 0.0, "USD").known
    with pytest.raises(InvalidFieldError, match=r"commission=inf"):
        CommissionReport("a.01", float("inf"))


def test_tolerances() -> None:
    assert is_flat(1e-12) and not is_flat(1e-6)
    assert money_close(float("nan"), float("nan")) and not money_close(1.0, float("nan"))
    assert money_close(100.0, 100.0 + 1e-9)


def test_fills_and_reports_are_values_that_survive_pickle_copy_and_replace() -> None:
    """Fills and reports are tuples: pickling and copying rebuild them whole (derived fields
    included), and ``_replace`` checks the new values and recomputes what derives from them."""
    import copy
    import pickle

    f = fill(3, "SELL", 2, 101.5)
    report = CommissionReport(f.exec_id, 1.25, "USD", 0.0)  # NaN != a copy of NaN
    for clone in (pickle.loads(pickle.dumps(f)), copy.copy(f), copy.deepcopy(f)):
        assert clone == f and type(clone) is Fill
        assert (clone.exec_id_base, clone.revision) == (f.exec_id_base, f.revision)
    assert pickle.loads(pickle.dumps(report)) == report
    assert type(copy.deepcopy(report)) is CommissionReport
    corrected = f._replace(exec_id=f.exec_id_base + ".02")
    assert (corrected.exec_id_base, corrected.revision) == (f.exec_id_base, 2)
    with pytest.raises(InvalidFieldError, match="qty"):
        f._replace(qty=-1.0)
    with pytest.raises(InvalidFieldError, match="commission"):
        report._replace(commission=float("inf"))
    assert Fill(f.exec_id, f.account, f.strategy, f.instrument, f.side, 2, 101.5,
                f.time).qty.__class__ is float  # a number is kept as float64
