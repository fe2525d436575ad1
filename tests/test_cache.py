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
