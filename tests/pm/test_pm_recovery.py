"""Restart from positions rows checked against fills (real lmdb://): restored keys keep their
fills unread, disagreeing keys are refolded and rewritten, and every outcome equals a run that
never stopped."""

from __future__ import annotations

import logging
import math
import random
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from backend.core.messages import to_plain
from backend.core.portfolio_manager import PortfolioManager
from backend.storage import SymbolWrite, open_store
from backend.storage.schema import FILLS, PORTFOLIO, POSITIONS, SCHEMAS

from .ib_objects import AAPL, ACCOUNT, ES, MSFT, T0, dict_fill, fill_msg, ib_fill, read
from .stream import assert_same, make_stream, snapshot

STREAM = make_stream(400, seed=5)


async def ingest(uri: str, messages: list[dict[str, Any]]) -> None:
    async with PortfolioManager(uri) as pm:
        for msg in messages:
            await pm.process_message(msg)
        await pm.flush()


@pytest.mark.asyncio
async def test_clean_restart_restores_every_position_from_its_row(tmp_path: Path) -> None:
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM)
    async with PortfolioManager(uri) as pm:
        keys = len(list(pm.ledger.keys()))
        assert keys > 10
        assert pm.ledger.restored_keys == keys  # no fill was read back into the ledger
        stored = len(pm.ledger)
        for msg in STREAM:  # re-delivery of everything, then the rest
            await pm.process_message(msg)
        await pm.flush()
        assert len(pm.ledger) >= stored
    assert_same(snapshot(uri), snapshot(ref))


@pytest.mark.asyncio
async def test_redelivery_after_a_restart_reads_no_fills(tmp_path: Path) -> None:
    """What a reconnect does after a restart (ib_async re-sends the day's executions, with
    and without their commission reports; stale revisions and bad messages among them here):
    every copy is recognised from the restored prints, no key's fills are read, and fills,
    orders, positions and portfolio stay as they were; then the rest of the stream ends
    where a run that never stopped ends."""
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM)
    stored = snapshot(uri)

    def report(msg: dict[str, Any]) -> tuple[str, Any]:
        fill = msg["fill"]
        execution = fill["execution"] if isinstance(fill, dict) else fill.execution
        exec_id = execution["execId"] if isinstance(execution, dict) else execution.execId
        found = to_plain(fill["commissionReport"] if isinstance(fill, dict)
                         else fill.commissionReport)
        return exec_id, found if found and found["execId"] else None  # "": not arrived

    # IB re-sends each execution with its report as it stands now (a report that was later
    # changed, re-sent, would change it back: that is not a copy)
    fills = [m for m in STREAM[:300] if m["type"] == "fill"]
    final = dict(report(m) for m in fills if report(m)[1])
    copies = [m for m in fills if not report(m)[1] or report(m)[1] == final[report(m)[0]]]
    assert len(copies) > 200
    async with PortfolioManager(uri) as pm:
        keys = len(list(pm.ledger.keys()))
        for msg in copies:
            await pm.process_message(msg)
        await pm.flush()
        assert pm.ledger.restored_keys == keys  # no key was read
        assert "unseal_read" not in pm.stats
    assert_same(snapshot(uri), stored)
    async with PortfolioManager(uri) as pm:
        # a clean close trims the journal: nothing to replay (a replay rewrites every
        # positions/portfolio symbol)
        assert pm.replayed == 0
        for msg in STREAM:
            await pm.process_message(msg)
        await pm.flush()
    assert_same(snapshot(uri), snapshot(ref))


@pytest.mark.asyncio
async def test_one_fill_after_restart_keeps_the_other_portfolio_rows(tmp_path: Path) -> None:
    """The portfolio symbol is rewritten whole: instruments not touched since the restart keep
    their rows (they were lost before the book was rebuilt on recovery)."""
    uri = f"lmdb://{tmp_path / 'a'}"
    await ingest(uri, [fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=AAPL)),
                       fill_msg("alpha", ib_fill(2, "BOT", 5, 300.0, contract=MSFT))])
    async with PortfolioManager(uri) as pm:
        await pm.process_message(fill_msg("alpha", ib_fill(3, "BOT", 1, 101.0, contract=AAPL)))
        await pm.flush()
        # the new AAPL fill folds onto the restored row: neither key's fills were read
        assert pm.ledger.restored_keys == 2
    rows = read(uri, PORTFOLIO, ACCOUNT).set_index("con_id")["qty"].to_dict()
    assert rows == {AAPL["conId"]: 11.0, MSFT["conId"]: 5.0}


