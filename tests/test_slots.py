"""Pooled worktrees through the CLI: what a ticket collects, what a slot keeps between
tickets, where the pool lives, and that the user's hooks stay out of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import git, write_files
from tests.project import FAKE_CONFIG, make_project, run_ok, status, ticket_yaml
from tests.unprivileged import cli, sandbox

NEGATED = {".gitignore": "build/*\n!build/keep.md\n"}
SETUP = "worktree:\n  setup: ['mkdir -p build/cache && echo obj > build/out.o && echo c > build/cache/c']\n"


def tree_files(repo: Path, rev: str) -> list[str]:
    return git(repo, "ls-tree", "-r", "--name-only", rev).split()


def slots_used(log: Path) -> dict[str, list[str]]:
    """Ticket -> the worktrees its attempts ran in (from the agents' own log lines)."""
    used: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        ticket, cwd = line.split("\t")
        used.setdefault(ticket, []).append(cwd)
    return used


# --- what a ticket collects ----------------------------------------------------------------


def test_a_file_re_included_by_a_negated_ignore_rule_is_committed(tmp_path: Path) -> None:
    tickets = {"A": ticket_yaml("A", agent="fake", prompt="WRITE build/keep.md kept")}
    repo = make_project(tmp_path / "r", tickets, config=FAKE_CONFIG + SETUP, files=NEGATED)
    code, out, err = run_ok(repo, "--run-id", "n")
    assert code == 0, out + err
    # What `git add -A` takes: the re-included file, not the setup's ignored output.
    assert git(repo, "show", "gitexec/n:build/keep.md") == "kept"
    assert [f for f in tree_files(repo, "gitexec/n") if f.startswith("build/")] == ["build/keep.md"]


def git_add_all_tree(repo: Path, base: str, script: str, scratch: Path) -> str:
    """The tree `git add -A` makes of `script` run on `base` (the oracle)."""
    git(repo, "worktree", "add", "-q", "--detach", str(scratch), base)
    try:
        subprocess.run(["sh", "-c", script], cwd=scratch, check=True)
        git(scratch, "add", "-A")
        return git(scratch, "write-tree").strip()
    finally:
        git(repo, "worktree", "remove", "--force", str(scratch))


def test_type_changes_are_collected_exactly_as_git_add_does(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_files(outside, {"secret.txt": "not ours\n", "deep/more.txt": "x\n"})
    files = {
        "a/pkg/b.py": "b\n",
        "a/pkg/deep/c.py": "c\n",
        "a/docs/guide.md": "guide\n",
        "b/pkg/x.txt": "x\n",
        "c/run.sh": "run\n",
        "d/more/y.txt": "y\n",
        "e/target/t.txt": "t\n",
        "f/plain.txt": "plain\n",
    }
    scripts = {
        # A directory becomes a symlink to a sibling directory, and one to outside the repo.
        "A": "rm -rf a/pkg && ln -s ../docs a/pkg",
        "B": f"rm -rf b/pkg && ln -s {outside} b/pkg",
        # A file becomes a directory, a directory a file.
        "C": "rm c/run.sh && mkdir c/run.sh && echo inner > c/run.sh/inner",
        "D": "rm -rf d/more && echo flat > d/more",
        # A symlink (made by E) becomes a directory again; a file becomes a symlink.
        "E": "ln -s target e/link && echo new > e/new.txt",
        "F": "rm e/link && mkdir e/link && echo z > e/link/z && rm f/plain.txt"
        " && ln -s ../e/target f/plain.txt",
        # Back again: the symlinked directory becomes a real one with new content.
        "G": "rm a/pkg && mkdir -p a/pkg && echo again > a/pkg/b.py",
    }
    order = list(scripts)
    tickets = {
        t: ticket_yaml(t, run=script, depends_on=[order[i - 1]] if i else None)
        for i, (t, script) in enumerate(scripts.items())
    }
    repo = make_project(tmp_path / "r", tickets, files=files)
    code, out, err = run_ok(repo, "--run-id", "tc", "--jobs", "1")
    assert code == 0, out + err
    for i, (t, script) in enumerate(scripts.items()):
        commit = f"refs/gitexec/tc/{t}"
        base = git(repo, "rev-parse", f"{commit}^").strip()
        expected = git_add_all_tree(repo, base, script, tmp_path / f"oracle-{i}")
        assert git(repo, "rev-parse", f"{commit}^{{tree}}").strip() == expected, t
    final = git(repo, "ls-tree", "-r", "gitexec/tc")
    assert "120000 blob" in next(line for line in final.splitlines() if "\tb/pkg" in line)
    assert "secret.txt" not in final  # the symlink's target is not walked into


# --- what a slot keeps between tickets -----------------------------------------------------


def test_a_failed_attempts_leftovers_do_not_reach_later_tickets(tmp_path: Path) -> None:
    """A reset leaves exactly the new base plus the setup's ignored output."""
    counter = tmp_path / "attempts"
    look = "ls -AR build > {t}.txt"
    tickets = {
        "A": ticket_yaml(
            "A",
            priority=9,
            run="echo leftover > build/keep.md; echo junk > build/junk.o; mkdir -p tmp/x;"
            " echo t > tmp/x/t; exit 1",
        ),
        # A retry of R must not find (or commit) what its first attempt left.
        "R": ticket_yaml(
            "R",
            priority=8,
            retries=1,
            run=f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter};"
            " if [ $n = 0 ]; then echo first > build/keep.md; echo j > build/r.o; exit 1; fi;"
            " ls -AR build > R.txt",
        ),
        **{t: ticket_yaml(t, run=look.format(t=t)) for t in "BCDE"},
    }
    config = "version: 1\nretry_backoff: 0s\n" + SETUP
    repo = make_project(tmp_path / "r", tickets, config=config, files=NEGATED)
    _, out, err = run_ok(repo, "--run-id", "lo", "--jobs", "1")
    st = status(repo, "lo")["tickets"]
    assert st["A"]["status"] == "failed"
    assert {t: st[t]["status"] for t in "RBCDE"} == dict.fromkeys("RBCDE", "completed"), out + err
    assert any(st[t]["slot"] == st["A"]["slot"] for t in "RBCDE")  # the slot was reused
    files = tree_files(repo, "gitexec/lo")
    assert "build/keep.md" not in files and not any(f.startswith("tmp/") for f in files)
    # Every later ticket saw the setup's output and nothing else under build/.
    setup_only = "build:\ncache\nout.o\n\nbuild/cache:\nc\n"
    for t in "RBCDE":
        assert git(repo, "show", f"gitexec/lo:{t}.txt") == setup_only, t


def test_the_users_git_hooks_do_not_run_in_slots(tmp_path: Path) -> None:
    hooklog = tmp_path / "hooks.log"
    tickets = {
        "A": ticket_yaml("A", run="echo a > a.txt"),
        "B": ticket_yaml("B", run="echo b > b.txt", depends_on=["A"]),
        # An agent's own git is the user's: their hooks and settings apply.
        "C": ticket_yaml(
            "C",
            depends_on=["B"],
            run="git checkout -q HEAD -- README.md;"
            " git config --get core.hooksPath > hooks-path.txt || echo unset > hooks-path.txt",
        ),
    }
    config = "version: 1\ngates:\n  integration: ['true']\n"
    repo = make_project(tmp_path / "r", tickets, config=config)
    hook = f'#!/bin/sh\necho "$(basename "$0") $PWD" >> {hooklog}\necho hook > hook-output.txt\n'
    for name in ("post-checkout", "post-index-change", "reference-transaction", "post-commit"):
        path = repo / ".git" / "hooks" / name
        path.write_text(hook)
        path.chmod(0o755)
    code, out, err = run_ok(repo, "--run-id", "h", "--jobs", "1")
    assert code == 0, out + err
    for t in "AB":
        assert "hook-output.txt" not in tree_files(repo, f"refs/gitexec/h/{t}"), t
    assert git(repo, "show", "gitexec/h:hooks-path.txt") == "unset\n"
    ran: dict[str, set[str]] = {}
    for line in hooklog.read_text().splitlines():
        name, cwd = line.split(" ", 1)
        ran.setdefault(cwd, set()).add(name)
    assert "reference-transaction" not in ran.get(str(repo), set())
    elsewhere = [names for cwd, names in ran.items() if cwd != str(repo)]
    # Only in C's worktree, for C's own checkout.
    assert elsewhere == [{"post-checkout", "post-index-change"}]


def test_an_unreadable_directory_does_not_poison_the_slot() -> None:
    """`chmod 000` in a slot: later tickets and later runs get a clean slot, `clean` removes it."""
    with sandbox() as box:
        lock = "mkdir locked && echo x > locked/f && chmod 000 locked src && echo a > a.txt"
        tickets = {
            "A": ticket_yaml("A", run=lock),
            "B": ticket_yaml("B", run="ls -A . src > B.txt", depends_on=["A"]),
        }
        repo = make_project(box / "r", tickets, files={"src/s.py": "s\n"})
        # One slot, used by B after A in a run, then by A and B again in a later run.
        for run_id in ("p1", "p2"):
            proc = cli(box, repo, "run", "--no-monitor", "--run-id", run_id, "--jobs", "1")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            seen = set(git(repo, "show", f"gitexec/{run_id}:B.txt").split())
            assert seen == {
                ".:",
                "src:",
                ".git",
                ".gitexec",
                "B.txt",
                "README.md",
                "a.txt",
                "src",
                "s.py",
            }
        proc = cli(box, repo, "clean", "--all")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert git(repo, "worktree", "list").count("\n") == 1
        assert not list((box / "home" / ".cache").rglob("slot-*"))
