"""Restored keys: a position taken from its stored state, its fills read only when needed."""

from __future__ import annotations

import math

import pytest

from backend.core.ledger import CommissionOutcome, FillOutcome, Ledger, RestoredKey
from backend.core.model import CommissionReport, Fill, Instrument, PositionKey
from backend.errors import ConflictingFillError

from .factories import fill


class Source:
    """Stored fills of one key and how often they were read."""

    def __init__(self, ledger: Ledger, key: PositionKey) -> None:
        self.pairs = [(f, ledger.commission_for(f.exec_id)) for f in ledger.fills_of(key)]
        self.reads = 0

    def load(self) -> list[tuple[Fill, CommissionReport | None]]:
        self.reads += 1
        return list(self.pairs)


def restored(*events: Fill | CommissionReport) -> tuple[Ledger, dict[PositionKey, Source]]:
    """A ledger restarted from the state ``events`` left, every key restored unread."""
    before = Ledger()
    for e in events:
        if isinstance(e, Fill):
            before.apply_fill(e)
        else:
            before.apply_commission(e)
    after, sources = Ledger(), {}
    for key in list(before.keys()):
        src = sources[key] = Source(before, key)
        fills = [f for f, _ in src.pairs]
        totals = before.commissions(key)
        position = before.position(key)
        assert position is not None
        after.restore(key, RestoredKey(
            position=position, last_sort=max(f.sort_key() for f in fills),
            last_price=max(fills, key=Fill.sort_key).price,
            exec_ids=[f.exec_id for f in fills], bases=[f.exec_id_base for f in fills],
            revisions=[f.revision for f in fills],
            commissions=before.commission_counts(key), pending=totals.pending, load=src.load))
    return after, sources


def fold(*events: Fill | CommissionReport) -> Ledger:
    ledger = Ledger()
    for e in events:
        if isinstance(e, Fill):
            ledger.apply_fill(e)
        else:
            ledger.apply_commission(e)
    return ledger


A1, A2 = fill(1, "BUY", 10, 100), fill(2, "BUY", 10, 110)


def test_new_fills_in_order_fold_onto_the_restored_state_without_reading_fills() -> None:
    ledger, sources = restored(A1, A2)
    a3 = fill(3, "SELL", 5, 120)
    assert ledger.apply_fill(a3).outcome is FillOutcome.NEW
    assert ledger.position(A1.key) == fold(A1, A2, a3).position(A1.key)
    assert sources[A1.key].reads == 0 and ledger.restored_keys == 1
    assert len(ledger) == 3 and ledger.knows("DU111", A1.exec_id)
    assert ledger.last_fill_time(A1.key) == a3.time


def test_redelivered_fill_is_a_duplicate_compared_with_the_stored_one() -> None:
    ledger, sources = restored(A1, A2)
    assert ledger.apply_fill(A1).outcome is FillOutcome.DUPLICATE
    assert sources[A1.key].reads == 1 and ledger.restored_keys == 0
    assert ledger.position(A1.key) == fold(A1, A2).position(A1.key)
    with pytest.raises(ConflictingFillError):
        ledger.apply_fill(fill(2, "BUY", 10, 111))


def test_conflicting_redelivery_of_an_unread_fill_is_refused() -> None:
    ledger, _ = restored(A1, A2)
    with pytest.raises(ConflictingFillError):
        ledger.apply_fill(fill(2, "BUY", 10, 111))
    assert ledger.position(A1.key) == fold(A1, A2).position(A1.key)


def test_correction_of_an_unread_fill_replaces_it() -> None:
    ledger, _ = restored(A1, A2)
    corrected = fill(2, "BUY", 4, 90, revision=2, seconds=5)  # later time: in canonical order
    assert ledger.apply_fill(corrected).outcome is FillOutcome.CORRECTION
    assert ledger.position(A1.key) == fold(A1, corrected).position(A1.key)
    assert len(ledger) == 2


