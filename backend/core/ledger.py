"""The ledger: every live fill and commission report, and the positions folded from them.

Rules (each one is tested, several as Hypothesis properties):

* Identity of an execution is (account, exec_id base). A fill whose exec_id was seen before
  with the same facts (:meth:`Fill.facts`) is a duplicate: no change. Same exec_id, other facts:
  :class:`ConflictingFillError` naming both versions; nothing changes.
* A fill whose base matches a live fill and whose revision is higher is a correction: it
  REPLACES the earlier execution (quantity, price and time may all differ) and the positions it
  touches are refolded. A lower revision arriving after its correction is stale: ignored,
  whatever its facts. Only the live revision's facts are kept, so a copy of a superseded
  revision that differs from what was first received is not detected as a conflict once the
  correction is in (before it, the same copy raises :class:`ConflictingFillError`): the
  correction replaced that execution, so its old facts no longer affect any state.
* A commission report is keyed by exact exec_id, may arrive before its fill, after it, or
  never. Unknown commissions stay unknown (counted as pending), never 0. A report for an
  exec_id that is later corrected away stops counting with it.
* Canonical order: fills of one position fold in (execution time, exec_id) order. A fill that
  arrives in that order is applied incrementally; one that arrives earlier than the last applied
  fill of its position triggers a refold of that position. Hence any delivery order of the same
  set of fills yields the same state, bit for bit (commission sums, added in delivery order,
  agree within the numeric tolerance of :mod:`backend.core.model`).
* Restored keys (restart): a position may be restored from its stored state
  (:meth:`Ledger.restore`) with its fills left unread. Its executions are still known (a
  re-delivered fill or a late commission report for one of them is recognised), and new fills
  in canonical order fold onto the restored state. Anything that needs the fills themselves
  (a duplicate to compare, a correction, an out-of-order fill, a commission report for one of
  them, a query for them) first loads them and refolds the key from its fills: the restored
  state is a cache of the fold, never a second truth. A plain copy of one of its executions
  (what a reconnect re-sends) needs none of that: :meth:`Ledger.repeats_sealed` recognises it
  from a hash of its facts and report, so the manager drops it without reading anything
  (a property checks every copy so recognised is a no-op for a ledger that never sealed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from itertools import chain, islice, repeat
from typing import Any, NamedTuple, TypeVar, overload

from backend.core.model import (
    NAN,
    SIDE_TEXT,
    CommissionReport,
    Fill,
    Instrument,
    PositionKey,
    Side,
    parse_exec_id,
)
from backend.core.position import Position, apply_fill, empty_position, fold
from backend.errors import ConflictingFillError

_T = TypeVar("_T")
# Returns a restored or sealed key's fills, each with its commission report or None.
Loader = Callable[[], Iterable[tuple[Fill, CommissionReport | None]]]


class FillOutcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CORRECTION = "correction"
    STALE = "stale"  # an older revision of an execution already corrected


class CommissionOutcome(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CHANGED = "changed"  # a re-sent report with other numbers: the later one wins
    IGNORED = "ignored"  # an unknown (empty) report never erases a known one


class FillResult(NamedTuple):  # a NamedTuple: one is built per fill
    outcome: FillOutcome
    fill: Fill  # the live fill after this step
    replaced: Fill | None  # for a correction, the fill it replaced
    affected: tuple[PositionKey, ...]  # positions whose state changed


@dataclass(frozen=True, slots=True)
class CommissionTotals:
    """Known commissions of a position, per currency, and how many fills still lack one."""

    by_currency: tuple[tuple[str, float], ...]
    pending: int

    @property
    def total(self) -> float:
        """The sum when all known commissions share one currency; NaN when mixed or none."""
        if len(self.by_currency) != 1:
            return NAN if len(self.by_currency) > 1 or self.pending else 0.0
        return self.by_currency[0][1]

    @property
    def currency(self) -> str:
        return ",".join(ccy for ccy, _ in self.by_currency)


@dataclass(frozen=True, slots=True)
class RestoredKey:
    """A position restored from its stored state, its fills not read (see :meth:`Ledger.restore`).

    ``exec_ids``, ``bases`` and ``revisions`` (parallel) identify its live fills;
    ``commissions`` the known commissions per currency as (sum, number of reports) and
    ``pending`` how many of them lack a report; ``last_sort`` the canonical sort key of its
    last fill and ``last_price`` that fill's price (its observation of the mark). ``load``
    returns the fills, with
    their commission report or None, when they are needed: it must return exactly the
    executions listed (the caller checked the stored state against them).
    """

    position: Position
    last_sort: tuple[datetime, str]
    last_price: float
    exec_ids: Sequence[str]
    bases: Sequence[str]
    revisions: Sequence[int]
    commissions: dict[str, tuple[float, int]]
    pending: int
    load: Loader
    # Optional: returns each execution's facts_print() (parallel to exec_ids) and the
    # report_print() of those stored with a report, computed the first time a copy of one of
    # them arrives. With them a re-delivered copy is recognised without reading the fills
    # (:meth:`Ledger.repeats_sealed`).
    prints: Callable[[], tuple[Sequence[int], dict[str, int]]] | None = None


@dataclass(frozen=True, slots=True)
class Unsealing:
    """A sealed key's fills, read and folded by :meth:`Ledger.read_sealed`, for
    :meth:`Ledger.install`: ``on_top`` fills were folded on the key since it was sealed;
    ``fills`` (with ``bases``, parallel) are the ones read, ``reports`` their commission
    reports the ledger does not hold yet, ``comm``/``pending`` the key's commission counts
    over all its fills, ``position`` their fold and ``last`` the last in canonical order."""

    key: PositionKey
    restored: RestoredKey
    on_top: int
    fills: list[Fill]
    bases: list[str]
    reports: list[tuple[str, CommissionReport]]
    comm: dict[str, tuple[float, int]]
    pending: int
    position: Position
    last: Fill


class Ledger:
    """In-memory state of the books. Pure: no I/O, no clocks."""

    def __init__(self) -> None:
        # (account, exec_id_base) -> live fill (highest revision seen)
        self._live: dict[tuple[str, str], Fill] = {}
        # position -> {exec_id_base: fill}
        self._by_key: dict[PositionKey, dict[str, Fill]] = {}
        self._positions: dict[PositionKey, Position] = {}
        self._last_sort: dict[PositionKey, tuple[datetime, str]] = {}
        self._last_price: dict[PositionKey, float] = {}  # price of that last fill
        self._commissions: dict[str, CommissionReport] = {}
        # exec_id -> live fill key, to attribute late commission reports. The keys are the
        # interned instances of _keys: a fill's ``key`` is a new tuple each time, and one per
        # stored fill would be one more object for every full garbage collection to scan.
        self._exec_key: dict[str, PositionKey] = {}
        self._keys: dict[PositionKey, PositionKey] = {}
        # position -> currency -> (sum of known commissions, how many reports): a currency
        # whose last report is corrected away disappears (a sum that only cancelled to 0.0
        # would otherwise read as a known zero commission).
        self._comm: dict[PositionKey, dict[str, tuple[float, int]]] = {}
        self._pending: dict[PositionKey, int] = {}
        # con_id -> ((time, tie-break), price): the mark is the newest observation among the
        # quotes (set_mark) and the LIVE fills (ties by exec_id), so marks too are independent
        # of delivery order: a fill corrected away stops being an observation.
        self._marks: dict[int, tuple[tuple[datetime, str], float]] = {}
        self._quotes: dict[int, tuple[tuple[datetime, str], float]] = {}  # newest quote
        # Restored keys whose fills are not loaded yet: key -> loader, and their executions
        # by (account, base) -> key and -> revision, and by exec_id -> key. Two flat maps
        # rather than one of (key, revision) pairs: a pair holding a key is an object the
        # garbage collector tracks, one per restored execution (200k of them doubled a full
        # collection after a restart); string pairs and ints are not tracked.
        self._sealed: dict[PositionKey, RestoredKey] = {}
        self._sealed_live: dict[tuple[str, str], PositionKey] = {}
        self._sealed_rev: dict[tuple[str, str], int] = {}
        self._sealed_exec: dict[str, PositionKey] = {}
        # exec_id -> facts_print / report_print of sealed executions whose prints are known
        # (ints: untracked by the garbage collector)
        self._sealed_facts: dict[str, int] = {}
        self._sealed_report: dict[str, int] = {}
        self._unprinted: dict[PositionKey, RestoredKey] = {}  # prints not computed yet

    # -------------------------------------------------------------- restore
    def restore(self, key: PositionKey, restored: RestoredKey) -> None:
        """Take ``key``'s state as given (a stored position row checked against its fills),
        without its fills. Only for a key this ledger has not seen."""
        if key in self._positions or key in self._by_key:
            raise ValueError(f"restore: key={key!r} is already in the ledger")
        key = self._intern(key)
        self._positions[key] = restored.position
        self._last_sort[key] = restored.last_sort
        self._last_price[key] = restored.last_price
        self._set_mark(key.con_id, restored.last_price, restored.last_sort)
        self._comm[key] = dict(restored.commissions)
        self._pending[key] = restored.pending
        self._sealed[key] = restored  # its executions known, their fills unread
        self._register(key, restored.exec_ids, restored.bases, restored.revisions)
        if restored.prints is not None:
            self._unprinted[key] = restored

    def _register(self, key: PositionKey, exec_ids: Sequence[str], bases: Sequence[str],
                  revisions: Sequence[int]) -> None:
        """Know these executions of ``key`` while their fills are unread (restore, seal)."""
        # C-level loops: a restart restores up to millions of executions this way.
        idents = list(zip(repeat(key.account), bases, strict=False))
        self._sealed_live.update(dict.fromkeys(idents, key))
        self._sealed_rev.update(zip(idents, revisions, strict=True))
        self._sealed_exec.update(dict.fromkeys(exec_ids, key))

    def _unseal(self, key: PositionKey) -> None:
        """Load a restored (or sealed) key's fills and refold it from them."""
        work = self.read_sealed(key)
        if work is not None:
            self.install(work)

    def read_sealed(self, key: PositionKey) -> Unsealing | None:
        """Read a sealed key's fills and fold the key from them, changing nothing (None when
        the key is not sealed): the costly part of unsealing (~6-9 us per fill, Dec 2), so the
        PortfolioManager runs it in a worker thread for a big key while no event is folded,
        then :meth:`install` s it on the event loop (C-level dict updates, ~2 us per fill)."""
        restored = self._sealed.get(key)
        if restored is None:
            return None
        # Fills folded on the key since it was sealed: one C-level copy (atomic under the GIL
        # when this runs in a thread; install() checks the key did not move on since).
        on_top = list(self._by_key.get(key, {}).values())
        loaded = list(restored.load())
        fills = [f for f, _ in loaded]
        account = key.account
        bases = [f.exec_id_base for f in fills]
        if (len(fills) != len(restored.bases) or set(bases) != set(restored.bases)
                or any(f.account != account for f in fills)):
            # the loader's duty; never trust it blindly
            read = set(bases)
            for exec_id, base in zip(restored.exec_ids, restored.bases, strict=True):
                if base not in read:
                    raise ValueError(f"restore: exec_id={exec_id!r} of key={key!r} was not "
                                     f"loaded")
            raise ValueError(f"restore: the loader of key={key!r} returned {len(fills)} fills "
                             f"for {len(restored.bases)} executions (or another account's)")
        # A report already held for one of them wins over the one kept with it.
        known = self._commissions
        # A report without a known commission is never held (apply_commission ignores it),
        # so one read back from storage is not either.
        reports = [(f.exec_id, r) for f, r in loaded
                   if r is not None and r.known and f.exec_id not in known]
        merged = dict(reports)
        comm: dict[str, tuple[float, int]] = {}
        pending = 0
        for fill in (*on_top, *fills):  # the order _count_commission would add them in
            report = known.get(fill.exec_id) or merged.get(fill.exec_id)
            if report is None or not report.known:
                pending += 1
                continue
            total, n = comm.get(report.currency, (0.0, 0))
            comm[report.currency] = (total + report.commission, n + 1)
        everything = [*fills, *on_top]
        return Unsealing(key, restored, len(on_top), fills, bases, reports, comm, pending,
                         fold(everything), max(everything, key=Fill.sort_key))

    def install(self, work: Unsealing) -> bool:
        """Take the fills :meth:`read_sealed` read; False (nothing changed) when the key moved
        on since (unsealed, or a fill folded on top): it is then unsealed when next needed."""
        key, restored = work.key, work.restored
        fills = self._by_key.get(key)
        if self._sealed.get(key) is not restored or len(fills or ()) != work.on_top:
            return False
        del self._sealed[key]
        if fills is None:
            fills = self._by_key[key] = {}
        idents = list(zip(repeat(key.account), work.bases, strict=False))
        exec_ids = [f.exec_id for f in work.fills]
        sealed_live, sealed_rev, sealed_exec = (self._sealed_live, self._sealed_rev,
                                                self._sealed_exec)
        for ident in idents:
            sealed_live.pop(ident, None)
            sealed_rev.pop(ident, None)
        sealed_facts, sealed_report = self._sealed_facts, self._sealed_report
        self._unprinted.pop(key, None)
        for exec_id in restored.exec_ids:
            sealed_exec.pop(exec_id, None)
            sealed_facts.pop(exec_id, None)
            sealed_report.pop(exec_id, None)
        self._live.update(zip(idents, work.fills, strict=True))
        fills.update(zip(work.bases, work.fills, strict=True))
        self._exec_key.update(dict.fromkeys(exec_ids, key))
        self._commissions.update(work.reports)
        self._comm[key], self._pending[key] = work.comm, work.pending
        # The fold of every fill of the key (as _refold would): the restored state was a
        # cache of it, never a second truth.
        self._positions[key] = work.position
        self._last_sort[key] = work.last.sort_key()
        self._last_price[key] = work.last.price
        return True

    def repeats_sealed(self, fill: Fill | None, report: CommissionReport | None) -> bool:
        """True when folding ``fill`` and then ``report`` (for the same execution; either may
        be None) would change nothing and both concern a sealed execution: a stale revision
        (dropped with whatever report it carries, as the manager folds a message), or a copy
        with the same facts, with no report, an unknown one that erases nothing, or the same
        report. Known from the executions' prints, without reading the key's fills
        (a reconnect or a restart re-delivers the day's executions). False whenever in doubt
        (no prints, another execution's report, anything that is not a no-op): the normal
        path then reads the key. A print is a 64-bit hash: two different executions with one
        exec_id whose prints collide (odds ~2**-64) would go unreported as a conflict."""
        if not self._sealed_exec:
            return False
        if fill is not None:
            ident = (fill.account, fill.exec_id_base)
            revision = self._sealed_rev.get(ident)
            if revision is None:
                return False
            if fill.revision < revision:
                return True  # stale: dropped before its report is looked at
            exec_id = fill.exec_id
            if self._unprinted:
                self.compute_prints(self._sealed_live[ident])
            if ((report is not None and report.exec_id != exec_id)
                    or self._sealed_facts.get(exec_id) != facts_print(fill)):
                return False
        elif report is None or report.exec_id not in self._sealed_exec:
            return False
        else:
            exec_id = report.exec_id
            if self._unprinted:
                self.compute_prints(self._sealed_exec[exec_id])
        if exec_id in self._commissions:
            return False  # a report held beside the sealed one: the normal path decides
        if report is None:
            return True
        if not report.known:
            return True  # an unknown report erases no known one, adds nothing to none: IGNORED
        return self._sealed_report.get(exec_id) == report_print(report)  # else NEW or CHANGED

    def compute_prints(self, key: PositionKey) -> None:
        """Register the prints of a restored key, once (~1 us per execution). Safe in a worker
        thread while the event loop waits: registered only if the key is still sealed and
        unprinted when they are computed."""
        restored = self._unprinted.get(key)
        if restored is None or restored.prints is None:
            return
        try:
            facts, reports = restored.prints()
        except Exception:
            # Prints only spare a read: without them every copy takes the normal path.
            self._unprinted.pop(key, None)
            return
        if self._unprinted.pop(key, None) is restored:  # not unsealed meanwhile (a thread)
            self._sealed_facts.update(zip(restored.exec_ids, facts, strict=True))
            self._sealed_report.update(reports)

    def unprinted_key(self, fill: Fill | None, report: CommissionReport | None
                      ) -> tuple[PositionKey, int] | None:
        """The restored key (and how many executions it holds) whose prints
        :meth:`repeats_sealed` would compute first for this event, if any: the manager
        computes a big key's in a worker thread (:meth:`compute_prints`)."""
        if not self._unprinted:
            return None
        key = None
        if fill is not None:
            key = self._sealed_live.get((fill.account, fill.exec_id_base))
        elif report is not None:
            key = self._sealed_exec.get(report.exec_id)
        restored = self._unprinted.get(key) if key is not None else None
        return None if key is None or restored is None else (key, len(restored.exec_ids))

    def sealed_keys(self, fill: Fill | None, report: CommissionReport | None
                    ) -> list[tuple[PositionKey, int]]:
        """The sealed keys (with how many fills each holds unread) that folding this fill
        and/or commission report would unseal: the key of a sealed execution it repeats or
        corrects, its own key when sealed and it is out of order or a correction, the key of
        a sealed execution the report is for."""
        if not self._sealed:
            return []
        keys: list[PositionKey] = []
        if fill is not None:
            ident = (fill.account, fill.exec_id_base)
            sealed = self._sealed_live.get(ident)
            if sealed is not None:
                keys.append(sealed)
            live = self._live.get(ident)
            correction = sealed is not None or (live is not None
                                                and live.exec_id != fill.exec_id)
            if live is not None and live.exec_id != fill.exec_id:
                # a correction of a fill folded on top of a sealed key reads that key
                old = self._exec_key.get(live.exec_id)
                if old is not None and old in self._sealed and old not in keys:
                    keys.append(old)
            own = self._keys.get(fill.key)
            if own is not None and own in self._sealed and own not in keys:
                last = self._last_sort.get(own)
                if correction or (last is not None and fill.sort_key() <= last):
                    keys.append(own)
        if report is not None:
            sealed = self._sealed_exec.get(report.exec_id)
            if sealed is not None and sealed not in keys:
                keys.append(sealed)
        return [(k, len(self._sealed[k].exec_ids)) for k in keys]

    def seal(self, key: PositionKey, *, settled_only: bool = False,
             keep: Container[tuple[str, str]] = (), limit: int | None = None) -> int:
        """Keep ``key``'s live fills in a compact form the garbage collector does not track
        (tuples of plain values), as a restored key keeps them unread; returns how many were
        sealed. A key sealed before takes the fills folded on it since into its pack.
        ``settled_only``: only fills whose commission is known (what usually still comes for
        a fill is its commission report, and a report for a sealed fill unseals the key).
        ``keep``: (account, exec_id base) of fills to leave live (e.g. not yet written).
        ``limit``: pack at most this many (the oldest folded), so a caller on an event loop
        can seal a big key in slices.

        Why: a long session holds every live fill, and each full collection of the process
        scans every ``Fill`` (200,000 of them took 257-390 ms, Dec 2; sealed, 64 ms, most of
        it the interpreter's own objects). The state of the key (position, commissions,
        marks) stays as it is; anything that needs the fills (a duplicate that is not a plain
        copy, see :meth:`repeats_sealed`; a correction, an out-of-order fill, a commission
        report for one of them, a query) unseals the key first and refolds it from them,
        exactly as for a restored key, so sealing never changes an outcome (property-tested)."""
        fills = self._by_key.get(key)
        if not fills:
            return 0
        known = self._commissions
        # In folding order (no sort: the pack's order is free, a read refolds in canonical order)
        chosen = list(islice((f for f in fills.values()
                              if (not settled_only or ((r := known.get(f.exec_id)) is not None
                                                       and r.known))
                              and (f.account, f.exec_id_base) not in keep), limit))
        if not chosen:
            return 0
        instruments: list[Instrument] = []
        packed = []
        for f in chosen:
            if not instruments or instruments[-1] != f.instrument:
                instruments.append(f.instrument)
            report = known.pop(f.exec_id, None)
            packed.append((f.exec_id, f.account, f.strategy, len(instruments) - 1,
                           SIDE_TEXT[f.side], f.qty, f.price, f.time, f.order_id, f.perm_id,
                           f.order_ref, f.exchange, None if report is None else (
                               report.commission, report.currency, report.realized_pnl)))
            del self._live[(f.account, f.exec_id_base)]
            del self._exec_key[f.exec_id]
            del fills[f.exec_id_base]
        if not fills:
            del self._by_key[key]
        exec_ids = [f.exec_id for f in chosen]
        bases = [f.exec_id_base for f in chosen]
        revisions = [f.revision for f in chosen]
        self._register(key, exec_ids, bases, revisions)
        self._sealed_facts.update(zip(exec_ids, map(facts_print, chosen), strict=True))
        self._sealed_report.update((row[0], row_report_print(*row[-1]))
                                   for row in packed if row[-1] is not None)
        loads: list[Loader] = [_Pack(packed, tuple(instruments))]
        ids: Sequence[str] = exec_ids
        all_bases: Sequence[str] = bases
        all_revisions: Sequence[int] = revisions
        old = self._sealed.get(key)
        if old is not None:
            # One pack more; what was sealed before is neither copied nor read (a busy key is
            # sealed at every sweep of a long session: copying would be quadratic).
            loads[:0] = old.load.parts if isinstance(old.load, _Loads) else [old.load]
            ids, all_bases = _Chain.of(old.exec_ids, exec_ids), _Chain.of(old.bases, bases)
            all_revisions = _Chain.of(old.revisions, revisions)
        self._sealed[key] = RestoredKey(
            position=self._positions[key], last_sort=self._last_sort[key],
            last_price=self._last_price[key], exec_ids=ids, bases=all_bases,
            revisions=all_revisions, commissions=dict(self._comm.get(key, {})),
            pending=self._pending.get(key, 0), load=_Loads(loads))
        return len(chosen)

    def live_count(self, key: PositionKey) -> int:
        """How many of ``key``'s fills are held as objects (not sealed)."""
        return len(self._by_key.get(key, ()))

    def _unseal_all(self) -> None:
        for key in list(self._sealed):
            self._unseal(key)

    @property
    def restored_keys(self) -> int:
        """How many restored keys still have their fills unread."""
        return len(self._sealed)

    # ----------------------------------------------------------------- fills
    def apply_fill(self, fill: Fill) -> FillResult:
        ident = (fill.account, fill.exec_id_base)
        if self._sealed_live:
            sealed = self._sealed_live.get(ident)
            if sealed is not None:  # an execution of a restored key: compare with the real one
                self._unseal(sealed)
        live = self._live.get(ident)
        if live is not None:
            if live.exec_id == fill.exec_id:
                if live.facts() != fill.facts():
                    raise ConflictingFillError(fill.exec_id, live, fill)
                return FillResult(FillOutcome.DUPLICATE, live, None, ())
            if fill.revision < live.revision:
                return FillResult(FillOutcome.STALE, live, None, ())
            return self._correct(live, fill)
        self._live[ident] = fill
        key = self._intern(fill.key)
        self._set_mark(fill.instrument.con_id, fill.price, self._add_to_key(key, fill))
        return FillResult(FillOutcome.NEW, fill, None, (key,))

    def add_new(self, fill: Fill, report: CommissionReport | None) -> PositionKey | None:
        """The common case of ``apply_fill(fill)`` then ``apply_commission(report)`` in one
        step: an execution this ledger has never seen (not live, not sealed, no report held)
        that comes after its position's last fill in canonical order. Returns the position's
        key, the state being exactly what the two calls leave (a property test compares
        them); returns None, changing nothing, for anything else (the caller then takes the
        general path). ``report`` must be None or of ``fill``'s exec_id.

        Why a second path: it is most of what the manager folds, and doing its dict updates
        inline, with the report counted once (instead of counted pending, then moved),
        saves about a third of the step (Dec 2 box: fold 8.2 -> ~5.5 us per fill)."""
        exec_id, base = fill.exec_id, fill.exec_id_base
        ident = (fill.account, base)
        if (ident in self._live or (self._sealed_live and ident in self._sealed_live)
                or exec_id in self._commissions
                or (self._sealed_exec and exec_id in self._sealed_exec)):
            return None
        key = self._intern(fill.key)
        sort_key = fill.sort_key()
        last = self._last_sort.get(key)
        if last is not None and not sort_key > last:
            return None  # out of canonical order: the general path refolds
        self._live[ident] = fill
        fills = self._by_key.get(key)
        if fills is None:
            fills = self._by_key[key] = {}
        fills[base] = fill
        self._exec_key[exec_id] = key
        if report is not None and report.known:
            self._commissions[exec_id] = report  # held first, so it is counted once
        self._count_commission(key, exec_id, +1)  # (an unknown report is never held)
        position = self._positions.get(key)
        self._positions[key] = apply_fill(
            position if position is not None else empty_position(fill), fill)
        self._last_sort[key] = sort_key
        self._last_price[key] = fill.price
        self._set_mark(key.con_id, fill.price, sort_key)
        return key

    def _intern(self, key: PositionKey) -> PositionKey:
        return self._keys.setdefault(key, key)

    def _add_to_key(self, key: PositionKey, fill: Fill) -> tuple[datetime, str]:
        """Add ``fill`` to ``key``'s fills and position; returns its sort key."""
        fills = self._by_key.get(key)
        if fills is None:
            fills = self._by_key[key] = {}
        fills[fill.exec_id_base] = fill
        self._exec_key[fill.exec_id] = key
        self._count_commission(key, fill.exec_id, +1)
        last = self._last_sort.get(key)
        sort_key = fill.sort_key()
        if last is None or sort_key > last:
            # In canonical order: apply incrementally.
            position = self._positions.get(key) or empty_position(fill)
            self._positions[key] = apply_fill(position, fill)
            self._last_sort[key] = sort_key
            self._last_price[key] = fill.price
        else:
            self._refold(key)
        return sort_key

    def _correct(self, old: Fill, new: Fill) -> FillResult:
        # The old fill may sit in a restored key beside unread fills: read them first, so
        # that removing it leaves the key's other fills in place.
        self._unseal(old.key)
        self._live[(new.account, new.exec_id_base)] = new
        old_key, new_key = self._intern(old.key), self._intern(new.key)
        old_fills = self._by_key[old_key]
        del old_fills[old.exec_id_base]
        del self._exec_key[old.exec_id]
        self._count_commission(old_key, old.exec_id, -1)
        if old_fills:
            self._refold(old_key)
        else:
            # Its only fill was corrected away (to another key): the position is gone.
            del self._by_key[old_key]
            self._positions.pop(old_key, None)
            self._last_sort.pop(old_key, None)
            self._last_price.pop(old_key, None)
        self._add_to_key(new_key, new)
        # A correction can move the price: refold so the position reflects the new facts
        # even when the corrected fill keeps its place in canonical order.
        self._refold(new_key)
        self._update_mark(new)
        marked = self._marks.get(old.con_id)
        if marked is not None and marked[0] == old.sort_key():
            self._remark(old.con_id)  # the mark was the replaced fill's observation
        affected = (old_key,) if old_key == new_key else (old_key, new_key)
        return FillResult(FillOutcome.CORRECTION, new, old, affected)

    def _refold(self, key: PositionKey) -> None:
        if key in self._sealed:
            self._unseal(key)  # ends with a refold over every fill of the key
            return
        fills = list(self._by_key[key].values())
        position = fold(fills)
        self._positions[key] = position
        last = max(fills, key=Fill.sort_key)
        self._last_sort[key] = last.sort_key()
        self._last_price[key] = last.price

    # ----------------------------------------------------------- commissions
    def apply_commission(self, report: CommissionReport) -> CommissionOutcome:
        if self._sealed_exec:
            sealed = self._sealed_exec.get(report.exec_id)
            if sealed is not None:
                self._unseal(sealed)
        known = self._commissions.get(report.exec_id)
        if known is not None:
            if _same_report(known, report):
                return CommissionOutcome.DUPLICATE
            if not report.known and known.known:
                return CommissionOutcome.IGNORED
        elif not report.known:
            return CommissionOutcome.IGNORED
        key = self._exec_key.get(report.exec_id)
        if key is not None:
            self._count_commission(key, report.exec_id, -1)
        self._commissions[report.exec_id] = report
        if key is not None:
            self._count_commission(key, report.exec_id, +1)
        return CommissionOutcome.NEW if known is None else CommissionOutcome.CHANGED

    def _count_commission(self, key: PositionKey, exec_id: str, sign: int) -> None:
        report = self._commissions.get(exec_id)
        if report is None or not report.known:
            self._pending[key] = self._pending.get(key, 0) + sign
            return
        by_ccy = self._comm.setdefault(key, {})
        total, n = by_ccy.get(report.currency, (0.0, 0))
        if n + sign == 0:
            del by_ccy[report.currency]
        else:
            by_ccy[report.currency] = (total + sign * report.commission, n + sign)

    def commission_for(self, exec_id: str) -> CommissionReport | None:
        sealed = self._sealed_exec.get(exec_id)
        if sealed is not None:
            self._unseal(sealed)
        return self._commissions.get(exec_id)

    def held_report(self, exec_id: str) -> CommissionReport | None:
        """The report held for the live execution ``exec_id`` (no sealed key is read: a live
        execution's report is never sealed away from it)."""
        return self._commissions.get(exec_id)

    def commissions(self, key: PositionKey) -> CommissionTotals:
        by_ccy = tuple(sorted((ccy, total) for ccy, (total, _) in
                              self._comm.get(key, {}).items()))
        return CommissionTotals(by_ccy, self._pending.get(key, 0))

    def commission_counts(self, key: PositionKey) -> dict[str, tuple[float, int]]:
        """Known commissions of a position per currency as (sum, number of reports)."""
        return dict(self._comm.get(key, {}))

    # ----------------------------------------------------------------- marks
    def _update_mark(self, fill: Fill) -> None:
        self._set_mark(fill.con_id, fill.price, fill.sort_key())

    def set_mark(self, con_id: int, price: float, at: datetime) -> None:
        """Record a market price (a quote); the newest observation, fills included, wins."""
        order = (at, "")
        quote = self._quotes.get(con_id)
        if quote is None or order >= quote[0]:
            self._quotes[con_id] = (order, price)
        self._set_mark(con_id, price, order)

    def _remark(self, con_id: int) -> None:
        """Recompute a mark from the newest quote and the newest live fill of every position
        in ``con_id`` (rare: only after a correction removed the observation it came from)."""
        candidates = [(self._last_sort[k], self._last_price[k]) for k in self._last_sort
                      if k.con_id == con_id]
        quote = self._quotes.get(con_id)
        if quote is not None:
            candidates.append(quote)
        if candidates:
            self._marks[con_id] = max(candidates, key=lambda c: c[0])
        else:
            self._marks.pop(con_id, None)

    def _set_mark(self, con_id: int, price: float, order: tuple[datetime, str]) -> None:
        current = self._marks.get(con_id)
        if current is None or order >= current[0]:
            self._marks[con_id] = (order, price)

    def mark(self, con_id: int) -> float:
        entry = self._marks.get(con_id)
        return entry[1] if entry is not None else NAN

    # --------------------------------------------------------------- queries
    def position(self, key: PositionKey) -> Position | None:
        return self._positions.get(key)

    def positions(self) -> Iterator[Position]:
        return iter(self._positions.values())

    def keys(self) -> Iterable[PositionKey]:
        return self._positions.keys()

    def last_fill_time(self, key: PositionKey) -> datetime | None:
        """Execution time of the key's last fill in canonical order."""
        last = self._last_sort.get(key)
        return last[0] if last is not None else None

    def fills(self) -> Iterator[Fill]:
        self._unseal_all()
        return iter(self._live.values())

    def fills_of(self, key: PositionKey) -> list[Fill]:
        self._unseal(key)
        return sorted(self._by_key.get(key, {}).values(), key=Fill.sort_key)

    def live_fill(self, account: str, exec_id: str) -> Fill | None:
        ident = (account, parse_exec_id(exec_id)[0])
        sealed = self._sealed_live.get(ident)
        if sealed is not None:
            self._unseal(sealed)
        return self._live.get(ident)

    def knows(self, account: str, exec_id: str) -> bool:
        """True when this exact exec_id (or a later revision of it) is already journaled."""
        base, revision = parse_exec_id(exec_id)
        sealed = self._sealed_rev.get((account, base))
        if sealed is not None:
            return sealed >= revision
        live = self._live.get((account, base))
        return live is not None and live.revision >= revision

    def __len__(self) -> int:
        return len(self._live) + len(self._sealed_live)


