"""Pooled worktrees: the O(changes) reset and collect agree with git's full scans.

Git itself is the oracle: after a collect `git status` must show nothing left behind and
nothing ignored committed, and after a reset the slot must be exactly the new base (index,
HEAD and files) plus the ignored output of `worktree.setup`, whatever the agent (or a
failed attempt) did: type changes, negated ignore rules, symlinks out of the worktree,
unreadable directories (run as an unprivileged user when the suite runs as root, where
they bite), background processes that escape the agent and write later.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from gitexec import watch
from gitexec.gitutil import Identity, find_repo
from gitexec.pool import Pool
from gitexec.process import run_process
from tests.helpers import commit_all, git, init_repo, wait_for, write_files
from tests.unprivileged import python, sandbox

ENV = Identity("t", "t@example.com", None)

FILES = {
    ".gitignore": "build/*\n!build/keep.md\n*.log\n",
    "README.md": "hello\n",
    "src/a.py": "a = 1\n",
    "src/pkg/b.py": "b = 2\n",
    "src/pkg/deep/c.py": "c = 3\n",
    "docs/guide.md": "guide\n",
    "tools/run.sh": "#!/bin/sh\necho run\n",
}


# Setup runs again in a rebuilt slot, whatever the random agents committed by then.
SETUP = (
    "if mkdir -p build/cache 2>/dev/null; then echo o > build/out.o; echo c > build/cache/c; fi;"
    " true",
)
SETUP_OUTPUT = {"build/cache/", "build/out.o"}


def status(path: Path) -> str:
    # --no-optional-locks: a plain `git status` may rewrite the index, which (rightly) makes
    # the slot distrust its bookkeeping and take the slow path.
    return git(path, "--no-optional-locks", "status", "--porcelain=v1", "--untracked-files=all")


def ignored(path: Path) -> set[str]:
    out = git(
        path, "--no-optional-locks", "status", "--porcelain=v1", "--ignored=matching", "-uall"
    )
    return {line[3:] for line in out.splitlines() if line.startswith("!! ")}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def escape(root: Path, side: Path, step: int) -> None:
    """An agent step that starts a background process in its own session and exits: the
    process waits for a later ticket (`go<step>` appears), then writes into the worktree."""
    go = f"{side}/go{step}"
    daemon = (  # gives up after 3000 polls, so a failing test leaves nothing running
        f"i=0; until [ -e {go} ] || [ $i -ge 3000 ]; do sleep 0.01; i=$((i+1)); done; "
        f"[ -e {go} ] && echo late > late{step}.txt && touch {side}/landed{step}"
    )
    script = f"setsid sh -c '{daemon}' >/dev/null 2>&1 & echo $! > {side}/pid{step}"
    result = run_process(
        ["sh", "-c", script], cwd=root, env={}, log=side / f"agent{step}.log", timeout_s=60
    )
    assert result.ok, result


def against_head(path: Path, index: Path) -> str:
    """`git status` of the worktree against HEAD through a throwaway index, and the ignored
    files HEAD holds."""
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    index.unlink(missing_ok=True)

    def run(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("read-tree", "HEAD")
    return run("status", "--porcelain=v1", "--untracked-files=all") + run(
        "ls-files", "-ci", "--exclude-standard"
    )


def mutate(
    root: Path,
    rnd: random.Random,
    step: int,
    outside: Path,
    seen: Counter[str],
    *,
    escapes: bool = True,
) -> None:
    """A random agent: edits, creates, deletes, renames, chmods, type changes (to and from
    symlinks too, one pointing out of the worktree), ignored and re-included output,
    unreadable directories, escaped background processes. `seen` counts what took effect."""
    files = [
        p for p in root.rglob("*") if ".git" not in p.parts and (p.is_file() or p.is_symlink())
    ]
    dirs = [
        p for p in root.rglob("*") if ".git" not in p.parts and p.is_dir() and not p.is_symlink()
    ]
    for _ in range(rnd.randint(1, 6)):
        op = rnd.choice(
            [
                "edit",
                "edit",
                "create",
                "newdir",
                "delete",
                "rmdir",
                "rename",
                "renamedir",
                "chmod",
                "ignored",
                "file2dir",
                "dir2file",
                "symlink",
                "dir2symlink",
                "file2symlink",
                "symlink2dir",
                "negated",
                "unreadable",
                "escaped",
                "noop",
            ]
        )
        try:
            if op == "edit" and files:
                f = rnd.choice(files)
                if f.is_file() and not f.is_symlink():
                    f.write_text(f.read_text(errors="replace") + f"edit {step}\n")
            elif op == "create":
                parent = rnd.choice(dirs) if dirs and rnd.random() < 0.7 else root
                (parent / f"new{step}_{rnd.randint(0, 99)}.txt").write_text("new\n")
            elif op == "newdir":
                d = root / f"gen{step}" / "inner"
                d.mkdir(parents=True, exist_ok=True)
                (d / "x.txt").write_text("x\n")
                (d.parent / "y.txt").write_text("y\n")
            elif op == "delete" and files:
                rnd.choice(files).unlink()
            elif op == "rmdir" and dirs:
                shutil.rmtree(rnd.choice(dirs))
            elif op == "rename" and files:
                f = rnd.choice(files)
                f.rename(f.with_name(f"renamed{step}_{f.name}"))
            elif op == "renamedir" and dirs:
                d = rnd.choice(dirs)
                d.rename(d.with_name(f"{d.name}_moved{step}"))
            elif op == "chmod" and files:
                f = rnd.choice(files)
                if f.is_file() and not f.is_symlink():
                    f.chmod(f.stat().st_mode ^ 0o111)
            elif op == "ignored":
                (root / "build").mkdir(exist_ok=True)
                (root / "build" / f"out{step}.o").write_text("obj\n")
                (root / f"trace{step}.log").write_text("log\n")
            elif op == "file2dir" and files:
                f = rnd.choice(files)
                if f.is_file() and not f.is_symlink():
                    f.unlink()
                    f.mkdir()
                    (f / "now-a-dir.txt").write_text("d\n")
            elif op == "dir2file" and dirs:
                d = rnd.choice(dirs)
                shutil.rmtree(d)
                d.write_text("was a dir\n")
            elif op == "symlink":
                link = root / f"link{step}"
                if not link.exists():
                    link.symlink_to("README.md")
            elif op == "dir2symlink" and dirs:
                d = rnd.choice(dirs)
                shutil.rmtree(d)
                d.symlink_to(rnd.choice([os.path.relpath(root / "docs", d.parent), str(outside)]))
            elif op == "file2symlink" and files:
                f = rnd.choice(files)
                f.unlink()
                f.symlink_to(os.path.relpath(root / "src", f.parent))
            elif op == "symlink2dir":
                links = [p for p in root.rglob("*") if ".git" not in p.parts and p.is_symlink()]
                if links:
                    link = rnd.choice(links)
                    link.unlink()
                    link.mkdir()
                    (link / "was-a-link.txt").write_text("d\n")
            elif op == "negated":
                (root / "build").mkdir(exist_ok=True)
                (root / "build" / "keep.md").write_text(f"keep {step}\n")
            elif op == "unreadable" and dirs:
                d = rnd.choice(dirs)
                d.chmod(0)
                if not os.access(d, os.R_OK):
                    seen["unreadable"] += 1
            elif op == "escaped" and escapes and not seen[f"escaped{step}"]:
                escape(root, outside.parent / "side", step)
                seen[f"escaped{step}"] += 1
                seen["escaped"] += 1
        except OSError:
            pass  # a random agent is allowed to fail at things
        files = [
            p for p in root.rglob("*") if ".git" not in p.parts and (p.is_file() or p.is_symlink())
        ]
        dirs = [
            p
            for p in root.rglob("*")
            if ".git" not in p.parts and p.is_dir() and not p.is_symlink()
        ]


def exercise(tmp_path: Path, seed: int, *, escapes: bool = True) -> Counter[str]:
    """25 random agent steps in one pooled slot, each checked against git; what took effect.
    Without `escapes`, no step leaves a process behind."""
    repo = init_repo(tmp_path / "repo", FILES)
    os.chmod(repo / "tools/run.sh", 0o755)  # noqa: S103 - an executable script, on purpose
    base = commit_all(repo, "executable")
    # A second base that differs in a few places, to reset across.
    write_files(repo, {"src/a.py": "a = 10\n", "docs/new.md": "new\n"})
    (repo / "docs/guide.md").unlink()
    other = commit_all(repo, "other base")
    git(repo, "checkout", "-q", base)

    outside = tmp_path / "outside"
    write_files(outside, {"o.txt": "outside\n", "deep/p.txt": "p\n"})
    side = tmp_path / "side"
    side.mkdir()

    paths = find_repo(repo)
    slot = Pool(paths, 1).slots[0]
    rnd = random.Random(seed)
    seen: Counter[str] = Counter()
    bases = [base, other]
    current = base
    slot.prepare(paths, current, SETUP)
    assert ignored(slot.path) == SETUP_OUTPUT
    for step in range(25):
        mutate(slot.path, rnd, step, outside, seen, escapes=escapes)
        if rnd.random() < 0.2:
            current = rnd.choice(bases)  # the attempt failed: nothing is collected
        else:
            collected = slot.collect(current, f"step {step}\n", ENV)
            # Everything the agent changed is in the commit, nothing ignored is; nothing
            # non-ignored is left over (asked of a fresh index: a commit made in process
            # leaves the slot's own index behind until the next reset or `sync_index`).
            assert against_head(slot.path, tmp_path / "index") == "", f"step {step}: left"
            assert git(slot.path, "rev-parse", "HEAD").strip() == collected.commit
            if rnd.random() < 0.5:
                slot.sync_index()  # as before `validate`
                assert status(slot.path) == "", f"step {step}: index not synced"
            # Sometimes a validation step leaves junk behind after the commit.
            if rnd.random() < 0.3:
                (slot.path / f"junk{step}.txt").write_text("junk\n")
                (slot.path / f"junk{step}.log").write_text("ignored junk\n")
            current = rnd.choice([*bases, collected.commit])
        slot.prepare(paths, current, SETUP)
        if seen[f"escaped{step}"]:
            # The next ticket has its slot: the escaped process would write into it now.
            pid = int((side / f"pid{step}").read_text())
            (side / f"go{step}").touch()
            wait_for(lambda: not alive(pid) or (side / f"landed{step}").exists())  # noqa: B023
            assert not (side / f"landed{step}").exists(), f"step {step}: the late write landed"
        assert git(slot.path, "rev-parse", "HEAD").strip() == current
        assert status(slot.path) == "", f"step {step}: reset left differences"
        assert git(slot.path, "diff-index", "--cached", current) == ""
        # Of what is ignored, only the setup's output may stay (the agent may have removed
        # some of it).
        assert ignored(slot.path) <= SETUP_OUTPUT, f"step {step}: reset left ignored files"
    assert slot.fast_collects > 8
    assert slot.in_process_commits > 4
    assert slot.fast_resets > 8
    slot.close()
    return seen


@pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")
@pytest.mark.parametrize("seed", range(6))
def test_fast_reset_and_collect_match_git(tmp_path: Path, seed: int) -> None:
    exercise(tmp_path, seed)


@pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")
def test_fast_reset_and_collect_match_git_where_permissions_hold() -> None:
    """The same steps as an unprivileged user, for whom `chmod 0` makes a directory
    unreadable (root reads it anyway). Escaped processes stay with the test above: an
    unprivileged user has no cgroup here to contain one that leaves its session."""
    code = (
        "import json, sys; from pathlib import Path; from tests.test_pool import exercise; "
        "print(json.dumps(exercise(Path(sys.argv[1]), int(sys.argv[2]), escapes=False)))"
    )
    seen: Counter[str] = Counter()
    with sandbox() as box:
        for seed in range(3):
            (box / f"w{seed}").mkdir()
            proc = python(box, "-c", code, str(box / f"w{seed}"), str(seed), timeout_s=300)
            assert proc.returncode == 0, f"seed {seed}: " + proc.stdout + proc.stderr
            seen.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert seen["unreadable"] > 0, seen  # the case bit


@pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")
def test_agent_using_git_falls_back_to_a_full_scan(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "HEAD").strip()
    paths = find_repo(repo)
    slot = Pool(paths, 1).slots[0]
    slot.prepare(paths, base)
    # The agent unstages a tracked file without touching it: only git's index changed.
    git(slot.path, "rm", "-q", "--cached", "README.md")
    write_files(slot.path, {"src/a.py": "changed\n"})
    before = slot.fast_collects
    slot.collect(base, "msg\n", ENV)
    assert slot.fast_collects == before  # the index was rewritten behind our back
    slot.prepare(paths, base)
    assert status(slot.path) == ""
    assert git(slot.path, "ls-files", "README.md").strip() == "README.md"
    slot.close()


@pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")
def test_a_second_collect_through_git_takes_what_the_first_left_in_the_index(
    tmp_path: Path,
) -> None:
    """After an in-process commit the index lags behind HEAD; a failed validation's
    collect that git has to make (it touched a name that is not UTF-8) must still see that
    a file the agent committed was deleted since."""
    repo = init_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "HEAD").strip()
    paths = find_repo(repo)
    slot = Pool(paths, 1).slots[0]
    slot.prepare(paths, base)
    write_files(slot.path, {"made.txt": "by the agent\n"})
    first = slot.collect(base, "agent\n", ENV)
    assert slot.in_process_commits == 1
    assert git(slot.path, "ls-tree", "--name-only", first.commit, "made.txt").strip()
    (slot.path / "made.txt").unlink()  # validation removes it, and a file of its own
    odd = slot.path / os.fsdecode(b"odd-\xff.txt")
    odd.write_text("x\n")
    odd.unlink()
    second = slot.collect(base, "left\n", ENV)
    assert slot.in_process_commits == 1  # git made this one
    assert against_head(slot.path, tmp_path / "index") == ""
    names = git(slot.path, "ls-tree", "--name-only", second.commit)
    assert "made.txt" not in names
    slot.prepare(paths, base)
    assert status(slot.path) == "" and git(slot.path, "diff-index", "--cached", base) == ""
    slot.close()
