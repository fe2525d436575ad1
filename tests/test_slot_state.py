"""A slot's state saved by one engine and taken up by the next: a warm pool resets in
O(changes), and anything that changed the slot in between (git run in it, a damaged
state file, a run killed mid-attempt) sends it through the full reset, still exact."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from gitexec import watch
from gitexec.gitutil import find_repo
from gitexec.pool import Pool, pool_dir
from tests.helpers import commit_all, git, init_repo, write_files
from tests.project import make_project, run_ok, ticket_yaml
from tests.test_pool import ENV, FILES, SETUP, SETUP_OUTPUT, against_head, ignored, mutate, status

pytestmark = pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")

# What the agent sees: git's view of its worktree, and every file in it.
LOOK = (
    's=$(git status --porcelain --untracked-files=all --ignored); echo "$s" > seen.txt;'
    " find . -path ./.git -prune -o -type f -print | sort > files.txt"
)


def test_a_warm_pool_is_taken_up_without_a_full_reset(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "HEAD").strip()
    paths = find_repo(repo)
    pool = Pool(paths, 1)
    slot = pool.slots[0]
    slot.prepare(paths, base)
    write_files(slot.path, {"src/new.py": "new\n", "README.md": "changed\n", "x.log": "log\n"})
    collected = slot.collect(base, "msg\n", ENV)
    write_files(slot.path, {"junk.txt": "left by validation\n"})
    pool.close()  # the engine ends: the idle slot's state is saved

    again = Pool(paths, 1)
    slot = again.slots[0]
    slot.prepare(paths, base)
    assert slot.resumed == 1 and slot.fast_resets == 1
    assert git(slot.path, "rev-parse", "HEAD").strip() == base
    assert status(slot.path) == "" and ignored(slot.path) == set()
    assert git(slot.path, "diff-index", "--cached", base) == ""
    assert collected.commit != base
    again.close()


@pytest.mark.parametrize("seed", range(3))
def test_random_agents_across_engines_match_git(tmp_path: Path, seed: int) -> None:
    """test_pool's random agents, with the engine ending and a new one taking the pool up
    now and then (sometimes after someone ran git in the slot)."""
    repo = init_repo(tmp_path / "repo", FILES)
    base = git(repo, "rev-parse", "HEAD").strip()
    write_files(repo, {"src/a.py": "a = 10\n", "docs/new.md": "new\n"})
    other = commit_all(repo, "other base")
    outside = tmp_path / "outside"
    write_files(outside, {"o.txt": "outside\n"})
    paths = find_repo(repo)
    rnd = random.Random(seed)
    pool = Pool(paths, 1)
    current = base
    pool.slots[0].prepare(paths, current, SETUP)
    resumed = 0
    seen: Counter[str] = Counter()
    (outside.parent / "side").mkdir()  # where escaped processes' marks go
    for step in range(16):
        slot = pool.slots[0]
        mutate(slot.path, rnd, step, outside, seen)
        if rnd.random() < 0.7:
            collected = slot.collect(current, f"step {step}\n", ENV)
            assert against_head(slot.path, tmp_path / "index") == "", f"step {step}"
            current = rnd.choice([base, other, collected.commit])
        if rnd.random() < 0.5:
            pool.close()
            if rnd.random() < 0.3:
                git(slot.path, "add", "-A")  # someone used git there: the index changed
            pool = Pool(paths, 1)
        slot = pool.slots[0]
        slot.prepare(paths, current, SETUP)
        resumed += slot.resumed
        assert git(slot.path, "rev-parse", "HEAD").strip() == current
        assert status(slot.path) == "", f"step {step}: reset left differences"
        assert git(slot.path, "diff-index", "--cached", current) == ""
        assert ignored(slot.path) <= SETUP_OUTPUT, f"step {step}: reset left ignored files"
    assert resumed > 0
    pool.close()


def tamper(kind: str, slot: Path, state: Path) -> None:
    write_files(slot, {"junk.txt": "junk\n", "README.md": "edited in the slot\n"})
    if kind == "git-add":
        git(slot, "add", "junk.txt", "README.md")
    elif kind == "git-commit":
        git(slot, "add", "-A")
        git(slot, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "user's")
    elif kind == "damaged-state":
        state.write_text("{not json", encoding="utf-8")
        git(slot, "add", "junk.txt")
    elif kind == "other-place":
        text = state.read_text(encoding="utf-8").replace(str(slot), str(slot) + "-moved")
        state.write_text(text, encoding="utf-8")
        git(slot, "add", "junk.txt")


@pytest.mark.parametrize("kind", ["git-add", "git-commit", "damaged-state", "other-place"])
def test_a_slot_changed_between_runs_gets_a_full_reset(tmp_path: Path, kind: str) -> None:
    tickets = {"A": ticket_yaml("A", run=LOOK)}
    repo = make_project(tmp_path / "r", tickets)
    code, out, err = run_ok(repo, "--run-id", "one", "--jobs", "1")
    assert code == 0, out + err
    paths = find_repo(repo)
    state = paths.state_dir / "worktrees" / "slot-1.state"
    assert state.is_file()  # the idle slot's state, left for the next engine
    slot = pool_dir(paths) / "slot-1"
    tamper(kind, slot, state)

    code, out, err = run_ok(repo, "--run-id", "two", "--jobs", "1")
    assert code == 0, out + err
    # The agent saw exactly the base: git has nothing to say, no junk, README as committed.
    assert git(repo, "show", "gitexec/two:seen.txt") == "\n"
    files = git(repo, "show", "gitexec/two:files.txt").split()
    assert "./junk.txt" not in files and "./README.md" in files
    assert git(repo, "show", "gitexec/two:README.md") == git(repo, "show", "HEAD:README.md")


def test_a_slot_in_use_when_the_engine_dies_leaves_no_state(tmp_path: Path) -> None:
    """The state is removed before a slot is used, so only a clean end leaves one."""
    tickets = {"A": ticket_yaml("A", run="echo a > a.txt")}
    repo = make_project(tmp_path / "r", tickets)
    code, out, err = run_ok(repo, "--run-id", "one", "--jobs", "1")
    assert code == 0, out + err
    paths = find_repo(repo)
    state = paths.state_dir / "worktrees" / "slot-1.state"
    assert state.is_file()
    pool = Pool(paths, 1)
    pool.slots[0].prepare(paths, git(repo, "rev-parse", "HEAD").strip())
    assert not state.exists()  # taken up: an engine killed from here on leaves none
    assert pool.slots[0].resumed == 1
    pool.slots[0].close()  # not pool.close(): as if the engine died here
