"""A disk that fills up under a run: a clear stop (exit 2, naming what could not be
written), a journal and branch that agree, and `resume` once there is room again.

The run's state gets a small tmpfs of its own (mounting needs root; skipped otherwise).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import git
from tests.project import first_parent_tickets, gitexec, make_project, status, ticket_yaml


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path, once: Path) -> str:
    """Shell that fills the disk the first time it runs (a build writing a huge file)."""
    return (
        f"if [ ! -e {once} ]; then touch {once}; "
        f"head -c 8M /dev/zero > {disk}/filler 2>/dev/null; fi; true"
    )


def test_a_disk_filling_up_mid_run_stops_it_clearly_and_resume_continues(
    tmp_path: Path,
) -> None:
    once = tmp_path / "filled-once"
    later = {t: ticket_yaml(t, run=f"echo {t} > {t}.txt", depends_on=["A"]) for t in "BCDE"}
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A", run=f"echo a > a.txt; {_fill(tmp_path / 'r/.git/gitexec/runs', once)}"
            ),
            **later,
        },
    )
    with small_disk(repo / ".git/gitexec/runs") as disk:
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "full")
        assert code == 2, out + err
        assert "internal error" not in err and "Traceback" not in err
        journal = disk / "full" / "journal.jsonl"
        assert f"gitexec: error: cannot write the journal {journal}: " in err
        assert "git exec resume --run full" in err
        # The journal is whole (no torn line), and the branch is where it says.
        assert journal.read_bytes().endswith(b"\n")
        code, st_out, st_err = gitexec(repo, "status", "--run", "full", "--format", "json")
        assert code == 0 and "warning" not in st_err, st_err
        st = json.loads(st_out)
        assert st["state"] == "crashed"
        assert git(repo, "rev-parse", "gitexec/full").strip() == st["head"]
        # Nothing failed for want of space: what did not finish is left to resume.
        assert not [t for t, v in st["tickets"].items() if v["status"] in ("failed", "blocked")]

        (disk / "filler").unlink()
        code, out, err = gitexec(repo, "resume", "--run", "full", "--no-monitor")
        assert code == 0, out + err
        assert status(repo, "full")["state"] == "completed"
    assert sorted(first_parent_tickets(repo, "gitexec/full")) == ["A", "B", "C", "D", "E"]
    assert git(repo, "show", "gitexec/full:E.txt") == "E\n"


def test_a_full_disk_at_the_start_leaves_no_run_behind(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="echo a > a.txt")})
    with small_disk(repo / ".git/gitexec/runs") as disk:
        subprocess.run(
            ["sh", "-c", f"head -c 8M /dev/zero > {disk}/filler"], check=False, capture_output=True
        )
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "r1")
        assert code == 2, out + err
        assert "cannot write the journal" in err and "internal error" not in err
        assert not (disk / "r1" / "journal.jsonl").exists()
        assert "gitexec/r1" not in git(repo, "branch", "--list")
        (disk / "filler").unlink()
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "r1")
        assert code == 0, out + err
        assert status(repo, "r1")["state"] == "completed"