class _Pack:
    """Sealed fills (see :meth:`Ledger.seal`): plain tuples and the instruments they name."""

    __slots__ = ("instruments", "rows")

    def __init__(self, rows: list[tuple[Any, ...]], instruments: tuple[Instrument, ...]) -> None:
        self.rows, self.instruments = rows, instruments

    def __call__(self) -> list[tuple[Fill, CommissionReport | None]]:
        return [_unpack(row, self.instruments) for row in self.rows]


class _Chain(Sequence[_T]):
    """Lists read as one sequence, in order (the executions of a key sealed more than once),
    without copying them."""

    __slots__ = ("_len", "parts")

    def __init__(self, parts: list[Sequence[_T]]) -> None:
        self.parts = parts
        self._len = sum(len(p) for p in parts)

    @classmethod
    def of(cls, first: Sequence[_T], more: Sequence[_T]) -> _Chain[_T]:
        return cls([*(first.parts if isinstance(first, _Chain) else [first]), more])

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[_T]:
        return chain.from_iterable(self.parts)

    @overload
    def __getitem__(self, index: int) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[_T]: ...
    def __getitem__(self, index: int | slice) -> _T | Sequence[_T]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._len
        for part in self.parts:
            if 0 <= index < len(part):
                return part[index]
            index -= len(part)
        raise IndexError(index)


