"""PortfolioManager ingest benchmark: one run, one process, ratios against baselines measured here.

Measures, on lmdb:// under a temporary directory:

* ``fills_per_s``: sustained fills/s from a subscribed ``asyncio.Queue`` to durable in ArcticDB
  (microbatched path; real ib_async Fill/Trade objects);
* ``naive_fills_per_s``: the naive path, one ArcticDB write per fill per library (fills,
  positions, portfolio), same rows and ledger;
* ``raw_rows_per_s``: the raw ceiling, the same fill rows appended straight to ArcticDB in
  1,000-row batches (frames built before the clock starts);
* ``front_fills_per_s``: the microbatched path with every ArcticDB write dropped (the frames
  are still built): the manager's own work from queue to commit, the bound that no change on
  the storage side (a writer process, a faster backend) can go past;
* ``p50_ms``/``p99_ms``: event-to-durable latency at a fixed offered load of 1,000 fills/s,
  durable = the fill row is in ArcticDB (``state_p50_ms``/``state_p99_ms``: the derived
  positions and portfolio rows too; they are written at most every ``state_interval``);
* ``loop_lag_ms``: the largest event-loop lag seen during that fixed-load phase;
* ``recovery_s``: opening the manager on the root built above after a simulated crash (the
  positions of the throughput phase restored from their rows, checked against ``fills``,
  plus the fixed-load phase's messages replayed from the journal).

``fills_per_s`` and ``raw_rows_per_s`` are medians of ``--repeat`` runs (fresh roots): on a
shared box one 20-append raw run moves by 2x from run to run, which made the ratio noise.

Usage: ``python bench/ingest.py [--fills 20000] [--naive 300] [--seconds 5] [--repeat 3]``.
The last line is one JSON object. ``--recovery-fills N`` only measures recovery of N stored
fills: once with no positions rows (every key refolded from its fills, as after a
disagreement), once from the positions rows the first run wrote. ``--latency-stored N`` only
runs the fixed-load phase (``--seconds``), on a root that holds N fills, after a restart.
``--unseal N`` only measures the event-loop lag when a restored key of N fills is first
needed after a restart (a changed commission report), against reading it on the loop.
``--gc-session N`` only measures a full garbage collection after N fills through one manager,
with ``seal_after`` off and on. ``--redeliver N`` only measures a restart followed by the
re-delivery of its N stored fills (what a reconnect does), against the same with the restored
prints ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from ib_async import CommissionReport, Contract, Execution, Fill, Order, OrderStatus, Trade

from backend.core.messages import FillMessage, parse_message
from backend.core.portfolio_manager import (
    PortfolioManager,
    default_journal_path,
    journal_payload,
)
from backend.pm.rows import fill_frame, fill_row, journal_frame, state_frame
from backend.pm.state import Books, Dirty
from backend.storage import open_store
from backend.storage.api import Store, SymbolWrite
from backend.storage.journal import Journal
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS

T0 = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
ACCOUNTS = ("DU111", "DU222")
STRATEGIES = ("alpha", "beta", "gamma", "delta")
N_CONTRACTS = 50


class Source:
    """Anything with a ``message_queue`` (what StrategyManager offers)."""

    def __init__(self) -> None:
        self.message_queue: asyncio.Queue[Any] = asyncio.Queue()


def make_messages(start: int, count: int, *, one_key: bool = False,
                  reported: bool = False) -> list[dict[str, Any]]:
    """Fills spread over 2 accounts x 4 strategies x 50 contracts (``one_key``: all in the
    first account, strategy and contract); every other one carries its commission report
    (``reported``: every one)."""
    contracts = [Contract(conId=1000 + i, symbol=f"S{i}", secType="STK", currency="USD",
                          exchange="SMART") for i in range(N_CONTRACTS)]
    out = []
    for n in range(start, start + count):
        k = 0 if one_key else n
        strategy = STRATEGIES[k % len(STRATEGIES)]
        contract = contracts[k % N_CONTRACTS]
        eid = f"0000e215.{n:08x}.01.01"
        side = "BOT" if (n // 7) % 2 else "SLD"
        execution = Execution(execId=eid, time=T0 + timedelta(milliseconds=n),
                              acctNumber=ACCOUNTS[k % 2], exchange="NYSE", side=side,
                              shares=float(1 + n % 10), price=100.0 + (n % 13) * 0.25,
                              permId=n, orderId=n, orderRef=strategy)
        report = CommissionReport(execId=eid, commission=1.0, currency="USD") \
            if n % 2 or reported else CommissionReport()
        order = Order(orderId=n, permId=n, action="BUY" if side == "BOT" else "SELL",
                      totalQuantity=execution.shares, orderType="MKT", orderRef=strategy,
                      account=ACCOUNTS[k % 2])
        trade = Trade(contract=contract, order=order,
                      orderStatus=OrderStatus(orderId=n, status="Filled"))
        fill = Fill(contract, execution, report, datetime.now(UTC))
        out.append({"type": "fill", "strategy": strategy, "trade": trade, "fill": fill})
    return out


class DropWrites:
    """A writer store whose commits are dropped after the frames were built: everything the
    manager does but ArcticDB's part. Reads go to the real store (a fresh root: empty)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def commit(self, writes: Sequence[SymbolWrite], *, compact: bool = True) -> None:
        del writes, compact

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def drop_writes(uri: str) -> Store:
    return cast(Store, DropWrites(open_store(uri, writer=True)))