@pytest.mark.asyncio
async def test_disagreeing_row_is_refolded_from_fills_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM[:300])
    # An operator (or a bug) leaves a wrong quantity in one row of positions/alpha.
    store = open_store(uri)
    try:
        frame = store.read(POSITIONS, "alpha")
        frame.loc[frame.index[0], "qty"] += 1.0
        meta = store.read_metadata(POSITIONS, "alpha")
        store.commit([SymbolWrite(POSITIONS, "alpha", state=frame, metadata=meta)])
    finally:
        store.close()
    keys_of_alpha = len(frame)
    with caplog.at_level(logging.WARNING, logger="backend.portfolio_manager"):
        async with PortfolioManager(uri) as pm:
            keys = len(list(pm.ledger.keys()))
            assert (pm.recovery_stats.restored, pm.recovery_stats.refolded) == (keys - 1, 1)
            # refolded from the stored columns, the key rests unread like the restored ones
            assert pm.ledger.restored_keys == keys
            await pm.flush()  # the refolded strategy is rewritten without any new message
    assert any("positions/alpha disagrees with fills" in r.getMessage() and "qty=" in
               r.getMessage() for r in caplog.records)
    assert keys_of_alpha == len(read(uri, POSITIONS, "alpha"))
    assert_same(snapshot(uri), snapshot(ref))


@pytest.mark.asyncio
async def test_positions_row_without_fills_is_dropped(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'a'}"
    await ingest(uri, [fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=AAPL))])
    store = open_store(uri)
    try:
        frame = store.read(POSITIONS, "alpha")
        extra = frame.copy()
        extra["con_id"] = MSFT["conId"]
        both = pd.concat([frame, extra], ignore_index=True)
        store.commit([SymbolWrite(POSITIONS, "alpha", state=both,
                                  metadata=store.read_metadata(POSITIONS, "alpha"))])
    finally:
        store.close()
    async with PortfolioManager(uri) as pm:
        await pm.flush()
    assert read(uri, POSITIONS, "alpha")["con_id"].tolist() == [AAPL["conId"]]