def test_stale_revision_of_an_unread_correction_is_ignored() -> None:
    corrected = fill(2, "BUY", 4, 90, revision=2)
    ledger, _ = restored(A1, A2, corrected)
    assert ledger.knows("DU111", A2.exec_id)
    assert ledger.apply_fill(A2).outcome is FillOutcome.STALE
    assert ledger.position(A1.key) == fold(A1, corrected).position(A1.key)


def test_out_of_order_fill_reads_the_key_and_refolds() -> None:
    ledger, sources = restored(A1, A2)
    early = fill(9, "SELL", 3, 105, seconds=1.5)
    ledger.apply_fill(early)
    assert sources[A1.key].reads == 1
    assert ledger.position(A1.key) == fold(A1, early, A2).position(A1.key)


def test_correction_of_a_fill_added_after_restore_moving_it_to_another_strategy() -> None:
    ledger, _ = restored(A1, A2)
    a3 = fill(3, "BUY", 1, 100)
    ledger.apply_fill(a3)
    moved = fill(3, "BUY", 1, 100, strategy="beta", revision=2)
    result = ledger.apply_fill(moved)
    assert result.outcome is FillOutcome.CORRECTION
    expected = fold(A1, A2, moved)
    assert ledger.position(A1.key) == expected.position(A1.key)
    assert ledger.position(moved.key) == expected.position(moved.key)


def test_late_commission_for_an_unread_fill_is_counted_once() -> None:
    ledger, _ = restored(A1, A2, CommissionReport(A1.exec_id, 1.0, "USD"))
    assert ledger.commissions(A1.key).pending == 1
    ledger.apply_commission(CommissionReport(A2.exec_id, 2.5, "USD"))
    totals = ledger.commissions(A1.key)
    assert (totals.by_currency, totals.pending) == ((("USD", 3.5),), 0)
    ledger.apply_commission(CommissionReport(A1.exec_id, 1.0, "USD"))  # duplicate
    assert ledger.commissions(A1.key).by_currency == (("USD", 3.5),)


def test_loader_missing_an_execution_is_an_error_not_a_silent_loss() -> None:
    ledger = Ledger()
    ledger.restore(A1.key, RestoredKey(
        position=fold(A1, A2).position(A1.key),  # type: ignore[arg-type]
        last_sort=A2.sort_key(), last_price=A2.price,
        exec_ids=[A1.exec_id, A2.exec_id], bases=[A1.exec_id_base, A2.exec_id_base],
        revisions=[1, 1],
        commissions={}, pending=2, load=lambda: [(A1, None)]))
    with pytest.raises(ValueError, match=r"exec_id='0000e215\.00000002\.01\.01'"):
        ledger.fills_of(A1.key)


def test_restore_refuses_a_key_already_in_the_ledger() -> None:
    ledger = fold(A1)
    with pytest.raises(ValueError, match="key="):
        ledger.restore(A1.key, RestoredKey(
            position=ledger.position(A1.key),  # type: ignore[arg-type]
            last_sort=A1.sort_key(), last_price=A1.price, exec_ids=[], bases=[], revisions=[],
            commissions={}, pending=0,
            load=lambda: []))


# ---------------------------------------------------------------- adversarial restart cases
# Each case: a ledger restarted from the state some events left, then more events, must end
# where one uninterrupted run ends (positions, marks, commissions, dedupe), and read fills
# only when it has to.

MSFT_ = Instrument(con_id=272093, symbol="MSFT", sec_type="STK", currency="USD")


def assert_same_ledger(restored_ledger: Ledger, uninterrupted: Ledger) -> None:
    keys = sorted(uninterrupted.keys())
    assert sorted(restored_ledger.keys()) == keys
    for key in keys:
        assert restored_ledger.position(key) == uninterrupted.position(key), key
        assert restored_ledger.commissions(key) == uninterrupted.commissions(key), key
        assert restored_ledger.last_fill_time(key) == uninterrupted.last_fill_time(key), key
    for con_id in {k.con_id for k in keys} | {A1.con_id, MSFT_.con_id}:
        a, b = restored_ledger.mark(con_id), uninterrupted.mark(con_id)
        assert a == b or (math.isnan(a) and math.isnan(b)), con_id
    assert len(restored_ledger) == len(uninterrupted)
    assert sorted(restored_ledger.fills(), key=Fill.sort_key) == sorted(
        uninterrupted.fills(), key=Fill.sort_key)