async def throughput(uri: str, messages: list[dict[str, Any]],
                     store_opener: Callable[[str], Store] | None = None) -> float:
    source = Source()
    async with PortfolioManager(uri, store_opener=store_opener) as pm:
        pm.subscribe(source)
        started = time.perf_counter()
        for msg in messages:
            source.message_queue.put_nowait(msg)
        await source.message_queue.join()
        await pm.flush()
        elapsed = time.perf_counter() - started
        report_stats(pm)
    return len(messages) / elapsed


async def front_half(uri: str, messages: list[dict[str, Any]]) -> float:
    """:func:`throughput` with the ArcticDB writes dropped (checked: the root holds no fill)."""
    per_s = await throughput(uri, messages, drop_writes)
    store = open_store(uri, writer=False)
    try:
        written = store.list_symbols(FILLS)
    finally:
        store.close()
    if written:
        raise SystemExit(f"front half: fills reached ArcticDB at {uri}: {written}")
    return per_s


def report_stats(pm: PortfolioManager) -> None:
    for name, (count, total, worst) in sorted(pm.stats.items()):
        print(f"  {name}: {count} x {total / count * 1000:.1f} ms avg, {worst * 1000:.1f} ms max,"
              f" {total:.2f} s total", file=sys.stderr)


def naive(uri: str, messages: list[dict[str, Any]]) -> float:
    """One write per fill per library: the fill row, then the strategy's and the account's
    whole state symbols, through the same Store API and row builders."""
    store = open_store(uri)
    books = Books()
    try:
        started = time.perf_counter()
        for seq, msg in enumerate(messages, start=1):
            event = parse_message(msg, received_at=datetime.now(UTC))
            dirty = Dirty(seq=seq)
            assert isinstance(event, FillMessage)
            books.fold_fill(event, seq, time.time(), dirty)
            batch = books.build(dirty)
            for account, entries in batch.fills.items():
                store.commit([SymbolWrite(FILLS, account, rows=fill_frame(entries))])
            for strategy, prow in batch.positions.items():
                store.commit([SymbolWrite(POSITIONS, strategy, state=state_frame(POSITIONS, prow))])
            for account, prow in batch.portfolio.items():
                store.commit([SymbolWrite(PORTFOLIO, account, state=state_frame(PORTFOLIO, prow))])
        return len(messages) / (time.perf_counter() - started)
    finally:
        store.close()


def raw(root: Path, messages: list[dict[str, Any]]) -> float:
    import arcticdb as adb

    now = datetime.now(UTC)
    events = [parse_message(m, received_at=now) for m in messages]
    rows = [fill_row(e.fill, e.commission, i, now)  # type: ignore[union-attr]
            for i, e in enumerate(events)]
    times = sorted(e.fill.time for e in events)  # type: ignore[union-attr]
    frames = [journal_frame(FILLS, rows[i:i + 1000], times[i:i + 1000])
              for i in range(0, len(rows), 1000)]
    lib = adb.Arctic(f"lmdb://{root}?map_size=4GB").get_library("fills", create_if_missing=True)
    started = time.perf_counter()
    lib.write("raw", frames[0])
    for frame in frames[1:]:
        lib.append("raw", frame)
    return len(rows) / (time.perf_counter() - started)


