"""Pooled worktrees through the CLI: what a ticket collects, what a slot keeps between
tickets, where the pool lives, and that the user's hooks stay out of it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitexec.gitutil import find_repo
from gitexec.journal import read_records
from gitexec.pool import pool_dir
from gitexec.worktrees import write_detached_head
from tests.helpers import git, until_file, write_files
from tests.project import FAKE_CONFIG, gitexec, make_project, run_ok, status, ticket_yaml
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


# --- where the pool lives ------------------------------------------------------------------

WHERE = "echo $GITEXEC_WORKTREE > where.txt"


def worktree_of(repo: Path, run_id: str) -> Path:
    return Path(git(repo, "show", f"gitexec/{run_id}:where.txt").strip())


def test_the_pool_lives_in_the_users_cache_directory(tmp_path: Path) -> None:
    gate_log = tmp_path / "gate.txt"
    config = f"version: 1\ngates:\n  integration: ['echo $GITEXEC_WORKTREE > {gate_log}']\n"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=WHERE)}, config=config)
    code, out, err = run_ok(repo, "--run-id", "p")
    assert code == 0, out + err
    slot = worktree_of(repo, "p")
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "gitexec"
    assert slot.parent.parent == cache and slot.name == "slot-1"
    assert slot.parent.name.startswith("r-")  # readable: named after the repository
    assert Path(gate_log.read_text().strip()) == slot.parent / "gate"
    assert ".git" not in slot.parts
    assert not list((repo / ".git" / "gitexec").rglob("slot-*/"))


def test_where_the_pool_lives_follows_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = "version: 1\nworktree:\n  dir: ../from-yaml\n"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=WHERE)}, config=config)
    assert run_ok(repo, "--run-id", "y")[0] == 0
    assert worktree_of(repo, "y").parent.parent == tmp_path / "from-yaml"
    git(repo, "config", "gitexec.worktreeDir", str(tmp_path / "from-git"))
    assert run_ok(repo, "--run-id", "g")[0] == 0
    assert worktree_of(repo, "g").parent.parent == tmp_path / "from-git"
    monkeypatch.setenv("GITEXEC_WORKTREE_DIR", "~/from-env")
    assert run_ok(repo, "--run-id", "e")[0] == 0
    assert worktree_of(repo, "e").parent.parent == Path.home() / "from-env"
    # Inside the work tree, the slots would show up in it as untracked repositories.
    monkeypatch.setenv("GITEXEC_WORKTREE_DIR", "pools")
    code, _, err = run_ok(repo, "--run-id", "w")
    assert code == 2 and "would be inside the work tree" in err


def test_two_clones_never_share_a_pool(tmp_path: Path) -> None:
    one = make_project(tmp_path / "one", {"A": ticket_yaml("A", run=WHERE)})
    two = tmp_path / "two"
    git(tmp_path, "clone", "-q", str(one), str(two))
    for repo in (one, two):
        assert run_ok(repo, "--run-id", "p")[0] == 0
    assert worktree_of(one, "p") != worktree_of(two, "p")
    assert worktree_of(one, "p").parent.name.startswith("one-")
    assert all(worktree_of(r, "p").is_dir() for r in (one, two))
    # A linked worktree of one repository shares its pool (one engine per repository).
    git(one, "worktree", "add", "-q", str(tmp_path / "linked"))
    assert run_ok(tmp_path / "linked", "--run-id", "q")[0] == 0
    assert worktree_of(one, "q") == worktree_of(one, "p")


def test_a_pool_left_in_the_git_directory_by_older_versions_is_removed(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=WHERE)})
    legacy = repo / ".git" / "gitexec" / "worktrees"
    for name in ("slot-1", "slot-2", "gate"):
        git(repo, "worktree", "add", "-q", "--detach", str(legacy / name))
    (legacy / "slot-1.setup").write_text("stale marker\n")
    code, out, err = run_ok(repo, "--run-id", "p")
    assert code == 0, out + err
    assert not any(p.is_dir() for p in legacy.iterdir())
    listed = git(repo, "worktree", "list", "--porcelain")
    assert str(legacy) not in listed
    assert f"worktree {worktree_of(repo, 'p')}" in listed


def test_resume_checks_the_pool_where_it_is(tmp_path: Path) -> None:
    import signal
    import sys

    from gitexec.journal import read_records
    from tests.helpers import wait_for

    gate = tmp_path / "go"
    wait = f"{until_file(gate, 0.05)}; echo a > a.txt"
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run=wait)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "dead"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = repo / ".git" / "gitexec" / "runs" / "dead" / "journal.jsonl"
    wait_for(lambda: any(e["event"] == "agent-started" for e in read_records(journal)))
    proc.kill()
    proc.wait()
    pgid = next(e["pgid"] for e in read_records(journal) if e["event"] == "agent-started")
    os.killpg(int(pgid), signal.SIGKILL)
    (slot,) = (p for p in pool_dir(find_repo(repo)).iterdir() if p.name == "slot-1")
    gitdir = Path(git(slot, "rev-parse", "--absolute-git-dir").strip())
    (gitdir / "index.lock").write_text("")  # as a killed git leaves it
    gate.touch()
    code, out, err = gitexec(repo, "resume", "--run", "dead", "--validate-state", "--no-monitor")
    assert code == 0, out + err
    assert "repaired: slot-1: removed a stale index.lock" in out
    assert git(repo, "show", "gitexec/dead:a.txt") == "a\n"


def test_a_directory_made_inside_a_remade_one_does_not_outlive_its_files(
    tmp_path: Path,
) -> None:
    """A failed agent replaces a tracked directory by one holding an ignored directory:
    the next ticket in that slot finds neither the ignored files nor the directory."""
    tickets = {
        "A": ticket_yaml(
            "A",
            priority=9,
            run="mkdir -p t/sub && echo k > t/keep.md && echo o > t/sub/o.o"
            " && rm -rf build && mv t build; exit 1",
        ),
        "B": ticket_yaml("B", depends_on=None, run="ls -A build > seen.txt"),
    }
    files = {**NEGATED, "build/keep.md": "k\n"}
    repo = make_project(tmp_path / "r", tickets, config="version: 1\n", files=files)
    run_ok(repo, "--run-id", "d", "--jobs", "1")
    st = status(repo, "d")["tickets"]
    assert st["A"]["status"] == "failed" and st["B"]["status"] == "completed"
    assert st["A"]["slot"] == st["B"]["slot"]
    assert git(repo, "show", "gitexec/d:seen.txt") == "keep.md\n"


def test_ignored_output_of_an_attempt_that_failed_validation_does_not_reach_the_next(
    tmp_path: Path,
) -> None:
    """What the agent left (committed or ignored) before a failed `validate` goes with
    the next reset, though collecting what the failed attempt left looks again."""
    tickets = {
        "A": ticket_yaml(
            "A", priority=9, run="echo a > a.txt && echo t > trace.log", validate=["false"]
        ),
        "B": ticket_yaml("B", run="ls -A > seen.txt"),
    }
    files = {".gitignore": "*.log\n"}
    repo = make_project(tmp_path / "r", tickets, config="version: 1\n", files=files)
    run_ok(repo, "--run-id", "v", "--jobs", "1")
    st = status(repo, "v")["tickets"]
    assert st["A"]["status"] == "failed" and st["B"]["status"] == "completed"
    assert st["A"]["slot"] == st["B"]["slot"]
    seen = git(repo, "show", "gitexec/v:seen.txt").split()
    assert "trace.log" not in seen and "a.txt" not in seen


def test_a_slots_head_is_written_as_git_reads_it(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_files(repo, {"a.txt": "a\n"})
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD").strip()
    git(
        repo,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "2",
    )
    second = git(repo, "rev-parse", "HEAD").strip()
    gitdir = repo / ".git"
    # A branch checked out: HEAD is symbolic, and is replaced under git's lock.
    write_detached_head(gitdir, first)
    assert git(repo, "rev-parse", "HEAD").strip() == first
    assert not (gitdir / "HEAD").read_text().startswith("ref:")
    # Detached: rewritten in place (same file), and git reads the new id.
    inode = (gitdir / "HEAD").stat().st_ino
    write_detached_head(gitdir, second)
    assert (gitdir / "HEAD").stat().st_ino == inode
    assert git(repo, "rev-parse", "HEAD").strip() == second
    # Git busy writing HEAD: refused, and HEAD is left alone.
    (gitdir / "HEAD.lock").write_text("busy\n")
    with pytest.raises(FileExistsError):
        write_detached_head(gitdir, first)
    assert git(repo, "rev-parse", "HEAD").strip() == second


def test_a_reset_over_many_paths_brings_every_one(tmp_path: Path) -> None:
    # Past ARGV_PATHS changed paths, the reset hands git its paths on stdin: the slot that
    # made 150 files resets to a base without them, then to one with them again.
    files = " ".join(f"many/f{i:03}" for i in range(150))
    make = f"mkdir many && for f in {files}; do echo $f > $f; done"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run=make),
            "B": ticket_yaml("B", run="test ! -e many && echo B > B.txt"),
        },
    )
    assert run_ok(repo, "--jobs", "1", "--run-id", "r1", "--only", "A")[0] == 0
    assert run_ok(repo, "--jobs", "1", "--run-id", "r2", "--only", "B")[0] == 0
    git(repo, "checkout", "-q", "gitexec/r1")
    check = "test $(ls many | wc -l) = 150 && test $(cat many/f149) = many/f149 && echo C > C.txt"
    write_files(repo, {".gitexec/tickets/C.yaml": ticket_yaml("C", run=check)})
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "C")
    code, out, err = run_ok(repo, "--jobs", "1", "--run-id", "r3", "--only", "C")
    assert code == 0, out + err
    slots = {
        run: {
            r["slot"]
            for r in read_records(repo / ".git" / "gitexec" / "runs" / run / "journal.jsonl")
            if r["event"] == "ticket-dispatched"
        }
        for run in ("r1", "r2", "r3")
    }
    assert slots == {"r1": {1}, "r2": {1}, "r3": {1}}  # the same slot, reset fast each time


def test_a_new_slot_of_many_files_is_an_exact_checkout(tmp_path: Path) -> None:
    # From 100 files on, git writes a checkout with parallel workers: a new slot must still
    # hold every file with its content, mode and kind, and git must see nothing changed.
    files: dict[str, str | bytes] = {f"src/d{i % 7}/f{i:03}.txt": f"{i}\n" for i in range(240)}
    files["bin/tool.sh"] = "#!/bin/sh\necho tool\n"
    repo = make_project(tmp_path / "r", {}, files=files)
    os.chmod(repo / "bin" / "tool.sh", 0o700)
    os.symlink("d0/f000.txt", repo / "src" / "link")
    check = (
        'test -z "$(git status --porcelain)" && test -x bin/tool.sh && test -L src/link'
        " && test $(cat src/link) = 0 && test $(cat src/d6/f237.txt) = 237"
        " && test $(find src -name '*.txt' | wc -l) = 240 && echo A > A.txt"
    )
    write_files(repo, {".gitexec/tickets/A.yaml": ticket_yaml("A", run=check)})
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "many")
    code, out, err = run_ok(repo, "--jobs", "1", "--run-id", "m")
    assert code == 0, out + err
    assert git(repo, "show", "gitexec/m:A.txt") == "A\n"
