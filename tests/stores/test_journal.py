"""Tests for gateway.stores.journal: order across segments and restarts, torn lines,
acknowledgement, and the bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis_servers import outcome
from structlog.testing import capture_logs

from gateway.stores.journal import COMMITTED_NAME, Journal, JournalPosition


def ids(n_from: int, n_to: int) -> list[str]:
    return [f"{n:032x}" for n in range(n_from, n_to)]


def drain(journal: Journal, batch: int) -> list[str]:
    """Read and acknowledge everything, batch by batch; the record ids in order."""
    seen: list[str] = []
    while journal.pending:
        position, records = journal.oldest_batch(batch)
        seen += [record.record_id for record in records]
        journal.acknowledge(position)
    return seen


def segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.jsonl"))


def test_order_is_kept_across_segments(tmp_path: Path) -> None:
    """Records appended in several calls over several segments come back in append order."""
    journal = Journal.open(tmp_path, segment_records=7)
    for start in range(0, 100, 13):
        assert journal.append([outcome(n) for n in range(start, min(start + 13, 100))]) == min(
            13, 100 - start
        )
    assert journal.pending == 100
    assert segments(tmp_path)[:2] == ["000001.jsonl", "000002.jsonl"]
    assert len(segments(tmp_path)) == 15  # ceil(100 / 7)
    assert drain(journal, 5) == ids(0, 100)


def test_a_batch_never_spans_segments(tmp_path: Path) -> None:
    """oldest_batch stops at the end of a segment, so acknowledging finishes it."""
    journal = Journal.open(tmp_path, segment_records=4)
    journal.append([outcome(n) for n in range(10)])
    position, records = journal.oldest_batch(100)
    assert [r.record_id for r in records] == ids(0, 4)
    assert (position.segment, position.lines) == (1, 4)


def test_reading_does_not_consume(tmp_path: Path) -> None:
    """The same oldest batch comes back until it is acknowledged."""
    journal = Journal.open(tmp_path)
    records = [outcome(n) for n in range(5)]
    journal.append(records)
    first = journal.oldest_batch(3)
    assert journal.oldest_batch(3) == first
    assert journal.pending == 5
    journal.acknowledge(first[0])
    assert [entry.record() for entry in first[1]] == records[:3]
    assert [r.record_id for r in journal.oldest_batch(3)[1]] == ids(3, 5)
    assert journal.pending == 2


def test_acknowledged_segments_are_deleted_and_a_drained_journal_holds_no_data(
    tmp_path: Path,
) -> None:
    """Finished segments are deleted on acknowledgement, the last one too once drained."""
    journal = Journal.open(tmp_path, segment_records=10)
    journal.append([outcome(n) for n in range(25)])
    assert segments(tmp_path) == ["000001.jsonl", "000002.jsonl", "000003.jsonl"]
    position, _ = journal.oldest_batch(10)
    journal.acknowledge(position)
    assert segments(tmp_path) == ["000002.jsonl", "000003.jsonl"]
    assert drain(journal, 10) == ids(10, 25)
    assert segments(tmp_path) == []
    # The next append starts a fresh segment after the deleted ones.
    journal.append([outcome(99)])
    assert segments(tmp_path) == ["000004.jsonl"]
    assert drain(journal, 10) == ids(99, 100)


def test_appends_after_a_partial_read_are_read_in_order(tmp_path: Path) -> None:
    """Appending to the segment being read keeps order: the reader continues after its batch."""
    journal = Journal.open(tmp_path)
    journal.append([outcome(n) for n in range(3)])
    position, _ = journal.oldest_batch(10)
    journal.append([outcome(n) for n in range(3, 6)])
    journal.acknowledge(position)  # the segment grew meanwhile: it is not finished
    assert segments(tmp_path) == ["000001.jsonl"]
    assert drain(journal, 10) == ids(3, 6)


def test_restart_resumes_at_the_committed_position(tmp_path: Path) -> None:
    """A reopened journal delivers what was not acknowledged, in order, and counts it."""
    journal = Journal.open(tmp_path, segment_records=8)
    journal.append([outcome(n) for n in range(30)])
    for _ in range(3):  # 0-4, 5-7 (the end of segment 1), 8-12
        position, _ = journal.oldest_batch(5)
        journal.acknowledge(position)
    position, _ = journal.oldest_batch(5)  # read, not acknowledged: delivered again
    reopened = Journal.open(tmp_path, segment_records=8)
    assert reopened.pending == 17
    reopened.append([outcome(n) for n in range(30, 35)])
    assert drain(reopened, 6) == ids(13, 35)


def test_a_torn_last_line_is_cut_off_on_open(tmp_path: Path) -> None:
    """A crash mid-append leaves an unterminated line: open removes it, the rest survives."""
    journal = Journal.open(tmp_path)
    journal.append([outcome(n) for n in range(3)])
    with open(tmp_path / "000001.jsonl", "ab") as file:
        file.write(outcome(3).to_json().encode()[:100])
    with capture_logs() as logs:
        reopened = Journal.open(tmp_path)
    assert [entry["event"] for entry in logs] == [
        "outcomes_journal_torn_tail_removed",
        "outcomes_journal_opened",
    ]
    assert reopened.pending == 3
    reopened.append([outcome(4)])  # starts on a clean line
    assert drain(reopened, 10) == [*ids(0, 3), f"{4:032x}"]


def test_a_bad_line_is_skipped_and_logged(tmp_path: Path) -> None:
    """A complete line that is not a record is logged and skipped; the rest is delivered."""
    journal = Journal.open(tmp_path)
    journal.append([outcome(0)])
    with open(tmp_path / "000001.jsonl", "ab") as file:
        file.write(b'{"not": "a record"}\n')
    journal = Journal.open(tmp_path)
    journal.append([outcome(1)])
    assert journal.pending == 3
    with capture_logs() as logs:
        assert drain(journal, 10) == ids(0, 2)
    assert logs[0]["event"] == "outcomes_journal_bad_lines_skipped"
    assert journal.pending == 0


def test_the_bound_takes_a_prefix(tmp_path: Path) -> None:
    """Past max_records, append stores what fits (the oldest) and reports how many."""
    journal = Journal.open(tmp_path, max_records=10)
    assert journal.append([outcome(n) for n in range(6)]) == 6
    assert journal.append([outcome(n) for n in range(6, 12)]) == 4
    assert journal.full
    assert journal.append([outcome(99)]) == 0
    position, _ = journal.oldest_batch(3)
    journal.acknowledge(position)
    assert not journal.full
    assert journal.append([outcome(n) for n in range(12, 20)]) == 3
    assert drain(journal, 4) == ids(3, 10) + ids(12, 15)


def test_a_bad_commit_file_redelivers_from_the_oldest_segment(tmp_path: Path) -> None:
    """An unreadable commit file only repeats deliveries (which the store deduplicates)."""
    journal = Journal.open(tmp_path)
    journal.append([outcome(n) for n in range(4)])
    position, _ = journal.oldest_batch(2)
    journal.acknowledge(position)
    (tmp_path / COMMITTED_NAME).write_text("{broken")
    with capture_logs() as logs:
        reopened = Journal.open(tmp_path)
    assert logs[0]["event"] == "outcomes_journal_commit_unreadable"
    assert drain(reopened, 10) == ids(0, 4)


def test_commit_file_is_replaced_atomically(tmp_path: Path) -> None:
    """The committed position is a small JSON file, with no temporary left behind."""
    journal = Journal.open(tmp_path)
    journal.append([outcome(n) for n in range(4)])
    position, _ = journal.oldest_batch(2)
    journal.acknowledge(position)
    assert json.loads((tmp_path / COMMITTED_NAME).read_text()) == {
        "segment": 1,
        "offset": position.offset,
    }
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_journal_has_an_empty_batch(tmp_path: Path) -> None:
    """With nothing pending, oldest_batch returns no records and a zero-line position."""
    journal = Journal.open(tmp_path / "new")
    position, records = journal.oldest_batch(10)
    assert records == []
    assert position == JournalPosition(1, 0, 0)


@pytest.mark.parametrize("fsync", [False, True])
def test_sync_and_fsync_modes_store_the_same(tmp_path: Path, fsync: bool) -> None:
    """With or without per-append fsync, the records and their order are the same."""
    journal = Journal.open(tmp_path, fsync=fsync)
    journal.append([outcome(n) for n in range(5)])
    journal.sync()
    assert drain(Journal.open(tmp_path), 2) == ids(0, 5)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"segment_records": 0}, "segment_records"), ({"max_records": 0}, "max_records")],
)
def test_sizes_must_be_positive(tmp_path: Path, options: dict[str, int], message: str) -> None:
    """A zero segment size or bound is refused."""
    with pytest.raises(ValueError, match=message):
        Journal.open(tmp_path, **options)
