"""The journal's syncs: what workers report is written at once and made durable by the next
durable record; one sync serves every line before it; a failed sync leaves no line of it.

A failing or counted fdatasync cannot be had from a real file system here, so these tests
wrap `os.fdatasync`; everything else is a real file.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from gitexec import events as ev
from gitexec.journal import Journal, JournalUnwritable, read_lines


def _journal(tmp_path: Path) -> Journal:
    path = tmp_path / "runs" / "R" / "journal.jsonl"
    journal, _ = Journal.create(path, ev.RunWarning(message="first"))
    return journal


def _messages(path: Path) -> list[str]:
    return [record["message"] for _, record in read_lines(path)]


class _Syncs:
    """Counts fdatasync calls; fails them while `failing` is set."""

    def __init__(self) -> None:
        self.count = 0
        self.failing = False
        self._real = os.fdatasync

    def __call__(self, fd: int) -> None:
        self.count += 1
        if self.failing:
            raise OSError(errno.EIO, "Input/output error")
        self._real(fd)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> _Syncs:
    counter = _Syncs()
    monkeypatch.setattr(os, "fdatasync", counter)
    return counter


def test_worker_records_are_written_at_once_and_synced_with_the_next_durable_one(
    tmp_path: Path, syncs: _Syncs
) -> None:
    journal = _journal(tmp_path)
    for i in range(5):
        journal.append(ev.RunWarning(message=f"worker {i}"), durable=False)
    # Written (a killed engine loses none of them), not yet synced.
    assert _messages(journal.path)[1:] == [f"worker {i}" for i in range(5)]
    assert syncs.count == 0
    journal.append(ev.RunWarning(message="engine"))
    assert syncs.count == 1
    assert journal._synced == journal.path.stat().st_size
    journal.close()


def test_one_sync_serves_every_line_written_before_it(tmp_path: Path, syncs: _Syncs) -> None:
    journal = _journal(tmp_path)
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for i in range(25):
            journal.append(ev.RunWarning(message=f"{n}.{i}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = read_lines(journal.path)
    assert len(lines) == 1 + 8 * 25
    assert [record["seq"] for _, record in lines] == list(range(1, 202))
    assert 1 <= syncs.count <= 200
    assert journal._synced == journal.path.stat().st_size
    journal.close()


def test_a_failed_sync_leaves_no_line_of_its_record_and_stops_the_engine(
    tmp_path: Path, syncs: _Syncs
) -> None:
    journal = _journal(tmp_path)
    journal.append(ev.RunWarning(message="kept"))
    size = journal.path.stat().st_size
    syncs.failing = True
    with pytest.raises(JournalUnwritable, match="Input/output error"):
        journal.append(ev.RunWarning(message="lost"))
    assert journal.path.stat().st_size == size
    assert _messages(journal.path) == ["first", "kept"]
    # It stays failed: a worker's record is dropped, the engine's refused.
    syncs.failing = False
    worker = threading.Thread(
        target=lambda: journal.append(ev.RunWarning(message="worker"), durable=False)
    )
    worker.start()
    worker.join()
    with pytest.raises(JournalUnwritable):
        journal.append(ev.RunWarning(message="engine again"))
    assert _messages(journal.path) == ["first", "kept"]
    journal.close()


def test_a_worker_sync_failing_fails_the_journal_for_the_engine(
    tmp_path: Path, syncs: _Syncs
) -> None:
    journal = _journal(tmp_path)
    syncs.failing = True
    done: list[ev.Event] = []
    worker = threading.Thread(
        target=lambda: done.append(journal.append(ev.RunWarning(message="durable worker")))
    )
    worker.start()
    worker.join()
    assert done  # a worker always gets its answer back
    assert _messages(journal.path) == ["first"]
    with pytest.raises(JournalUnwritable):
        journal.append(ev.RunWarning(message="engine"))
    journal.close()


def test_merges_are_synced_before_the_branch_moves_not_one_by_one(
    tmp_path: Path, syncs: _Syncs
) -> None:
    journal = _journal(tmp_path)
    journal.append(ev.TicketMerging(ticket="A", commit="c" * 40, head="h" * 40))
    journal.append(ev.TicketMerged(ticket="A", head="m" * 40, previous="h" * 40))
    journal.append(ev.TicketDispatched(ticket="B", attempt=1, agent="a", slot=1, base="m" * 40))
    assert syncs.count == 0
    journal.sync()  # what the merge queue asks for before it moves the branch
    assert syncs.count == 1
    assert journal._synced == journal.path.stat().st_size
    journal.sync()
    assert syncs.count == 1  # nothing new to sync
    journal.append(ev.RunWarning(message="durable by its type"))
    assert syncs.count == 2
    journal.close()
