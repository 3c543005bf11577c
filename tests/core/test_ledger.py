"""Ledger rules: duplicates, corrections, commissions, attribution, order independence."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from backend.core.ledger import (
    CommissionOutcome,
    FillOutcome,
    Ledger,
    RestoredKey,
    facts_print,
)
from backend.core.model import NAN, CommissionReport, Fill, PositionKey
from backend.core.position import fold
from backend.errors import ConflictingFillError

from .factories import STOCK, fill


def test_same_fill_twice_is_a_no_op() -> None:
    ledger = Ledger()
    f = fill(1, "BUY", 10, 100)
    assert ledger.apply_fill(f).outcome is FillOutcome.NEW
    before = ledger.position(f.key)
    result = ledger.apply_fill(f)
    assert result.outcome is FillOutcome.DUPLICATE
    assert result.affected == ()
    assert ledger.position(f.key) == before
    assert len(ledger) == 1


def test_same_exec_id_different_content_names_both_versions() -> None:
    ledger = Ledger()
    f = fill(1, "BUY", 10, 100)
    ledger.apply_fill(f)
    other = f._replace(qty=11)
    with pytest.raises(ConflictingFillError) as err:
        ledger.apply_fill(other)
    assert err.value.exec_id == f.exec_id
    assert "qty=10" in str(err.value) and "qty=11" in str(err.value)
    assert ledger.position(f.key).qty == 10  # type: ignore[union-attr]


def test_redelivery_with_other_attribution_is_a_duplicate_and_keeps_the_first() -> None:
    ledger = Ledger()
    f = fill(1, "BUY", 10, 100)
    ledger.apply_fill(f)
    again = f._replace(strategy="_unattributed")
    assert ledger.apply_fill(again).outcome is FillOutcome.DUPLICATE
    assert [p.key.strategy for p in ledger.positions()] == ["alpha"]


def test_correction_replaces_original_and_equals_correction_alone() -> None:
    original = fill(1, "BUY", 10, 100, revision=1)
    corrected = fill(1, "BUY", 12, 99.5, revision=2, seconds=5)
    later = fill(2, "SELL", 4, 101)

    ledger = Ledger()
    for f in (original, later, corrected):
        ledger.apply_fill(f)
    alone = Ledger()
    for f in (corrected, later):
        alone.apply_fill(f)

    assert ledger.position(original.key) == alone.position(original.key)
    assert len(ledger) == 2
    pos = ledger.position(original.key)
    assert pos is not None and pos.qty == 8 and pos.avg_cost == 99.5


def test_correction_outcome_and_stale_original_after_correction() -> None:
    original = fill(1, "BUY", 10, 100, revision=1)
    corrected = fill(1, "BUY", 12, 99.5, revision=2)
    ledger = Ledger()
    ledger.apply_fill(original)
    result = ledger.apply_fill(corrected)
    assert result.outcome is FillOutcome.CORRECTION
    assert result.replaced == original
    assert ledger.apply_fill(original).outcome is FillOutcome.STALE
    assert ledger.position(original.key).qty == 12  # type: ignore[union-attr]
    # and the other way round: the original after its correction changes nothing
    other = Ledger()
    other.apply_fill(corrected)
    assert other.apply_fill(original).outcome is FillOutcome.STALE
    assert other.position(original.key) == ledger.position(original.key)


def test_correction_moving_to_another_strategy_refolds_both() -> None:
    original = fill(1, "BUY", 10, 100, strategy="a")
    corrected = fill(1, "BUY", 10, 100, strategy="b", revision=2)
    ledger = Ledger()
    ledger.apply_fill(original)
    result = ledger.apply_fill(corrected)
    assert set(result.affected) == {original.key, corrected.key}
    assert ledger.position(original.key) is None
    assert ledger.position(corrected.key).qty == 10  # type: ignore[union-attr]


def test_two_strategies_on_opposite_sides_of_one_con_id_stay_separate() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill(1, "BUY", 100, 10, strategy="trend"))
    ledger.apply_fill(fill(2, "SELL", 60, 11, strategy="meanrev"))
    trend = ledger.position(PositionKey("DU111", "trend", STOCK.con_id))
    meanrev = ledger.position(PositionKey("DU111", "meanrev", STOCK.con_id))
    assert trend is not None and meanrev is not None
    assert (trend.qty, trend.avg_cost, trend.realized_pnl) == (100, 10, 0)
    assert (meanrev.qty, meanrev.avg_cost, meanrev.realized_pnl) == (-60, 11, 0)


def test_commission_before_after_never_and_unknown_is_not_zero() -> None:
    ledger = Ledger()
    f1, f2, f3 = fill(1, "BUY", 10, 100), fill(2, "BUY", 10, 100), fill(3, "BUY", 10, 100)
    # before its fill
    assert ledger.apply_commission(CommissionReport(f1.exec_id, 1.0, "USD")) is \
        CommissionOutcome.NEW
    for f in (f1, f2, f3):
        ledger.apply_fill(f)
    totals = ledger.commissions(f1.key)
    assert totals.by_currency == (("USD", 1.0),) and totals.pending == 2
    # after its fill; 0.0 is a real, known commission
    ledger.apply_commission(CommissionReport(f2.exec_id, 0.0, "USD"))
    totals = ledger.commissions(f1.key)
    assert totals.total == 1.0 and totals.pending == 1  # f3: never arrived, not counted as 0
    # an empty report never erases a known one
    assert ledger.apply_commission(CommissionReport(f2.exec_id)) is CommissionOutcome.IGNORED
    assert ledger.apply_commission(CommissionReport(f2.exec_id, 0.0, "USD")) is \
        CommissionOutcome.DUPLICATE
    assert ledger.commissions(f1.key).pending == 1


def test_commission_totals_unknown_when_nothing_known() -> None:
    ledger = Ledger()
    f = fill(1, "BUY", 1, 1)
    ledger.apply_fill(f)
    totals = ledger.commissions(f.key)
    assert math.isnan(totals.total) and totals.pending == 1


def test_commission_of_corrected_fill_follows_the_correction() -> None:
    original = fill(1, "BUY", 10, 100, revision=1)
    corrected = fill(1, "BUY", 10, 100.5, revision=2)
    ledger = Ledger()
    ledger.apply_fill(original)
    ledger.apply_commission(CommissionReport(original.exec_id, 1.0, "USD"))
    ledger.apply_fill(corrected)
    # the corrected execution's commission is not known yet: unknown, never a known 0.0
    assert ledger.commissions(original.key).by_currency == ()
    assert ledger.commissions(original.key).pending == 1
    assert math.isnan(ledger.commissions(original.key).total)
    ledger.apply_commission(CommissionReport(corrected.exec_id, 1.25, "USD"))
    assert ledger.commissions(original.key).total == 1.25
    assert ledger.commissions(original.key).pending == 0


def test_commissions_in_several_currencies_are_kept_apart() -> None:
    ledger = Ledger()
    f1, f2 = fill(1, "BUY", 1, 1), fill(2, "BUY", 1, 1)
    ledger.apply_fill(f1)
    ledger.apply_fill(f2)
    ledger.apply_commission(CommissionReport(f1.exec_id, 1.0, "USD"))
    ledger.apply_commission(CommissionReport(f2.exec_id, 2.0, "EUR"))
    totals = ledger.commissions(f1.key)
    assert totals.by_currency == (("EUR", 2.0), ("USD", 1.0))
    assert math.isnan(totals.total) and totals.currency == "EUR,USD"


def test_out_of_order_delivery_refolds() -> None:
    fills = [fill(1, "BUY", 100, 10), fill(2, "SELL", 150, 12), fill(3, "BUY", 50, 11)]
    in_order, reversed_ = Ledger(), Ledger()
    for f in fills:
        in_order.apply_fill(f)
    for f in reversed(fills):
        reversed_.apply_fill(f)
    key = fills[0].key
    assert in_order.position(key) == reversed_.position(key)
    assert in_order.position(key).qty == 0  # type: ignore[union-attr]


def test_equal_times_order_by_exec_id() -> None:
    a = fill(1, "BUY", 10, 10, seconds=0)
    b = fill(2, "SELL", 20, 12, seconds=0)
    x, y = Ledger(), Ledger()
    x.apply_fill(a)
    x.apply_fill(b)
    y.apply_fill(b)
    y.apply_fill(a)
    assert x.position(a.key) == y.position(a.key)


def test_marks_newest_observation_wins_regardless_of_delivery() -> None:
    ledger = Ledger()
    late = fill(2, "BUY", 1, 11)
    early = fill(1, "BUY", 1, 10)
    ledger.apply_fill(late)
    ledger.apply_fill(early)
    assert ledger.mark(STOCK.con_id) == 11
    ledger.set_mark(STOCK.con_id, 12.5, late.time + timedelta(seconds=1))
    assert ledger.mark(STOCK.con_id) == 12.5
    ledger.set_mark(STOCK.con_id, 9.0, early.time)
    assert ledger.mark(STOCK.con_id) == 12.5
    assert math.isnan(ledger.mark(1))


def test_knows_exec_id_and_revisions() -> None:
    ledger = Ledger()
    f = fill(1, "BUY", 1, 1, revision=2)
    ledger.apply_fill(f)
    assert ledger.knows("DU111", f.exec_id)
    assert ledger.knows("DU111", f.exec_id[:-2] + "01")
    assert not ledger.knows("DU111", f.exec_id[:-2] + "03")
    assert not ledger.knows("DU222", f.exec_id)


def test_correction_moved_earlier_stops_being_the_mark() -> None:
    """The mark is the newest LIVE observation: a fill corrected away no longer counts, so
    original-then-correction marks like the correction alone (or correction then original)."""
    other = fill(1, "BUY", 10, 95)
    original = fill(2, "BUY", 10, 100, seconds=10)
    corrected = fill(2, "BUY", 10, 90, revision=2, seconds=5)
    orders = ([other, original, corrected], [other, corrected], [other, corrected, original])
    ledgers = []
    for events in orders:
        ledger = Ledger()
        for f in events:
            ledger.apply_fill(f)
        ledgers.append(ledger)
    for ledger in ledgers:
        assert ledger.mark(STOCK.con_id) == 90  # corrected at t+5 is newer than other at t+1
        pos = ledger.position(other.key)
        assert pos is not None and pos.unrealized_pnl(ledger.mark(STOCK.con_id)) == -50


def test_quote_newer_than_the_corrected_fill_stays_the_mark() -> None:
    ledger = Ledger()
    original = fill(2, "BUY", 10, 100, seconds=10)
    ledger.apply_fill(fill(1, "BUY", 10, 95))
    ledger.apply_fill(original)
    ledger.set_mark(STOCK.con_id, 97.5, original.time - timedelta(seconds=1))
    assert ledger.mark(STOCK.con_id) == 100
    ledger.apply_fill(fill(2, "BUY", 10, 90, revision=2, seconds=0.5))
    assert ledger.mark(STOCK.con_id) == 97.5  # the quote at t+9 is now the newest observation


def test_commission_of_a_fill_corrected_into_another_book_leaves_no_known_zero() -> None:
    """The old book's only known commission went with the correction: what is left is
    unknown (NaN with one pending fill), not a known 0.0."""
    stay = fill(1, "BUY", 10, 100, strategy="a")
    move = fill(2, "BUY", 5, 100, strategy="a")
    ledger = Ledger()
    ledger.apply_fill(stay)
    ledger.apply_fill(move)
    ledger.apply_commission(CommissionReport(move.exec_id, 1.5, "USD"))
    moved = fill(2, "BUY", 5, 100, strategy="b", revision=2)
    ledger.apply_fill(moved)
    ledger.apply_commission(CommissionReport(moved.exec_id, 1.5, "USD"))
    left = ledger.commissions(stay.key)
    assert (left.by_currency, left.pending) == ((), 1)
    assert math.isnan(left.total)
    assert ledger.commissions(moved.key).total == 1.5


def test_stored_fills_share_their_position_key() -> None:
    """A ledger holds every live fill: per fill it should add the fill and nothing a full
    garbage collection must also scan, such as one more key tuple per fill."""
    import gc

    ledger = Ledger()
    fills = [fill(n, "BUY" if n % 3 else "SELL", 1.0, 100.0 + n % 7,
                  strategy=("alpha", "beta")[n % 2]) for n in range(1, 401)]
    fills.append(fill(5, "BUY", 2.0, 101.0, strategy="beta", revision=2))  # a correction
    for f in fills:
        ledger.apply_fill(f)
    del f
    gc.collect()
    keys = [o for o in gc.get_objects() if type(o) is PositionKey]
    assert len(keys) <= 4  # alpha and beta, plus a transient or two; not one per fill


def test_sealing_again_packs_the_fills_folded_since_and_settled_only_keeps_unreported_ones(
) -> None:
    """A busy key is sealed at every sweep: each seal adds the fills folded since to the
    pack (no nesting, no copy of what was sealed); ``settled_only`` leaves fills whose
    commission is not known live, so the report that usually follows does not unseal."""
    ledger, plain = Ledger(), Ledger()
    fills = [fill(n, "BUY" if n % 3 else "SELL", 1.0, 100.0 + n % 7) for n in range(1, 301)]
    key = fills[0].key
    for sweep in range(3):
        for i, f in enumerate(fills[sweep * 100:(sweep + 1) * 100]):
            for led in (ledger, plain):
                led.apply_fill(f)
                if i % 10 != 5:  # most reports arrive; some are late
                    led.apply_commission(CommissionReport(f.exec_id, 0.5, "USD"))
        live = ledger.live_count(key)
        sealed = ledger.seal(key, settled_only=True)
        assert 0 < sealed < live  # the unreported ones stay live
        assert ledger.live_count(key) == live - sealed
        assert ledger.restored_keys == 1  # one key, however many packs
        assert (ledger.position(key), ledger.commissions(key)) == (
            plain.position(key), plain.commissions(key))
    unreported = [f for f in fills if plain.commission_for(f.exec_id) is None]
    assert len(unreported) == 30 and ledger.restored_keys == 1
    for led in (ledger, plain):  # their reports come late: no pack is read for them
        for f in unreported:
            led.apply_commission(CommissionReport(f.exec_id, 0.25, "USD"))
    assert ledger.restored_keys == 1
    assert ledger.seal(key, limit=10) == 10  # in slices: 10 more packed, the rest live
    assert ledger.live_count(key) == len(unreported) - 10
    assert ledger.seal(key) == len(unreported) - 10  # now everything is packed
    assert ledger.live_count(key) == 0
    assert ledger.fills_of(key) == plain.fills_of(key)  # reads all three packs and more
    assert ledger.restored_keys == 0
    assert (ledger.position(key), ledger.commissions(key)) == (
        plain.position(key), plain.commissions(key))
    for f in fills:
        assert ledger.commission_for(f.exec_id) == plain.commission_for(f.exec_id)


def test_the_executions_of_a_key_sealed_in_several_packs_read_as_one_sequence() -> None:
    from backend.core.ledger import _Chain

    chain = _Chain.of(_Chain.of(["a", "b"], []), ["c"])
    assert len(chain.parts) == 3  # flat: a chain of a chain is not nested
    assert (len(chain), list(chain), chain[0], chain[2], chain[-1]) == (3, ["a", "b", "c"],
                                                                       "a", "c", "c")
    assert chain[1:] == ["b", "c"]
    with pytest.raises(IndexError):
        chain[3]


def test_sealing_a_position_takes_its_fills_out_of_the_gc_scan() -> None:
    import gc

    ledger = Ledger()
    fills = [fill(n, "BUY" if n % 3 else "SELL", 1.0, 100.0 + n % 7) for n in range(1, 1001)]
    for f in fills:
        ledger.apply_fill(f)
    ledger.apply_commission(CommissionReport(fills[5].exec_id, 1.25, "USD"))
    key = fills[0].key
    before_state = (ledger.position(key), ledger.commissions(key))
    del f, fills
    gc.collect()
    tracked = len(gc.get_objects())
    assert ledger.seal(key) == 1000
    assert ledger.seal(key) == 0  # sealed already
    gc.collect()
    assert tracked - len(gc.get_objects()) >= 990  # the Fills and the report
    assert (ledger.position(key), ledger.commissions(key)) == before_state
    assert ledger.restored_keys == 1
    assert len(ledger.fills_of(key)) == 1000  # unsealed on demand, as they were
    assert ledger.restored_keys == 0
    assert (ledger.position(key), ledger.commissions(key)) == before_state


def test_a_copy_of_a_sealed_execution_is_recognised_without_reading_its_key() -> None:
    """``repeats_sealed`` says True only where folding would change nothing, from the prints
    registered when the key was sealed; every doubt goes to the normal path (which reads)."""
    ledger = Ledger()
    orig = fill(1, "BUY", 10.0, 100.0)
    fix = fill(1, "BUY", 12.0, 101.0, revision=2)
    plain = fill(2, "SELL", 3.0, 102.0)
    odd = fill(3, "BUY", 1.0, 103.0)
    for f in (orig, fix, plain, odd):
        ledger.apply_fill(f)
    known = CommissionReport(fix.exec_id, 1.25, "USD")
    pnl_only = CommissionReport(odd.exec_id, NAN, "USD", 7.5)  # a report, commission unknown
    ledger.apply_commission(known)
    ledger.apply_commission(pnl_only)
    assert ledger.seal(fix.key) == 3
    repeats = ledger.repeats_sealed
    assert repeats(fix, None) and repeats(fix, known) and repeats(plain, None)
    assert repeats(orig, known)  # a stale revision: dropped with whatever report it carries
    assert not repeats(fix, CommissionReport(plain.exec_id, 1.0, "USD"))  # another's report
    assert repeats(fix, CommissionReport(fix.exec_id))  # unknown: erases nothing
    assert repeats(None, known) and repeats(plain, CommissionReport(plain.exec_id))
    assert not repeats(fix, CommissionReport(fix.exec_id, 1.5, "USD"))  # CHANGED
    assert not repeats(plain, CommissionReport(plain.exec_id, 0.0, "USD"))  # NEW
    # an unknown report is never held (IGNORED), so a copy carrying one changes nothing
    assert repeats(odd, pnl_only) and repeats(odd, CommissionReport(odd.exec_id, NAN, "", 8.0))
    moved = plain._replace(price=102.5)  # same exec_id, other facts: a conflict
    assert not repeats(moved, None)
    # same base and revision, another spelling of the exec_id: not a copy
    respelled = fix._replace(exec_id=fix.exec_id.rsplit(".", 1)[0] + ".2")
    assert respelled.revision == fix.revision and not repeats(respelled, None)
    # attribution and description are not facts: another path's copy is still a copy
    assert repeats(plain._replace(strategy="beta", order_ref="x"), None)
    assert not repeats(fill(4, "BUY", 1.0, 100.0), None)  # a new execution
    assert ledger.restored_keys == 1  # none of this read the key
    with pytest.raises(ConflictingFillError):  # the normal path reads it and names both
        ledger.apply_fill(moved)


def restored_with_one(f: Fill, report: CommissionReport | None = None, prints: Any = None
                      ) -> Ledger:
    """A ledger restored with ``f``'s key holding only ``f`` (its report stored with it)."""
    ledger = Ledger()
    ledger.restore(f.key, RestoredKey(
        position=fold([f]), last_sort=f.sort_key(), last_price=f.price, exec_ids=[f.exec_id],
        bases=[f.exec_id_base], revisions=[f.revision], commissions={}, pending=1,
        load=lambda: [(f, report)], prints=prints))
    return ledger