@pytest.mark.asyncio
async def test_positions_of_an_older_schema_are_refolded_and_rewritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A library written before positions rows carried open_price_min/max (plain arcticdb
    writes, as that version left them; they read back as NaN): the manager refolds the open
    keys from fills (restored, their range would stay NaN for good), rewrites the symbols in
    the current schema, and ends where a run that never stopped ends."""
    import arcticdb as adb

    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    await ingest(uri, STREAM[:300])
    await ingest(ref, STREAM)
    lib = adb.Arctic(uri)[POSITIONS]
    strategies = lib.list_symbols()
    assert strategies
    for strategy in strategies:
        with warnings.catch_warnings():  # arcticdb 6.28's own pandas internals (not ours)
            warnings.filterwarnings("ignore", message=".*BlockManagerUnconsolidated.*",
                                    category=DeprecationWarning)
            item = lib.read(strategy)
        old = item.data.drop(columns=["open_price_min", "open_price_max"])
        lib.write(strategy, old, metadata=item.metadata)
    del lib  # one Library object per root at a time (the manager opens its own)
    with caplog.at_level(logging.WARNING, logger="backend.portfolio_manager"):
        async with PortfolioManager(uri) as pm:
            keys = list(pm.ledger.keys())
            open_keys = [k for k in keys if not pm.ledger.position(k).is_flat]  # type: ignore[union-attr]
            assert open_keys
            # flat keys agree with their rows (no range to keep); open ones are refolded
            assert pm.recovery_stats.restored == len(keys) - len(open_keys)
            assert pm.recovery_stats.refolded == len(open_keys)
            for msg in STREAM:
                await pm.process_message(msg)
            await pm.flush()
    assert any("disagrees with fills" in r.getMessage() and "a row of an older schema" in
               r.getMessage() for r in caplog.records)
    for strategy in strategies:
        assert list(read(uri, POSITIONS, strategy).columns) == list(SCHEMAS[POSITIONS])
    assert_same(snapshot(uri), snapshot(ref))


def adversarial_stream(n: int, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Fills at few distinct seconds (equal times order by exec_id), two accounts, fills no
    strategy claims (``_unattributed``), re-deliveries, late commission reports in USD or EUR,
    corrections that move an execution to another strategy, instrument, time or side, and
    stale revisions re-sent after their correction. Returns the stream and what each message
    is."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    kinds: list[str] = []
    live: list[list[Any]] = []  # [strategy, fill dict, revision] per execution
    sent: list[tuple[str, dict[str, Any]]] = []  # every version sent
    k = 0

    def emit(kind: str, strategy: str, fill: dict[str, Any]) -> None:
        out.append(fill_msg(strategy, fill))
        kinds.append(kind)

    while len(out) < n:
        r = rng.random()
        if r < 0.45 or not live:
            k += 1
            strategy = rng.choice(("alpha", "beta", ""))
            fill = dict_fill(k, rng.choice(("BOT", "SLD")), float(rng.randint(1, 6)),
                             round(rng.uniform(95, 105), 2), account=rng.choice(("DU111", "DU222")),
                             contract=rng.choice((AAPL, ES, MSFT)),
                             seconds=float(rng.randint(0, 12)),
                             commission=None if rng.random() < 0.5 else 1.0)
            live.append([strategy, fill, 1])
            sent.append((strategy, fill))
            emit("new", strategy, fill)
        elif r < 0.55:
            emit("duplicate", *rng.choice(sent))
        elif r < 0.65:
            strategy, fill, _ = rng.choice(live)
            report: dict[str, Any] | None = {
                "execId": fill["execution"]["execId"], "commission": rng.choice((1.5, 2.0)),
                "currency": rng.choice(("USD", "EUR")), "realizedPNL": 0.0}
            emit("commission", strategy, {**fill, "commissionReport": report})
        elif r < 0.85:
            item = rng.choice(live)
            strategy, fill, revision = item
            revision += 1
            execution = dict(fill["execution"])
            execution["execId"] = execution["execId"][:-2] + f"{revision:02x}"
            contract, what = fill["contract"], rng.choice(("strategy", "instrument", "time",
                                                           "side", "qty_price"))
            if what == "strategy":
                strategy = rng.choice(("alpha", "beta", ""))
            elif what == "instrument":
                contract = dict(rng.choice((AAPL, ES, MSFT)))
            elif what == "time":
                execution["time"] = (T0 + timedelta(seconds=rng.randint(0, 12))).isoformat()
            elif what == "side":
                execution["side"] = "SLD" if execution["side"] == "BOT" else "BOT"
            else:
                execution["shares"] = float(rng.randint(1, 6))
                execution["price"] = round(rng.uniform(95, 105), 2)
            report = None if rng.random() < 0.5 else {
                "execId": execution["execId"], "commission": 0.5,
                "currency": rng.choice(("USD", "EUR")), "realizedPNL": 0.0}
            fixed = {**fill, "contract": contract, "execution": execution,
                     "commissionReport": report}
            item[:] = [strategy, fixed, revision]
            sent.append((strategy, fixed))
            emit(f"correction:{what}", strategy, fixed)
        else:
            emit("resend", *rng.choice(sent))  # stale when a correction followed it
    return out, kinds


def ledger_state(pm: PortfolioManager) -> dict[str, Any]:
    """The manager's in-memory state, NaN as None (so that equal states compare equal)."""
    ledger = pm.ledger

    def clean(x: Any) -> Any:
        return None if isinstance(x, float) and math.isnan(x) else x

    keys = sorted(ledger.keys())
    positions = {}
    for key in keys:
        pos = ledger.position(key)
        assert pos is not None
        positions[key] = (pos.qty, clean(pos.avg_cost), round(pos.realized_pnl, 6),
                          pos.fill_count, pos.last_exec_id, clean(pos.open_price_min),
                          clean(pos.open_price_max), ledger.last_fill_time(key))
    commissions = {k: ([(c, round(v, 9)) for c, v in ledger.commissions(k).by_currency],
                       ledger.commissions(k).pending) for k in keys}
    marks = {c["conId"]: clean(ledger.mark(c["conId"])) for c in (AAPL, ES, MSFT)}
    return {"positions": positions, "commissions": commissions, "marks": marks,
            "executions": len(ledger)}