def restart_case(before: list[Fill | CommissionReport], after: list[Fill | CommissionReport]
                 ) -> tuple[Ledger, dict[PositionKey, Source], list[object]]:
    """Restart after ``before``, apply ``after``; returns the ledger, its sources and the
    outcomes of ``after`` (compared with the uninterrupted run's by the caller)."""
    ledger, sources = restored(*before)
    reference = fold(*before)
    outcomes: list[object] = []
    for e in after:
        if isinstance(e, Fill):
            got, want = ledger.apply_fill(e), reference.apply_fill(e)
            assert (got.outcome, got.fill, got.replaced) == (want.outcome, want.fill,
                                                             want.replaced), e
            assert set(got.affected) == set(want.affected), e
            outcomes.append(got.outcome)
        else:
            got_c, want_c = ledger.apply_commission(e), reference.apply_commission(e)
            assert got_c == want_c, e
            outcomes.append(got_c)
    assert_same_ledger(ledger, reference)
    return ledger, sources, outcomes


def test_correction_moves_an_unread_fill_to_another_strategy_and_instrument() -> None:
    b1 = fill(5, "SELL", 3, 50, instrument=MSFT_, strategy="beta")
    moved = fill(2, "BUY", 10, 110, strategy="beta", instrument=MSFT_, revision=2, seconds=9)
    _, sources, outcomes = restart_case([A1, A2, b1], [moved, A2, moved])
    assert outcomes == [FillOutcome.CORRECTION, FillOutcome.STALE, FillOutcome.DUPLICATE]
    assert sources[A1.key].reads == 1


def test_correction_moves_the_only_fill_of_an_unread_key_away_then_the_key_reopens() -> None:
    only = fill(7, "BUY", 2, 100, instrument=MSFT_)
    moved = fill(7, "BUY", 2, 100, instrument=MSFT_, strategy="beta", revision=2)
    again = fill(8, "SELL", 1, 101, instrument=MSFT_)
    ledger, _, _ = restart_case([A1, only], [moved, again])
    assert ledger.position(moved.key) == fold(moved).position(moved.key)
    assert ledger.position(only.key) == fold(again).position(only.key)


def test_commission_in_another_currency_for_an_unread_fill() -> None:
    usd = CommissionReport(A1.exec_id, 1.0, "USD")
    eur = CommissionReport(A1.exec_id, 0.9, "EUR")
    ledger, _, outcomes = restart_case(
        [A1, A2, usd, CommissionReport(A2.exec_id, 2.0, "USD")],
        [eur, CommissionReport(A2.exec_id, 2.0, "USD")])
    assert outcomes == [CommissionOutcome.CHANGED, CommissionOutcome.DUPLICATE]
    totals = ledger.commissions(A1.key)
    assert (totals.by_currency, totals.pending) == ((("EUR", 0.9), ("USD", 2.0)), 0)
    assert math.isnan(totals.total)


def test_commission_for_a_fill_added_after_restart_is_counted_without_reading() -> None:
    a3 = fill(3, "BUY", 1, 100)
    ledger, sources, _ = restart_case(
        [A1, A2, CommissionReport(A1.exec_id, 1.0, "USD")],
        [a3, CommissionReport(a3.exec_id, 0.5, "EUR")])
    assert sources[A1.key].reads == 1  # the final comparison reads every fill
    totals = ledger.commissions(A1.key)
    assert (totals.by_currency, totals.pending) == ((("EUR", 0.5), ("USD", 1.0)), 1)


