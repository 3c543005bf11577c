"""The write-ahead journal: durable batches, sequence numbers, replay, trim."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backend.errors import JournalError
from backend.storage.journal import Journal, read_entries, read_last_seq


def test_append_assigns_consecutive_seqs_in_one_batch(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.append(["a", "b", "c"]) == 1
        assert journal.append(["d"]) == 4
        assert journal.append([]) == 5  # nothing assigned
        assert journal.last_seq == 4
        assert [(s, p) for s, _, p in journal.entries()] == [(1, "a"), (2, "b"), (3, "c"),
                                                             (4, "d")]
        assert [s for s, _, _ in journal.entries(after=2)] == [3, 4]


def test_trim_and_seqs_never_reused_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append(["a", "b"])
        journal.trim(2)
        assert journal.pending() == 0
        assert journal.durable_seq == 2
    with Journal(path) as journal:
        assert journal.last_seq == 2
        assert journal.durable_seq == 2
        assert journal.append(["c"]) == 3  # not 1, although every entry was trimmed
        journal.trim(1)  # below the durable mark: no-op
        assert journal.pending() == 1
    assert read_entries(path) == [(3, "c")]
    assert read_last_seq(path) == 3


def test_advance_to_skips_seqs_arctic_already_holds(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.advance_to(41)
        assert journal.append(["x"]) == 42
        journal.advance_to(10)  # never backwards
        assert journal.append(["y"]) == 43


def test_entries_survive_a_crash_without_close(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.append(["a", "b"])
    # no close(): another connection (another process, after a SIGKILL) sees the commit
    assert [s for s, _ in read_entries(path)] == [1, 2]
    journal.close()


def test_bad_settings_and_paths_raise_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="synchronous"):
        Journal(tmp_path / "j.sqlite", synchronous="OFF")
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(JournalError, match=r"dir\.sqlite"):
        Journal(tmp_path / "dir.sqlite")


def test_a_chunk_trimmed_in_part_replays_only_its_rest(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append(["a", "b", "c"])
        journal.append(["d", "e"])
        journal.trim(2)  # inside the first chunk: its row stays, "a" and "b" are gone
        assert [(s, p) for s, _, p in journal.entries()] == [(3, "c"), (4, "d"), (5, "e")]
        assert [s for s, _, _ in journal.entries(after=4)] == [5]
        assert journal.pending() == 3
        journal.trim(4)  # the first chunk goes; "e" of the second stays
        assert journal.pending() == 1
    assert read_entries(path) == [(5, "e")]
    with Journal(path) as journal:  # the durable mark survives a reopen
        assert [(s, p) for s, _, p in journal.entries()] == [(5, "e")]


def test_payloads_holding_newlines_or_nothing_come_back_whole(tmp_path: Path) -> None:
    payloads = ["line one\nline two", "", "\n", "plain", '{"x": "\\n"}']
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.append(payloads)
        journal.append(["", ""])  # empty texts alone: still two entries
        assert [p for _, _, p in journal.entries()] == [*payloads, "", ""]
        assert journal.pending() == 7


def test_entries_of_a_journal_written_row_per_message_are_still_replayed(
        tmp_path: Path) -> None:
    """Journals written before chunks hold one row per message in ``entries``: they are
    read, trimmed and counted like chunks, and new entries come after them."""
    path = tmp_path / "j.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE entries (seq INTEGER PRIMARY KEY, received_at REAL NOT NULL,
                              payload TEXT NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO entries VALUES (7, 1.0, 'old7'), (8, 1.0, 'old8');
        INSERT INTO meta VALUES ('last_seq', 8), ('durable_seq', 6);
    """)
    db.commit()
    db.close()
    # read-only tools read it as it is (no chunks table yet)
    assert read_entries(path) == [(7, "old7"), (8, "old8")]
    assert read_last_seq(path) == 8
    with Journal(path) as journal:
        assert journal.last_seq == 8
        assert journal.append(["new9"]) == 9
        assert [(s, p) for s, _, p in journal.entries()] == [(7, "old7"), (8, "old8"),
                                                             (9, "new9")]
        journal.trim(7)
        assert journal.pending() == 2
    assert read_entries(path) == [(8, "old8"), (9, "new9")]


def test_a_chunk_of_an_unknown_encoding_is_an_error_not_a_guess(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.append(["a"])
    db = sqlite3.connect(path)
    db.execute("UPDATE chunks SET encoding = 9")
    db.commit()
    db.close()
    with Journal(path) as journal, pytest.raises(JournalError, match="encoding=9"):
        list(journal.entries())