def max_pause(pauses: list[tuple[int, float]]) -> float:
    return max((ms for _, ms in pauses), default=0.0)


class GcPauses:
    """(generation, ms) of every garbage collection while installed (gc.callbacks)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]),
                                (time.perf_counter() - self._start) * 1000))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class LoopLag:
    """The largest event-loop lag seen between ``start()`` and ``stop()`` (a 1 ms ticker)."""

    def __init__(self) -> None:
        self.max = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max = max(self.max, time.perf_counter() - before - 0.001)

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


async def fixed_load(uri: str, messages: list[dict[str, Any]], rate: float
                     ) -> tuple[list[float], list[float], float, list[tuple[int, float]]]:
    """Offer ``rate`` fills/s; returns event-to-durable latencies (s) of the fill rows and of
    the derived positions/portfolio, the max loop lag and the garbage collections (generation,
    ms) seen meanwhile."""
    source = Source()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    state_latencies: list[float] = []
    lag = LoopLag()

    async with PortfolioManager(uri) as pm:
        done = 0

        state_done = 0

        def durable(receipt: int) -> None:
            nonlocal done
            now = time.perf_counter()
            for r in range(max(done, base) + 1, receipt + 1):
                latencies.append(now - sent[r])
            done = receipt

        def state_durable(receipt: int) -> None:
            nonlocal state_done
            now = time.perf_counter()
            for r in range(max(state_done, base) + 1, receipt + 1):
                state_latencies.append(now - sent[r])
            state_done = max(state_done, receipt)

        pm.on_durable = durable
        pm.on_state_durable = state_durable
        pm.subscribe(source)
        base = pm.received  # a recovery that wrote something took a receipt of its own
        lag.start()
        with GcPauses() as collections:
            started = time.perf_counter()
            for i, msg in enumerate(messages):
                due = started + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[base + i + 1] = time.perf_counter()
                source.message_queue.put_nowait(msg)
            await source.message_queue.join()
            await pm.flush()
        await lag.stop()
        report_stats(pm)
    return latencies, state_latencies, lag.max, collections.pauses


def simulate_crash_journal(uri: str, messages: list[dict[str, Any]]) -> None:
    """Leave ``messages`` in the journal as a crashed manager would (journaled, not persisted)."""
    now = time.time()
    payloads = [journal_payload(m, now) for m in messages]
    with Journal(default_journal_path(uri)) as journal:
        journal.append(payloads)


async def recovery(uri: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with PortfolioManager(uri) as pm:
        elapsed = time.perf_counter() - started
        return elapsed, len(pm.ledger), pm.replayed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        from arcticdb_ext import set_config_int  # type: ignore[import-not-found]

        # Fresh roots: skip ArcticDB's 1 s symbol-list lock wait per new library.
        set_config_int("StorageLock.WaitMs", 10)
        if args.recovery_fills:
            return await recovery_only(work, args.recovery_fills)
        if args.latency_stored:
            return await latency_on_stored(work, args.latency_stored, args.seconds)
        if args.unseal:
            return await unseal_only(work, args.unseal)
        if args.gc_session:
            return await gc_session(work, args.gc_session)
        if args.redeliver:
            return await redeliver_only(work, args.redeliver)
        messages = make_messages(0, args.fills)
        load = make_messages(args.fills, int(args.seconds * 1000))
        uri = f"lmdb://{work / 'micro'}"  # the first run's root: recovery reopens it below
        runs = [await throughput(uri if i == 0 else f"lmdb://{work / f'micro{i}'}", messages)
                for i in range(args.repeat)]
        fills_per_s = statistics.median(runs)
        print(f"microbatched: {fills_per_s:,.0f} fills/s ({args.fills} fills; median of "
              f"{', '.join(f'{r:,.0f}' for r in runs)})", file=sys.stderr)
        naive_per_s = naive(f"lmdb://{work / 'naive'}", make_messages(0, args.naive))
        print(f"naive: {naive_per_s:,.1f} fills/s ({args.naive} fills)", file=sys.stderr)
        raws = [raw(work / f"raw{i}", messages) for i in range(args.repeat)]
        raw_per_s = statistics.median(raws)
        print(f"raw append ceiling: {raw_per_s:,.0f} rows/s (median of "
              f"{', '.join(f'{r:,.0f}' for r in raws)})", file=sys.stderr)
        fronts = [await front_half(f"lmdb://{work / f'front{i}'}", messages)
                  for i in range(args.repeat)]
        front_per_s = statistics.median(fronts)
        print(f"front half (ArcticDB writes dropped): {front_per_s:,.0f} fills/s = "
              f"{front_per_s / raw_per_s:.0%} of raw (median of "
              f"{', '.join(f'{r:,.0f}' for r in fronts)})", file=sys.stderr)
        # The throughput phase's 20,000 ib_async Trades (~1.1M GC-tracked objects: every
        # Trade carries ~20 eventkit Events) belong to that phase; kept alive, they would make
        # each full collection of the latency phase scan them (~100 ms on a slow box).
        del messages
        gc.collect()
        latencies, state_latencies, lag, pauses = await fixed_load(
            f"lmdb://{work / 'latency'}", load, 1000.0)
        cuts = statistics.quantiles([x * 1000 for x in latencies], n=100)
        p50, p99 = statistics.median(latencies) * 1000, cuts[98]
        state_cuts = statistics.quantiles([x * 1000 for x in state_latencies], n=100)
        state_p50, state_p99 = statistics.median(state_latencies) * 1000, state_cuts[98]
        print(f"latency at 1,000 fills/s, fill row durable: p50 {p50:.1f} ms p99 {p99:.1f} ms;"
              f" positions+portfolio durable too: p50 {state_p50:.1f} ms p99 {state_p99:.1f} ms;"
              f" max loop lag {lag * 1000:.1f} ms", file=sys.stderr)
        print(f"garbage collections during that phase: {len(pauses)} (full: "
              f"{sum(1 for g, _ in pauses if g == 2)}), longest {max_pause(pauses):.1f} ms",
              file=sys.stderr)
        simulate_crash_journal(uri, load)
        rec_s, fills, replayed = await recovery(uri)
        print(f"recovery: {rec_s:.2f} s ({fills} fills rebuilt, {replayed} journal entries "
              f"replayed)", file=sys.stderr)
        print(f"ratios: {fills_per_s / naive_per_s:,.0f}x naive (target >= 100x), "
              f"{fills_per_s / raw_per_s:.0%} of raw (target >= 25%), p99 {p99:.1f} ms "
              f"(target <= 50 ms)", file=sys.stderr)
        return {"fills_per_s": round(fills_per_s, 1), "naive_fills_per_s": round(naive_per_s, 2),
                "raw_rows_per_s": round(raw_per_s, 1), "p50_ms": round(p50, 2),
                "front_fills_per_s": round(front_per_s, 1),
                "front_vs_raw": round(front_per_s / raw_per_s, 3),
                "p99_ms": round(p99, 2), "loop_lag_ms": round(lag * 1000, 2),
                "recovery_s": round(rec_s, 3), "state_p50_ms": round(state_p50, 2),
                "state_p99_ms": round(state_p99, 2), "gc_max_ms": round(max_pause(pauses), 1),
                "vs_naive": round(fills_per_s / naive_per_s, 1),
                "vs_raw": round(fills_per_s / raw_per_s, 3), "fills": args.fills,
                "recovered_fills": fills, "replayed": replayed}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def store_fills(uri: str, count: int, *, one_key: bool = False) -> None:
    """Store ``count`` fills straight into ``fills`` (raw appends of 50,000, not timed)."""
    store = open_store(uri)
    try:
        step = 50_000
        now = datetime.now(UTC)
        for start in range(0, count, step):
            msgs = make_messages(start, min(step, count - start), one_key=one_key)
            events = [parse_message(m, received_at=now) for m in msgs]
            by_account: dict[str, tuple[list[Any], list[Any]]] = {}
            for i, e in enumerate(events):
                rows, times = by_account.setdefault(e.fill.account, ([], []))  # type: ignore[union-attr]
                rows.append(fill_row(e.fill, e.commission, start + i, now))  # type: ignore[union-attr]
                times.append(e.fill.time)  # type: ignore[union-attr]
            store.commit([SymbolWrite(FILLS, a, rows=journal_frame(FILLS, r, t))
                          for a, (r, t) in by_account.items()])
        # A root the manager wrote is compacted inline every 100 writes; these bulk appends
        # leave partial segments that its first inline compaction would rewrite (40-60 ms per
        # symbol, once): compact them now, as `portfolio compact` would after a bulk load.
        store.compact(FILLS)
    finally:
        store.close()


async def latency_on_stored(work: Path, count: int, seconds: float) -> dict[str, Any]:
    """The fixed-load phase on a root that already holds ``count`` fills, after a restart
    (positions restored from their rows, fills unread): what a long-lived ledger sees."""
    uri = f"lmdb://{work / 'stored'}?map_size=8GB"
    store_fills(uri, count)
    await recovery(uri)  # the first open refolds and writes the positions rows
    gc.collect()
    load = make_messages(count, int(seconds * 1000))
    started = time.perf_counter()
    latencies, _, lag, pauses = await fixed_load(uri, load, 1000.0)
    cuts = statistics.quantiles([x * 1000 for x in latencies], n=100)
    p50, p99 = statistics.median(latencies) * 1000, cuts[98]
    print(f"with {count:,} fills stored, at 1,000 fills/s: p50 {p50:.1f} ms p99 {p99:.1f} ms; "
          f"max loop lag {lag * 1000:.1f} ms; longest collection {max_pause(pauses):.1f} ms "
          f"({time.perf_counter() - started:.1f} s with the restart)", file=sys.stderr)
    return {"stored_fills": count, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
            "loop_lag_ms": round(lag * 1000, 2), "gc_max_ms": round(max_pause(pauses), 1)}


async def unseal_only(work: Path, count: int) -> dict[str, Any]:
    """A key of ``count`` fills restored (unread) after a restart, then a changed commission
    report for one of them (a plain re-delivered copy is recognised without reading, see
    ``Ledger.repeats_sealed``): the manager reads the key in a worker thread and installs it
    on the event loop; the baseline is the ledger reading it on the loop (as before Dec 2)."""
    uri = f"lmdb://{work / 'unseal'}?map_size=8GB"
    store_fills(uri, count, one_key=True)
    await recovery(uri)  # the first open refolds and writes the positions rows
    copy = make_messages(count // 2, 1, one_key=True)[0]

    def changed_report(commission: float) -> dict[str, Any]:
        fill = copy["fill"]
        return {**copy, "fill": fill._replace(commissionReport=CommissionReport(
            execId=fill.execution.execId, commission=commission, currency="USD"))}
    from backend.core.portfolio_manager import SEAL_SLICE, SEAL_SWEEP

    lags: list[float] = []
    resealed, reseal_lag = 0, 0.0
    for round_no in range(2):  # a warm-up round, then the measured one
        lag = LoopLag()
        async with PortfolioManager(uri) as pm:
            assert pm.ledger.restored_keys == 1
            lag.start()
            with GcPauses() as collections:
                await asyncio.sleep(0.01)
                await pm.process_message(changed_report(2.5 + round_no))
                await pm.flush()
                await lag.stop()
            assert pm.ledger.restored_keys == 0 and "unseal_read" in pm.stats
            read_s, install_s = pm.stats["unseal_read"][1], pm.stats["unseal_install"][1]
            if round_no == 1:  # the next sweep seals the settled fills again, in slices
                key = next(iter(pm.ledger.keys()))
                before = pm.ledger.live_count(key)
                sweep = LoopLag()
                sweep.start()
                await asyncio.sleep(SEAL_SWEEP + 1)
                await sweep.stop()
                resealed, reseal_lag = before - pm.ledger.live_count(key), sweep.max
        lags.append(lag.max)
    async with PortfolioManager(uri) as pm:  # baseline: the same key read on the loop
        key = next(iter(pm.ledger.keys()))
        started = time.perf_counter()
        pm.ledger.fills_of(key)
        on_loop_s = time.perf_counter() - started
    print(f"a restored key of {count:,} fills read for a changed report: max loop lag "
          f"{lags[-1] * 1000:.0f} ms (read {read_s * 1000:.0f} ms in a worker thread, "
          f"installed in {install_s * 1000:.0f} ms on the loop); read on the loop it stalls "
          f"{on_loop_s * 1000:.0f} ms ({on_loop_s / lags[-1]:.1f}x the lag); longest garbage "
          f"collection meanwhile {max_pause(collections.pauses):.0f} ms", file=sys.stderr)
    print(f"the next sweep sealed its {resealed:,} settled fills again in slices of "
          f"{SEAL_SLICE:,}: max loop lag {reseal_lag * 1000:.0f} ms", file=sys.stderr)
    return {"unseal_fills": count, "loop_lag_ms": round(lags[-1] * 1000, 1),
            "read_ms": round(read_s * 1000, 1), "install_ms": round(install_s * 1000, 1),
            "on_loop_ms": round(on_loop_s * 1000, 1),
            "vs_on_loop": round(on_loop_s / lags[-1], 2),
            "gc_max_ms": round(max_pause(collections.pauses), 1), "resealed": resealed,
            "reseal_lag_ms": round(reseal_lag * 1000, 1)}


async def redeliver_only(work: Path, count: int) -> dict[str, Any]:
    """``count`` fills stored (100 keys), then a restart and the re-delivery of every one of
    them, as a reconnect of ib_async re-sends the day's executions: the time from the first
    copy to durable and the largest event-loop lag, with the restored prints
    (``Ledger.repeats_sealed``) against the same run with them ignored (every key read)."""
    from backend.core.ledger import Ledger

    uri = f"lmdb://{work / 'redeliver'}?map_size=8GB"
    store_fills(uri, count)
    await recovery(uri)  # the first open refolds and writes the positions rows
    copies = make_messages(0, count)
    # The copies are built up front (a reconnect sends them over seconds): out of the
    # collector's scan, or its full collections of their ~55 objects each make the lag.
    gc.collect()
    gc.freeze()
    runs: dict[str, tuple[float, float, int]] = {}
    original = Ledger.repeats_sealed
    for mode in ("prints", "ignored", "prints"):  # a warm-up pass first
        if mode == "ignored":
            Ledger.repeats_sealed = lambda self, fill, report: False  # type: ignore[method-assign]
        try:
            # no seal sweep: a key read must stay read to be counted
            async with PortfolioManager(uri, seal_after=None) as pm:
                keys = pm.ledger.restored_keys
                lag = LoopLag()
                lag.start()
                started = time.perf_counter()
                for msg in copies:
                    await pm.process_message(msg)
                await pm.flush()
                elapsed = time.perf_counter() - started
                await lag.stop()
                runs[mode] = (elapsed, lag.max, keys - pm.ledger.restored_keys)
        finally:
            Ledger.repeats_sealed = original  # type: ignore[method-assign]
    gc.unfreeze()
    (fast_s, fast_lag, fast_read), (slow_s, slow_lag, slow_read) = runs["prints"], runs["ignored"]
    print(f"re-delivery of {count:,} stored fills after a restart: {fast_s:.2f} s, max loop "
          f"lag {fast_lag * 1000:.0f} ms, {fast_read} of {keys} keys read; with the prints "
          f"ignored: {slow_s:.2f} s, lag {slow_lag * 1000:.0f} ms, {slow_read} keys read "
          f"({slow_s / fast_s:.1f}x the time)", file=sys.stderr)
    return {"redeliver_fills": count, "redeliver_s": round(fast_s, 3),
            "loop_lag_ms": round(fast_lag * 1000, 1), "keys_read": fast_read,
            "ignored_s": round(slow_s, 3), "ignored_lag_ms": round(slow_lag * 1000, 1),
            "ignored_keys_read": slow_read, "vs_ignored": round(slow_s / fast_s, 2)}


async def gc_session(work: Path, count: int) -> dict[str, Any]:
    """``count`` fills (every one with its commission report, as IB sends them) through one
    manager without sealing, then through one with ``seal_after=600`` (instruments never
    idle here: only the busy-position sweep, every SEAL_SWEEP seconds, seals): ingest rate,
    then one full garbage collection timed (best of 3) and the objects it tracks, after a
    sweep that followed the last fill."""
    from backend.core.portfolio_manager import SEAL_SWEEP

    out: dict[str, Any] = {"session_fills": count}
    for label, seal_after in (("off", None), ("on", 600.0)):
        gc.collect()
        uri = f"lmdb://{work / f'gc-{label}'}?map_size=8GB"
        async with PortfolioManager(uri, seal_after=seal_after) as pm:
            elapsed = 0.0
            for start in range(0, count, 20_000):  # 20k ib_async objects at a time
                chunk = make_messages(start, min(20_000, count - start), reported=True)
                started = time.perf_counter()
                for msg in chunk:
                    await pm.process_message(msg)
                await pm.flush()
                elapsed += time.perf_counter() - started
                del chunk, msg
            out[f"fills_per_s_seal_{label}"] = round(count / elapsed)
            if seal_after is not None:
                await asyncio.sleep(SEAL_SWEEP + 0.5)  # a sweep after the last fill
            gc_ms, tracked = full_collection()
            out[f"gc_ms_seal_{label}"], out[f"tracked_seal_{label}"] = gc_ms, tracked
            live = sum(pm.ledger.live_count(k) for k in tuple(pm.ledger.keys()))
            print(f"{count:,} fills, seal_after={seal_after}: "
                  f"{out[f'fills_per_s_seal_{label}']:,} fills/s; {live:,} fills live; a full "
                  f"collection {gc_ms:.0f} ms over {tracked:,} tracked objects", file=sys.stderr)
    out["vs_no_seal"] = round(out["gc_ms_seal_off"] / out["gc_ms_seal_on"], 2)
    print(f"full collection with sealing: {out['vs_no_seal']:.1f}x faster", file=sys.stderr)
    return out


def full_collection() -> tuple[float, int]:
    """(best of 3 full collections in ms, objects the collector tracks)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return round(min(times), 1), len(gc.get_objects())


