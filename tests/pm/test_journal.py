"""The write-ahead journal: durable batches, sequence numbers, replay, trim."""

from __future__ import annotations

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