def test_a_restored_key_without_prints_is_read_for_every_copy() -> None:
    f = fill(1, "BUY", 10.0, 100.0)
    ledger = restored_with_one(f)
    assert not ledger.repeats_sealed(f, None)  # no prints: the normal path decides
    assert ledger.apply_fill(f).outcome is FillOutcome.DUPLICATE
    assert ledger.restored_keys == 0


def test_a_stored_report_of_unknown_commission_is_not_held_once_read_back() -> None:
    """A stored row may hold a report whose commission is unknown (broker PnL only, from
    another writer). A live ledger never holds such a report (apply_commission ignores it),
    so one read back is not held either, and any unknown report is then a copy."""
    f = fill(1, "BUY", 10.0, 100.0)
    stored = CommissionReport(f.exec_id, NAN, "USD", 7.5)
    other = CommissionReport(f.exec_id, NAN, "USD", 8.0)
    live = Ledger()
    live.apply_fill(f)
    assert live.apply_commission(stored) is CommissionOutcome.IGNORED
    assert live.commission_for(f.exec_id) is None

    def restored() -> Ledger:
        return restored_with_one(f, stored, prints=lambda: ([facts_print(f)], {}))

    ledger = restored()
    assert ledger.repeats_sealed(f, other) and ledger.repeats_sealed(f, stored)
    assert not ledger.repeats_sealed(f, CommissionReport(f.exec_id, 2.0, "USD", 7.5))
    assert ledger.apply_commission(other) is CommissionOutcome.IGNORED  # the normal path
    assert ledger.restored_keys == 0 and ledger.commission_for(f.exec_id) is None
    assert ledger.commissions(f.key) == live.commissions(f.key)


def test_prints_that_cannot_be_computed_leave_every_copy_to_the_normal_path() -> None:
    f = fill(1, "BUY", 10.0, 100.0)

    def broken() -> tuple[list[int], dict[str, int]]:
        raise ValueError("a stored column is missing")

    ledger = restored_with_one(f, prints=broken)
    assert ledger.unprinted_key(f, None) == (f.key, 1)
    assert not ledger.repeats_sealed(f, None)
    assert ledger.unprinted_key(f, None) is None  # not tried again
    assert ledger.apply_fill(f).outcome is FillOutcome.DUPLICATE  # read, compared
