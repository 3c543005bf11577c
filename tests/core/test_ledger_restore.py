"""Restored keys: a position taken from its stored state, its fills read only when needed."""

from __future__ import annotations

import pytest

from backend.core.ledger import FillOutcome, Ledger, RestoredKey
from backend.core.model import CommissionReport, Fill, PositionKey
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
