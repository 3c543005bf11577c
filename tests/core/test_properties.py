"""Hypothesis properties of the ledger: determinism, order independence, conservation."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from datetime import timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from backend.core.ledger import (
    CommissionOutcome,
    FillOutcome,
    Ledger,
    RestoredKey,
    facts_print,
    report_print,
)
from backend.core.model import CommissionReport, Fill, PositionKey, Side
from backend.core.position import apply_fill, empty_position, fold, fold_numbers
from backend.errors import ConflictingFillError

from .factories import FUTURE, OPTION, STOCK, T0

INSTRUMENTS = (STOCK, FUTURE, OPTION)
PROPERTY = settings(max_examples=1000, deadline=None)


_QTY = st.one_of(st.integers(1, 500).map(float),
                 st.floats(0.0001, 50, allow_nan=False).map(lambda q: round(q, 4)))
_ROW = st.tuples(
    st.sampled_from(INSTRUMENTS),
    st.integers(1, 3),  # revisions of this execution (corrections)
    st.sampled_from(("DU1", "DU2")),
    # Per revision: strategy, side, (qty, price) and second all may change: a correction can
    # move an execution earlier or later, to the other side or into another book.
    st.lists(st.sampled_from(("a", "b")), min_size=3, max_size=3),
    st.lists(st.sampled_from(list(Side)), min_size=3, max_size=3),
    st.lists(st.tuples(_QTY, st.floats(0.01, 1000).map(lambda p: round(p, 2))),
             min_size=3, max_size=3),
    st.lists(st.integers(0, 8), min_size=3, max_size=3),  # few distinct seconds: equal
    # times must order by exec_id
    st.one_of(st.none(), st.floats(0, 5).map(lambda c: round(c, 2))),
)


@st.composite
def fill_sets(draw: st.DrawFn) -> tuple[list[Fill], list[CommissionReport]]:
    """Fills (some executions corrected up to twice) and commission reports."""
    rows = draw(st.lists(_ROW, min_size=1, max_size=20))
    fills: list[Fill] = []
    reports: list[CommissionReport] = []
    for i, (instrument, revisions, account, strategies, sides, qps, seconds, comm) in enumerate(
            rows):
        for rev in range(1, revisions + 1):
            qty, price = qps[rev - 1]
            fills.append(Fill(
                exec_id=f"0000e215.{i:08x}.01.{rev:02x}", account=account,
                strategy=strategies[rev - 1], instrument=instrument, side=sides[rev - 1],
                qty=qty, price=price, time=T0 + timedelta(seconds=seconds[rev - 1]),
            ))
        if comm is not None:
            reports.append(CommissionReport(fills[-1].exec_id, comm, "USD"))
    return fills, reports


def live_of(fills: list[Fill]) -> list[Fill]:
    best: dict[tuple[str, str], Fill] = {}
    for f in fills:
        ident = (f.account, f.exec_id_base)
        if ident not in best or f.revision > best[ident].revision:
            best[ident] = f
    return list(best.values())


def run(events: list[Fill | CommissionReport]) -> Ledger:
    ledger = Ledger()
    for e in events:
        if isinstance(e, Fill):
            ledger.apply_fill(e)
        else:
            ledger.apply_commission(e)
    return ledger


def state(ledger: Ledger) -> tuple[dict[PositionKey, object], dict[int, float | None]]:
    """Positions and marks (NaN as None, so that equal states compare equal)."""
    marks = {i.con_id: ledger.mark(i.con_id) for i in INSTRUMENTS}
    return ({p.key: p for p in ledger.positions()},
            {c: None if math.isnan(m) else m for c, m in marks.items()})


def commissions_close(a: Ledger, b: Ledger) -> bool:
    for key in state(a)[0]:
        ca, cb = a.commissions(key), b.commissions(key)
        if ca.pending != cb.pending or [c for c, _ in ca.by_currency] != [
                c for c, _ in cb.by_currency]:
            return False
        if not all(math.isclose(x, y, abs_tol=1e-9)
                   for (_, x), (_, y) in zip(ca.by_currency, cb.by_currency, strict=True)):
            return False
    return True


@PROPERTY
@given(fill_sets())
def test_replay_equals_an_independent_fold_of_the_live_fills(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    """Replaying the stream (corrections included) gives, per key, the plain fold of its live
    fills, and per instrument the price of its newest live fill as the mark; twice alike."""
    fills, reports = data
    events: list[Fill | CommissionReport] = [*fills, *reports]
    by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
    for f in live_of(fills):
        by_key[f.key].append(f)
    newest: dict[int, Fill] = {}
    for f in live_of(fills):
        if f.con_id not in newest or f.sort_key() > newest[f.con_id].sort_key():
            newest[f.con_id] = f
    marks = {i.con_id: newest[i.con_id].price if i.con_id in newest else None
             for i in INSTRUMENTS}
    expected = ({key: fold(key_fills) for key, key_fills in by_key.items()}, marks)
    assert state(run(events)) == expected
    assert state(run(events)) == expected


@PROPERTY
@given(fill_sets())
def test_fold_equals_applying_each_fill_in_canonical_order(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    """``fold`` (no Position per step) and ``apply_fill`` one fill at a time agree exactly."""
    by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
    for f in live_of(data[0]):
        by_key[f.key].append(f)
    for key_fills in by_key.values():
        ordered = sorted(key_fills, key=Fill.sort_key)
        position = empty_position(ordered[0])
        for f in ordered:
            position = apply_fill(position, f)
        assert fold(key_fills) == position
        # the columnar fold a restart uses on stored fills: the same numbers, bit for bit
        numbers = fold_numbers([f.signed_qty for f in ordered], [f.price for f in ordered],
                               [f.instrument.multiplier for f in ordered])
        expected = (position.qty, position.avg_cost, position.realized_pnl,
                    position.open_price_min, position.open_price_max)
        assert [repr(x) for x in numbers] == [repr(x) for x in expected]


@PROPERTY
@given(fill_sets(), st.data())
def test_any_permutation_and_duplication_gives_the_same_state(
    data: tuple[list[Fill], list[CommissionReport]], draw: st.DataObject
) -> None:
    fills, reports = data
    canonical = run([*sorted(live_of(fills), key=Fill.sort_key), *reports])
    events: list[Fill | CommissionReport] = [*fills, *reports]
    dup_idx = draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    events += [events[i] for i in dup_idx]  # duplicates
    events = draw.draw(st.permutations(events))
    shuffled = run(events)
    assert state(shuffled) == state(canonical)
    assert commissions_close(shuffled, canonical)


@PROPERTY
@given(fill_sets())
def test_net_qty_is_sum_of_signed_live_fill_qty(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    expected: dict[PositionKey, float] = defaultdict(float)
    for f in live_of(fills):
        expected[f.key] += f.signed_qty
    for key, qty in expected.items():
        pos = ledger.position(key)
        assert pos is not None
        assert math.isclose(pos.qty, qty, abs_tol=1e-6)


@PROPERTY
@given(fill_sets(), st.floats(0.01, 1000))
def test_realized_plus_unrealized_equals_cash_flow_pnl(
    data: tuple[list[Fill], list[CommissionReport]], mark: float
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    cash: dict[PositionKey, float] = defaultdict(float)
    for f in live_of(fills):
        cash[f.key] -= f.signed_qty * f.price * f.instrument.multiplier
    for key, flow in cash.items():
        pos = ledger.position(key)
        assert pos is not None
        held = 0.0 if pos.is_flat else pos.qty * mark * pos.instrument.multiplier
        total = pos.realized_pnl + pos.unrealized_pnl(mark)
        scale = sum(f.qty * max(f.price, mark) * f.instrument.multiplier
                    for f in live_of(fills) if f.key == key)
        assert math.isclose(total, flow + held, rel_tol=1e-9, abs_tol=1e-9 * scale + 1e-9)


@PROPERTY
@given(fill_sets())
def test_average_stays_within_prices_that_opened_the_current_side(
    data: tuple[list[Fill], list[CommissionReport]],
) -> None:
    fills, _ = data
    ledger = run(list(fills))
    by_key: dict[PositionKey, list[Fill]] = defaultdict(list)
    for f in live_of(fills):
        by_key[f.key].append(f)
    for key, key_fills in by_key.items():
        # Independent walk: which fills opened the side the position is on now?
        qty: float = 0.0
        opened: list[float] = []  # prices
        for f in sorted(key_fills, key=Fill.sort_key):
            new = qty + f.signed_qty
            if abs(new) < 1e-9:
                qty, opened = 0.0, []
                continue
            if abs(qty) < 1e-9 or (new > 0) != (qty > 0):
                opened = [f.price]  # opened from flat, or flipped by this fill
            elif abs(new) > abs(qty):
                opened.append(f.price)  # increased
            qty = new
        pos = ledger.position(key)
        assert pos is not None
        if opened:
            assert min(opened) <= pos.avg_cost <= max(opened)
        else:
            assert pos.is_flat and math.isnan(pos.avg_cost)


def snapshot(ledger: Ledger) -> dict[PositionKey, RestoredKey]:
    """What a restart restores: every position as stored, its fills readable on demand."""
    out = {}
    for key in list(ledger.keys()):
        fills = ledger.fills_of(key)
        if not fills:
            continue
        pairs = [(f, ledger.commission_for(f.exec_id)) for f in fills]
        totals = ledger.commissions(key)
        position = ledger.position(key)
        assert position is not None
        out[key] = RestoredKey(
            position=position, last_sort=max(f.sort_key() for f in fills),
            last_price=max(fills, key=Fill.sort_key).price,
            exec_ids=[f.exec_id for f in fills], bases=[f.exec_id_base for f in fills],
            revisions=[f.revision for f in fills],
            commissions=ledger.commission_counts(key), pending=totals.pending,
            load=functools.partial(list, pairs),
            prints=functools.partial(lambda p: ([facts_print(f) for f, _ in p], {
                f.exec_id: report_print(r) for f, r in p if r is not None}), pairs))
    return out


@PROPERTY
@given(fill_sets(), st.data())
def test_restored_keys_then_more_events_equal_one_uninterrupted_run(
    data: tuple[list[Fill], list[CommissionReport]], draw: st.DataObject
) -> None:
    """Restart from stored positions (fills unread) + any later events, duplicates of earlier
    ones included, ends in the state of a run that never stopped."""
    fills, reports = data
    events: list[Fill | CommissionReport] = draw.draw(st.permutations([*fills, *reports]))
    cut = draw.draw(st.integers(0, len(events)))
    before, after = events[:cut], events[cut:]
    redelivered = draw.draw(st.lists(st.sampled_from(before), max_size=len(before))
                            if before else st.just([]))
    first = run(before)
    # A report whose fill is not live yet is not stored anywhere: the producer re-sends it.
    live_ids = {f.exec_id for f in first.fills()}
    orphans = [e for e in before if isinstance(e, CommissionReport)
               and e.exec_id not in live_ids]
    after = draw.draw(st.permutations([*after, *redelivered, *orphans]))
    uninterrupted = run([*before, *after])
    restored = Ledger()
    for key, item in snapshot(first).items():
        restored.restore(key, item)
    skipped = 0
    for e in after:
        fill, report = (e, None) if isinstance(e, Fill) else (None, e)
        if restored.repeats_sealed(fill, report):
            skipped += 1  # as the manager does: a copy recognised from the prints is dropped
            continue
        predicted = {key for key, _ in restored.sealed_keys(fill, report)}
        before_keys = set(restored._sealed)
        if isinstance(e, Fill):
            restored.apply_fill(e)
        else:
            restored.apply_commission(e)
        assert before_keys - set(restored._sealed) <= predicted  # what the manager reads ahead
    event(f"copies dropped without reading: {'some' if skipped else 'none'}")
    assert state(restored) == state(uninterrupted)
    assert commissions_close(restored, uninterrupted)
    assert len(restored) == len(uninterrupted)
    assert all(restored.knows(f.account, f.exec_id) for f in fills if f in before + after)
    # Reading every fill (which loads the restored keys) changes nothing.
    assert sorted(restored.fills(), key=Fill.sort_key) == sorted(
        uninterrupted.fills(), key=Fill.sort_key)
    assert restored.restored_keys == 0
    assert state(restored) == state(uninterrupted)


def apply(ledger: Ledger, event: Fill | CommissionReport) -> object:
    """The outcome of one event, comparable across ledgers (a conflict is an outcome too)."""
    try:
        if isinstance(event, Fill):
            result = ledger.apply_fill(event)
            return (result.outcome, result.fill, result.replaced, result.affected)
        return ledger.apply_commission(event)
    except ConflictingFillError as exc:
        return ("conflict", str(exc))


@PROPERTY
@given(fill_sets(), st.data())
def test_sealing_keys_at_any_point_changes_no_outcome_and_no_state(
    data: tuple[list[Fill], list[CommissionReport]], draw: st.DataObject
) -> None:
    """``seal`` (fills kept packed, untracked by the GC) between any two events, on any keys,
    with duplicates, corrections and late reports after it: every outcome and the state equal
    those of a ledger that never sealed."""
    fills, reports = data
    events: list[Fill | CommissionReport] = draw.draw(st.permutations([*fills, *reports]))
    dup_idx = draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events)))
    events += [events[i] for i in dup_idx]
    seal_after = set(draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=6)))
    ahead = set(draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=len(events))))
    plain, sealing = Ledger(), Ledger()
    sealed = repeats = 0
    for i, ev in enumerate(events):
        fill, report = (ev, None) if isinstance(ev, Fill) else (None, ev)
        predicted = {key for key, _ in sealing.sealed_keys(fill, report)}
        if i in ahead:  # as the manager does for a big key: read it first, then install
            for key in predicted:
                work = sealing.read_sealed(key)
                assert work is not None and sealing.install(work)
                assert not sealing.install(work)  # the key moved on: a no-op
        before = set(sealing._sealed)
        # a copy recognised from the prints must be a no-op for a ledger that never sealed
        repeat = sealing.repeats_sealed(fill, report)
        plain_before = (state(plain), plain.commission_for(ev.exec_id), len(plain))
        outcome = apply(plain, ev)
        if repeat:
            repeats += 1
            assert outcome in (CommissionOutcome.DUPLICATE, CommissionOutcome.IGNORED) or (
                isinstance(outcome, tuple)
                and outcome[0] in (FillOutcome.DUPLICATE, FillOutcome.STALE))
            assert (state(plain), plain.commission_for(ev.exec_id), len(plain)) == plain_before
        assert apply(sealing, ev) == outcome
        # sealed_keys names every key the event unseals (the manager relies on it)
        assert before - set(sealing._sealed) <= predicted
        if i in seal_after:
            keys = list(sealing.keys())
            chosen = draw.draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
            for key in chosen:  # a key sealed before takes the fills folded on it since
                sealed += sealing.seal(key, settled_only=draw.draw(st.booleans()),
                                       limit=draw.draw(st.none() | st.integers(1, 4)))
            assert state(sealing) == state(plain)
            assert commissions_close(sealing, plain)
    event(f"sealed fills: {'none' if not sealed else 'some'}; still sealed at the end: "
          f"{sealing.restored_keys > 0}; copies recognised sealed: {repeats > 0}")
    assert state(sealing) == state(plain)
    assert commissions_close(sealing, plain)
    assert len(sealing) == len(plain)
    for f in fills:
        assert sealing.knows(f.account, f.exec_id) == plain.knows(f.account, f.exec_id)
        assert sealing.commission_for(f.exec_id) == plain.commission_for(f.exec_id)
    assert sorted(sealing.fills(), key=Fill.sort_key) == sorted(plain.fills(),
                                                                key=Fill.sort_key)
    assert sealing.restored_keys == 0
    assert state(sealing) == state(plain)


def internals(ledger: Ledger) -> dict[str, object]:
    """Every structure of a ledger, a pending count of 0 the same as none."""
    out = dict(vars(ledger))
    out["_pending"] = {k: v for k, v in ledger._pending.items() if v}
    out["_comm"] = {k: v for k, v in ledger._comm.items() if v}
    for name in ("_sealed", "_unprinted"):  # their loaders are closures: compare the rest
        out[name] = {k: (r.position, r.last_sort, r.last_price, list(r.exec_ids), r.pending,
                         r.commissions) for k, r in getattr(ledger, name).items()}
    return out


@PROPERTY
@given(fill_sets(), st.data())
def test_the_new_execution_path_leaves_what_the_general_path_leaves(
    data: tuple[list[Fill], list[CommissionReport]], draw: st.DataObject
) -> None:
    """``add_new`` (the manager's step for a new execution in order, its report with it) leaves
    exactly the structures ``apply_fill`` then ``apply_commission`` leave, and declines
    (changing nothing) everything else: duplicates, corrections, stale revisions, fills out
    of order, executions of sealed keys, reports already held."""
    fills, reports = data
    by_exec = {r.exec_id: r for r in reports}
    events = draw.draw(st.permutations(fills))
    events += [events[i] for i in draw.draw(st.lists(st.integers(0, len(events) - 1),
                                                    max_size=len(events)))]
    seal_after = set(draw.draw(st.lists(st.integers(0, len(events) - 1), max_size=3)))
    general, lean = Ledger(), Ledger()
    taken = 0
    for i, fill in enumerate(events):
        report = draw.draw(st.sampled_from([
            None, by_exec.get(fill.exec_id), CommissionReport(fill.exec_id)]))
        before = internals(lean)
        key = lean.add_new(fill, report)
        if key is None:
            assert internals(lean) == before  # declined: nothing changed
            apply(lean, fill)
            if report is not None:
                lean.apply_commission(report)
        else:
            taken += 1
            assert key == fill.key
        apply(general, fill)
        if report is not None and general.live_fill(fill.account, fill.exec_id) == fill:
            general.apply_commission(report)
        if i in seal_after:
            for ledger in (general, lean):
                for k in list(ledger.keys()):
                    ledger.seal(k)
        assert internals(lean) == internals(general)
    event(f"new-execution path taken: {'some' if taken else 'none'}")