def test_equal_times_order_by_exec_id_after_restart() -> None:
    """A new fill at the time of the restored key's last fill folds onto it when its exec_id
    sorts after that fill's, and makes the key refold from its fills when it sorts before."""
    late = fill(9, "SELL", 4, 120, seconds=2)  # same time as A2, exec_id sorts after
    ledger, sources = restored(A1, A2)
    ledger.apply_fill(late)
    assert sources[A1.key].reads == 0
    assert ledger.position(A1.key) == fold(A1, A2, late).position(A1.key)
    before_a2 = Fill(exec_id="0000e215.00000001.00.01", account="DU111", strategy="alpha",
                     instrument=A1.instrument, side=A1.side, qty=2, price=130,
                     time=A2.time)  # same time as A2, exec_id sorts before A2's
    assert before_a2.sort_key() < A2.sort_key()
    ledger.apply_fill(before_a2)
    assert sources[A1.key].reads == 1
    assert ledger.position(A1.key) == fold(A1, A2, late, before_a2).position(A1.key)
    restart_case([A1, A2], [late, before_a2])


def test_flat_restored_key_reopens_without_reading_its_fills() -> None:
    closed = fill(3, "SELL", 20, 120)
    reopen = fill(4, "SELL", 5, 130)
    ledger, sources = restored(A1, A2, closed)
    assert ledger.position(A1.key).is_flat  # type: ignore[union-attr]
    ledger.apply_fill(reopen)
    assert sources[A1.key].reads == 0
    assert ledger.position(A1.key) == fold(A1, A2, closed, reopen).position(A1.key)
    restart_case([A1, A2, closed], [reopen])


def test_stale_revision_with_other_facts_after_restart_is_ignored() -> None:
    corrected = fill(2, "BUY", 4, 90, revision=3)
    stale = fill(2, "SELL", 7, 95, revision=2, seconds=30)  # never seen, older revision
    ledger, _, outcomes = restart_case([A1, A2, corrected], [stale, A2])
    assert outcomes == [FillOutcome.STALE, FillOutcome.STALE]
    assert ledger.knows("DU111", stale.exec_id) and not ledger.knows(
        "DU111", fill(2, "BUY", 4, 90, revision=4).exec_id)


def test_correction_moves_a_fill_into_an_unread_key_before_its_last_fill() -> None:
    b1 = fill(5, "BUY", 3, 50, strategy="beta")
    into_alpha = fill(5, "BUY", 3, 50, revision=2, seconds=1.5)  # between A1 and A2
    _, sources, _ = restart_case([A1, A2, b1], [into_alpha])
    assert sources[A1.key].reads == 1 and sources[b1.key].reads == 1


def test_two_accounts_with_the_same_exec_id_base_are_two_executions() -> None:
    other = fill(1, "SELL", 3, 99, account="DU222")  # same exec_id as A1, other account
    corrected_other = fill(1, "SELL", 2, 98, account="DU222", revision=2)
    _, _, outcomes = restart_case([A1, A2, other], [corrected_other, A1])
    assert outcomes == [FillOutcome.CORRECTION, FillOutcome.DUPLICATE]


def test_restored_executions_add_nothing_for_the_garbage_collector_to_track() -> None:
    """A restart restores up to millions of executions unread: their identities must be
    plain (untracked) entries, not one tracked object each, or every full collection of the
    process scans them all."""
    import gc

    source = fold(A1)
    position = source.position(A1.key)
    assert position is not None
    n = 5000
    exec_ids = [f"0000e215.{i:08x}.01.01" for i in range(n)]
    bases = [e.rsplit(".", 1)[0] for e in exec_ids]
    key = RestoredKey(position=position, last_sort=A1.sort_key(), last_price=A1.price,
                      exec_ids=exec_ids, bases=bases, revisions=[1] * n, commissions={},
                      pending=n, load=list)
    ledger = Ledger()
    gc.collect()
    before = len(gc.get_objects())
    ledger.restore(A1.key, key)
    gc.collect()
    assert len(gc.get_objects()) - before < 50  # not one per execution
    assert ledger.knows("DU111", exec_ids[-1]) and len(ledger) == n