ADVERSARIAL, KINDS = adversarial_stream(160, seed=11)


@pytest.mark.parametrize("rows", ["kept", "dropped"])
@pytest.mark.parametrize("cut", [40, 90, 130])
@pytest.mark.asyncio
async def test_restart_in_an_adversarial_stream_equals_a_run_that_never_stopped(
        tmp_path: Path, cut: int, rows: str) -> None:
    """Restart at a cut, then the whole stream again (re-deliveries, stale revisions,
    corrections of restored executions into other books and instruments, late reports in
    another currency, equal times): libraries AND in-memory state equal an uninterrupted run's.
    With the positions rows dropped before the restart, every key is refolded over the stored
    columns instead of restored from its row, and rests unread the same way.
    """
    after = KINDS[cut:]
    assert {"correction:strategy", "correction:instrument", "correction:time",
            "correction:side", "commission", "resend"} <= set(after)
    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    async with PortfolioManager(ref) as pm:
        for msg in ADVERSARIAL:
            await pm.process_message(msg)
        await pm.flush()
        expected = ledger_state(pm)
    await ingest(uri, ADVERSARIAL[:cut])
    if rows == "dropped":
        import arcticdb as adb

        lib = adb.Arctic(uri)[POSITIONS]
        for strategy in lib.list_symbols():
            lib.delete(strategy)
        del lib  # one Library object per root at a time (the manager opens its own)
    async with PortfolioManager(uri) as pm:
        keys = len(list(pm.ledger.keys()))
        assert pm.ledger.restored_keys == keys > 0
        stats = pm.recovery_stats
        assert (stats.restored, stats.refolded) == ((keys, 0) if rows == "kept" else (0, keys))
        for msg in ADVERSARIAL:
            await pm.process_message(msg)
        await pm.flush()
        assert ledger_state(pm) == expected
    assert_same(snapshot(uri), snapshot(ref))



@pytest.mark.asyncio
async def test_an_execution_stored_twice_is_refolded_fill_by_fill(tmp_path: Path) -> None:
    """A ``fills`` library holding an execution twice (its original beside its correction,
    as a hand-edited library or a foreign writer could leave it): the columnar refold would
    count both, so that key goes through the ledger's correction rule fill by fill, and the
    positions equal a run that saw the original, then the correction."""
    import arcticdb as adb

    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    first = [fill_msg("alpha", ib_fill(1, "BOT", 10, 100.0, contract=AAPL)),
             fill_msg("alpha", ib_fill(2, "BOT", 5, 300.0, contract=MSFT))]
    fix = fill_msg("alpha", ib_fill(1, "BOT", 12, 101.0, contract=AAPL, revision=2))
    await ingest(uri, first)
    await ingest(ref, [*first, fix])
    # uri's fills get the correction's row appended beside the original's
    lib = adb.Arctic(uri)[FILLS]
    with warnings.catch_warnings():  # arcticdb 6.28's own pandas internals (not ours)
        warnings.simplefilter("ignore", DeprecationWarning)
        stored, corrected = lib.read(ACCOUNT).data, adb.Arctic(ref)[FILLS].read(ACCOUNT).data
    row = corrected[corrected["exec_id"] == fix["fill"].execution.execId]
    lib.write(ACCOUNT, pd.concat([stored, row]).sort_index(kind="stable"),
              metadata=lib.read_metadata(ACCOUNT).metadata)
    del lib
    async with PortfolioManager(uri) as pm:
        assert (pm.recovery_stats.restored, pm.recovery_stats.refolded) == (1, 1)
        # MSFT rests restored; AAPL's two rows were applied, the correction replacing
        assert pm.ledger.restored_keys == 1
        aapl = pm.position(ACCOUNT, "alpha", AAPL["conId"])
        assert (aapl.qty, aapl.avg_cost, aapl.fill_count) == (12.0, 101.0, 1)
        await pm.flush()
    for library, symbol in ((POSITIONS, "alpha"), (PORTFOLIO, ACCOUNT)):
        pd.testing.assert_frame_equal(
            snapshot(uri)[(library, symbol)], snapshot(ref)[(library, symbol)],
            check_exact=False, rtol=1e-9)