async def recovery_only(work: Path, count: int) -> dict[str, Any]:
    """Store ``count`` fills (raw appends, not timed), then time a manager's recovery."""
    uri = f"lmdb://{work / 'rec'}?map_size=8GB"
    store_fills(uri, count)
    # No positions rows yet: every key is refolded from its fills (the path a disagreement
    # takes), and the manager writes the rows when it closes.
    full_s, fills, _ = await recovery(uri)
    print(f"recovery of {fills:,} fills without positions rows (full refold): {full_s:.2f} s "
          f"({full_s / fills * 1e6:.2f} s per million)", file=sys.stderr)
    rec_s, fills, _ = await recovery(uri)
    print(f"recovery of {fills:,} fills from positions rows: {rec_s:.2f} s "
          f"({rec_s / fills * 1e6:.2f} s per million; {full_s / rec_s:.1f}x faster than the "
          f"full refold)", file=sys.stderr)
    return {"recovery_s": round(rec_s, 3), "fills": fills,
            "recovery_s_per_million": round(rec_s / fills * 1e6, 2),
            "full_refold_s_per_million": round(full_s / fills * 1e6, 2),
            "vs_full_refold": round(full_s / rec_s, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fills", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="throughput and raw runs; their medians are reported")
    parser.add_argument("--recovery-fills", type=int, default=0)
    parser.add_argument("--latency-stored", type=int, default=0,
                        help="only the fixed-load phase, on a root holding this many fills")
    parser.add_argument("--unseal", type=int, default=0,
                        help="only the loop lag of reading a restored key of this many fills")
    parser.add_argument("--redeliver", type=int, default=0,
                        help="only a restart and the re-delivery of this many stored fills")
    parser.add_argument("--gc-session", type=int, default=0,
                        help="only the full-collection time after this many fills, sealing "
                             "off and on")
    parsed = parser.parse_args()
    if parsed.repeat < 1:
        parser.error(f"--repeat={parsed.repeat}: must be >= 1")
    print(json.dumps(asyncio.run(main(parsed))))