class _Loads:
    """The loader of a key sealed more than once: its packs (and the restored key's own
    loader, if it was restored), read in order. A flat list, not nested closures: a key
    sealed at every sweep of a long session would nest them thousands deep."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Loader]) -> None:
        self.parts = parts

    def __call__(self) -> list[tuple[Fill, CommissionReport | None]]:
        return [item for part in self.parts for item in part()]


def _unpack(row: tuple[Any, ...], instruments: tuple[Instrument, ...]
            ) -> tuple[Fill, CommissionReport | None]:
    """A sealed fill (see :meth:`Ledger.seal`) and its commission report, as they were."""
    (exec_id, account, strategy, inst, side, qty, price, at, order_id, perm_id, order_ref,
     exchange, report) = row
    fill = Fill(exec_id, account, strategy, instruments[inst], Side(side), qty, price, at,
                order_id, perm_id, order_ref, exchange)
    return fill, (None if report is None else CommissionReport(exec_id, *report))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def facts_print(fill: Fill) -> int:
    """A hash of :meth:`Fill.facts` (equal facts, equal prints), from the values a stored
    ``fills`` row holds too (:func:`row_facts_print`)."""
    return row_facts_print(fill.exec_id, fill.account, fill.instrument.con_id, SIDE_TEXT[fill.side],
                           fill.qty, fill.price, (fill.time - _EPOCH) // _MICROSECOND)


def row_facts_print(exec_id: str, account: str, con_id: int, side: str, qty: float,
                    price: float, micros: int) -> int:
    """:func:`facts_print` of a stored row: ``side`` "BUY"/"SELL", the execution time in
    microseconds since the epoch (UTC)."""
    return hash((exec_id, account, con_id, side, qty, price, micros))


def report_print(report: CommissionReport) -> int:
    """A hash of a report whose commission is known, as :func:`_same_report` compares them
    (a NaN realized PnL equals NaN)."""
    return row_report_print(report.commission, report.currency, report.realized_pnl)


def row_report_print(commission: float, currency: str, realized_pnl: float) -> int:
    """:func:`report_print` of a stored row's report columns."""
    return hash((commission, currency, None if math.isnan(realized_pnl) else realized_pnl))


def _same_report(a: CommissionReport, b: CommissionReport) -> bool:
    def same(x: float, y: float) -> bool:
        return (math.isnan(x) and math.isnan(y)) or x == y

    return (a.currency == b.currency and same(a.commission, b.commission)
            and same(a.realized_pnl, b.realized_pnl))