@pytest.mark.asyncio
async def test_a_journal_entry_that_does_not_read_back_goes_to_rejects(tmp_path: Path) -> None:
    """A writer killed after journaling leaves compact fill entries; one that no longer reads
    back (a damaged file) is not lost and does not stop the replay: it goes to ``rejects``
    whole, with the field that failed, and the entries after it are folded."""
    import json
    import time

    from backend.core.portfolio_manager import default_journal_path, journal_payload
    from backend.storage.journal import Journal

    uri = f"lmdb://{tmp_path / 'a'}"
    good = [journal_payload(fill_msg("alpha", ib_fill(n, "BOT", 1.0, 10.0 + n)), time.time())
            for n in (1, 2)]
    damaged = json.loads(good[0])
    damaged[6] = -5.0  # the quantity
    with Journal(default_journal_path(uri)) as journal:
        journal.append([json.dumps(damaged), good[1]])
    async with PortfolioManager(uri) as pm:
        await pm.flush()
    fills, rejects = read(uri, FILLS, ACCOUNT), read(uri, "rejects", ACCOUNT)
    assert fills["qty"].tolist() == [1.0] and fills["price"].tolist() == [12.0]
    assert len(rejects) == 1
    assert rejects["field"].iloc[0] == "qty" and "-5.0" in rejects["reason"].iloc[0]
    assert json.loads(rejects["raw"].iloc[0]) == damaged


@pytest.mark.asyncio
async def test_a_journal_of_canonical_and_compact_fill_entries_replays_both(
        tmp_path: Path) -> None:
    """Journals written before the compact form hold fills as canonical dicts: a journal
    holding both kinds (an upgrade between a crash and the restart) replays every entry, and
    the result equals ingesting the same messages."""
    import json
    import time

    from backend.core.messages import canonical, parse_message
    from backend.core.model import utc_now
    from backend.core.portfolio_manager import default_journal_path, journal_payload
    from backend.storage.journal import Journal

    uri, ref = f"lmdb://{tmp_path / 'a'}", f"lmdb://{tmp_path / 'ref'}"
    msgs = [fill_msg("alpha", ib_fill(n, "BOT" if n % 2 else "SLD", 1.0 + n, 10.0 + n,
                                      commission=0.5 if n % 3 else None)) for n in range(1, 7)]
    legacy = [json.dumps(canonical(parse_message(m, received_at=utc_now()))) for m in msgs[:3]]
    compact = [journal_payload(m, time.time()) for m in msgs[3:]]
    assert all(p.startswith("{") for p in legacy) and all(p.startswith('["F1"') for p in compact)
    with Journal(default_journal_path(uri)) as journal:
        journal.append(legacy + compact)
    async with PortfolioManager(uri) as pm:
        assert pm.replayed == 6
        await pm.flush()
    await ingest(ref, msgs)
    for library, symbol in ((FILLS, ACCOUNT), (POSITIONS, "alpha"), (PORTFOLIO, ACCOUNT)):
        got, want = read(uri, library, symbol), read(ref, library, symbol)
        drop = [c for c in ("recorded_at", "last_updated") if c in got.columns]
        pd.testing.assert_frame_equal(got.drop(columns=drop), want.drop(columns=drop))
