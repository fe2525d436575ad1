"""The agent pool: reusable worktrees under `<common>/gitexec/worktrees/slot-N`.

A worktree is created once and then reset from ticket to ticket (O(changed files)), and
`worktree.setup` runs once per worktree, so what it installs into ignored directories
(`node_modules/`, `.venv/`) is kept. Worktrees are created one at a time: in parallel they
fight over the disk and each takes longer.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitexec.errors import CommandError
from gitexec.gitutil import RepoPaths, git, run_git, scrubbed_env

WORKTREES = "worktrees"

_create_lock = threading.Lock()


class SetupError(Exception):
    """`worktree.setup` failed in a slot; the message names the command and log."""


@dataclass(frozen=True)
class Slot:
    index: int
    path: Path
    state_dir: Path

    @property
    def name(self) -> str:
        return f"slot-{self.index}"

    @property
    def _setup_marker(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup"

    @property
    def setup_log(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup.log"

    def exists(self) -> bool:
        return (self.path / ".git").is_file()

    def prepare(
        self,
        repo: RepoPaths,
        commit: str,
        setup: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Make the slot a clean, detached checkout of `commit`, running setup if needed."""
        if not self.exists():
            self._create(repo, commit)
        else:
            self._reset(commit)
        if setup:
            self._run_setup(setup, env)

    def _create(self, repo: RepoPaths, commit: str) -> None:
        with _create_lock:
            if self.path.exists():
                shutil.rmtree(self.path)
            run_git(["worktree", "prune"], repo.root)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            run_git(
                ["worktree", "add", "--detach", "--force", "-q", str(self.path), commit], repo.root
            )
            with contextlib.suppress(OSError):
                self._setup_marker.unlink()

    def _reset(self, commit: str) -> None:
        # A killed agent can leave git's index lock behind; nobody else uses this worktree.
        with contextlib.suppress(OSError):
            gitdir = git(["rev-parse", "--git-dir"], self.path).strip()
            (self.path / gitdir / "index.lock").unlink()
        run_git(["checkout", "-f", "-q", "--detach", commit], self.path)
        # Untracked leftovers go; ignored files (setup output, caches) stay.
        run_git(["clean", "-fdq"], self.path)

    def _run_setup(self, setup: Sequence[str], env: Mapping[str, str] | None) -> None:
        digest = hashlib.sha256("\0".join(setup).encode()).hexdigest()
        marker = self._setup_marker
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        with self.setup_log.open("ab") as log:
            for command in setup:
                log.write(f"$ {command}\n".encode())
                log.flush()
                proc = subprocess.run(
                    ["sh", "-c", command],
                    cwd=self.path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=scrubbed_env(env),
                    check=False,
                )
                if proc.returncode != 0:
                    raise SetupError(
                        f"worktree setup command {command!r} exited {proc.returncode} in "
                        f"{self.name} (log: {self.setup_log})"
                    )
        marker.write_text(digest + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Collected:
    """What an agent left in a slot, as a commit."""

    commit: str  # the ticket's result: base, the agent's own commits, plus ours on top
    own_commits: int  # commits the agent made itself
    committed_changes: bool  # whether gitexec committed uncommitted changes

    def empty(self, base: str) -> bool:
        return self.commit == base


def collect(worktree: Path, base: str, message: str, env: Mapping[str, str]) -> Collected:
    """Commit everything the agent changed (honouring .gitignore), keeping its own commits.

    Plumbing, not `git commit`: no hooks, no signing prompts, no editor. Ticket files
    under .gitexec/ are the engine's to write, so agent edits there are not collected.
    """
    run_git(["add", "-A", "--", ".", ":(exclude).gitexec"], worktree, env=env)
    head, head_tree = git(["rev-parse", "HEAD", "HEAD^{tree}"], worktree).split()
    tree = git(["write-tree"], worktree).strip()
    commit = head
    if tree != head_tree:
        commit = git(
            ["commit-tree", tree, "-p", head, "-F", "-"], worktree, input=message, env=env
        ).strip()
        run_git(["update-ref", "--no-deref", "HEAD", commit], worktree, env=env)
    own = 0
    if head != base:
        own = int(git(["rev-list", "--count", f"{base}..{head}"], worktree).strip() or 0)
    return Collected(commit, own, commit != head)


class Pool:
    """A fixed set of slots; the engine hands free ones to tickets."""

    def __init__(self, repo: RepoPaths, size: int) -> None:
        self.repo = repo
        self.slots: list[Slot] = []
        self._free: list[Slot] = []
        self.resize(size)

    def resize(self, size: int) -> None:
        """Grow to `size` slots (shrinking just stops handing out the extra ones)."""
        while len(self.slots) < size:
            n = len(self.slots) + 1
            slot = Slot(n, self.repo.state_dir / WORKTREES / f"slot-{n}", self.repo.state_dir)
            self.slots.append(slot)
            self._free.append(slot)
        self._limit = size

    def acquire(self) -> Slot | None:
        """A free slot (lowest number first), or None."""
        usable = [s for s in self._free if s.index <= self._limit]
        if not usable:
            return None
        slot = min(usable, key=lambda s: s.index)
        self._free.remove(slot)
        return slot

    def release(self, slot: Slot) -> None:
        if slot not in self._free:
            self._free.append(slot)

    @property
    def busy(self) -> int:
        return len(self.slots) - len(self._free)


def remove_worktrees(repo: RepoPaths) -> list[str]:
    """Remove every pooled worktree (for `git exec clean`); returns their names."""
    base = repo.state_dir / WORKTREES
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for path in sorted(base.iterdir()):
        if path.is_dir() and path.name.startswith("slot-"):
            with contextlib.suppress(CommandError):
                run_git(["worktree", "remove", "--force", "--force", str(path)], repo.root)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif path.is_file():
            path.unlink()
    run_git(["worktree", "prune"], repo.root)
    return removed
