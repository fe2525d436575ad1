"""The parse cache: warm checks skip parsing; any change is seen, even a racy one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gitexec import project as project_module
from gitexec import tickets as tickets_module
from gitexec.project import load_project
from tests.project import ticket_yaml


@pytest.fixture
def parse_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = tickets_module.parse_ticket

    def counting(path: str, text: str) -> object:
        calls.append(path)
        return real(path, text)

    monkeypatch.setattr(project_module, "parse_ticket", counting)
    return calls


def age(path: Path, seconds: float = 10) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_warm_load_parses_nothing(tmp_path: Path, parse_counter: list[str]) -> None:
    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    for tid in ("A", "B"):
        (tickets / f"{tid}.yaml").write_text(ticket_yaml(tid, run="true"))
        age(tickets / f"{tid}.yaml")
    cache = tmp_path / "cache.pickle"
    first = load_project(tmp_path, cache_path=cache)
    assert len(parse_counter) == 2
    second = load_project(tmp_path, cache_path=cache)
    assert len(parse_counter) == 2
    assert first.tickets == second.tickets
    # An edit is noticed.
    (tickets / "B.yaml").write_text(ticket_yaml("B", run="false", depends_on=["C"]))
    third = load_project(tmp_path, cache_path=cache)
    assert parse_counter[-1] == ".gitexec/tickets/B.yaml"
    assert "unknown dependency 'C'" in str(third.findings[0])


def test_racy_entry_verified_by_content(tmp_path: Path, parse_counter: list[str]) -> None:
    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    path = tickets / "A.yaml"
    path.write_text(ticket_yaml("A", run="aaaa"))
    cache = tmp_path / "cache.pickle"
    load_project(tmp_path, cache_path=cache)
    st = path.stat()
    # Same size, same mtime: only the content tells the change apart.
    path.write_text(ticket_yaml("A", run="bbbb"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    project = load_project(tmp_path, cache_path=cache)
    assert project.tickets[0].run == "bbbb"


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    (tickets / "A.yaml").write_text(ticket_yaml("A", run="true"))
    cache = tmp_path / "cache.pickle"
    cache.write_bytes(b"not a pickle")
    assert load_project(tmp_path, cache_path=cache).tickets[0].id == "A"


def test_removed_files_leave_the_cache(tmp_path: Path) -> None:
    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    (tickets / "A.yaml").write_text(ticket_yaml("A", run="true"))
    cache = tmp_path / "cache.pickle"
    load_project(tmp_path, cache_path=cache)
    (tickets / "A.yaml").unlink()
    assert load_project(tmp_path, cache_path=cache).tickets == ()


def test_touched_but_unchanged_file_is_not_reparsed(
    tmp_path: Path, parse_counter: list[str]
) -> None:
    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    path = tickets / "A.yaml"
    path.write_text(ticket_yaml("A", run="true"))
    age(path)
    cache = tmp_path / "cache.pickle"
    load_project(tmp_path, cache_path=cache)
    path.write_text(ticket_yaml("A", run="true"))  # a checkout rewrites the same content
    age(path, 5)
    load_project(tmp_path, cache_path=cache)
    assert parse_counter == [".gitexec/tickets/A.yaml"]


def test_racy_entries_settle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gitexec import cache as cache_module

    tickets = tmp_path / ".gitexec/tickets"
    tickets.mkdir(parents=True)
    (tickets / "A.yaml").write_text(ticket_yaml("A", run="true"))
    store = tmp_path / "cache.pickle"
    load_project(tmp_path, cache_path=store)  # fresh file: stored as racy
    reads: list[str] = []
    real = project_module.FileSource.read

    def counting(self: project_module.FileSource, rel: str) -> bytes | None:
        reads.append(rel)
        return real(self, rel)

    monkeypatch.setattr(project_module.FileSource, "read", counting)
    monkeypatch.setattr(cache_module, "_RACY_NS", 0)  # time has passed
    load_project(tmp_path, cache_path=store)  # verified by content once, then settled
    assert reads.count(".gitexec/tickets/A.yaml") == 1
    load_project(tmp_path, cache_path=store)
    assert reads.count(".gitexec/tickets/A.yaml") == 1


def test_warm_check_is_answered_from_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitexec.commands import check as check_module
    from tests.project import gitexec, make_project

    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true", depends_on=["B"])})
    for p in (repo / ".gitexec/tickets").iterdir():
        age(p)
    first = gitexec(repo, "check")
    loads: list[Path] = []
    real = check_module.load_project  # type: ignore[attr-defined]

    def counting(root: Path, **kwargs: object) -> object:
        loads.append(root)
        return real(root, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(check_module, "load_project", counting)
    assert gitexec(repo, "check") == first
    assert loads == []
    (repo / ".gitexec/tickets/B.yaml").write_text(ticket_yaml("B", run="true"))
    age(repo / ".gitexec/tickets/B.yaml")
    assert gitexec(repo, "check")[0] == 0
    assert len(loads) == 1
