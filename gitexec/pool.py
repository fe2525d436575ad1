"""The agent pool: reusable worktrees under `<common>/gitexec/worktrees/slot-N`.

A worktree is created once and then reset from ticket to ticket, and `worktree.setup` runs
once per worktree, so what it installs into ignored directories (`node_modules/`,
`.venv/`) is kept. Worktrees are created one at a time: in parallel they fight over the
disk and each takes longer.

Resetting a slot and committing what an agent changed both cost O(changed paths) when the
slot's inotify watcher (watch.py) vouches for what was touched: git then only looks at
those paths, and a split index keeps index writes small. Without a trustworthy watcher
(not Linux, queue overflow, someone else rewrote the index) the slot falls back to full
scans: `git checkout -f` + `git clean -fd`, and `git add -A`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitexec import watch
from gitexec.errors import CommandError
from gitexec.gitutil import Identity, RepoPaths, git, run_git, scrubbed_env
from gitexec.merge import changed_paths

WORKTREES = "worktrees"
GATE_SLOT = "gate"
ENGINE_DIR = ".gitexec"
# Applied to every git command gitexec runs in a slot (agents' own git is left alone).
SLOT_GIT = (
    "-c",
    "core.splitIndex=true",
    "-c",
    "splitIndex.sharedIndexExpire=now",
    # Commands here touch a handful of named paths: threads to lstat the whole index first
    # cost more than they save.
    "-c",
    "core.preloadIndex=false",
)
_IGNORED_HEADER = "The following paths are ignored by one of your .gitignore files:"
# Files whose change alters what git considers ignored or how it filters content.
_RULE_FILES = (".gitignore", ".gitattributes")

_create_lock = threading.Lock()


class SetupError(Exception):
    """`worktree.setup` failed in a slot; the message names the command and log."""


@dataclass(frozen=True)
class Collected:
    """What an agent left in a slot, as a commit."""

    commit: str  # the ticket's result: base, the agent's own commits, plus ours on top
    own_commits: int  # commits the agent made itself

    def empty(self, base: str) -> bool:
        return self.commit == base


@dataclass
class _Known:
    """What the slot looked like after gitexec last wrote it: HEAD, index and the paths
    touched since then. Valid only while the watcher is healthy and nobody else wrote
    HEAD or the index."""

    head: str
    index: tuple[int, int, int]
    dirty: set[str] = field(default_factory=set)


def _is_rule_file(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in _RULE_FILES


def _engine_path(path: str) -> bool:
    return path == ENGINE_DIR or path.startswith(ENGINE_DIR + "/")


class Slot:
    """One pooled worktree; used by one ticket at a time (one thread)."""

    def __init__(
        self, index: int, path: Path, state_dir: Path, common_dir: Path, name: str | None = None
    ) -> None:
        self.index = index
        self._name = name or f"slot-{index}"
        self.path = path
        self.state_dir = state_dir
        self.common_dir = common_dir
        self._watcher: watch.TreeWatcher | None = None
        self._known: _Known | None = None
        self._objects: pygit2.Repository | None = None
        self._worktree: pygit2.Repository | None = None
        self._trees: dict[str, pygit2.Tree] = {}  # recent commit -> tree lookups
        self.fast_resets = 0  # how often the O(changes) path was taken (for tests, metrics)
        self.fast_collects = 0

    def __repr__(self) -> str:
        return f"Slot({self.name})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def gitdir(self) -> Path:
        return self.common_dir / "worktrees" / self.name

    @property
    def _setup_marker(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup"

    @property
    def setup_log(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup.log"

    def exists(self) -> bool:
        return (self.path / ".git").is_file()

    def _git(self, args: Sequence[str], **kwargs: object) -> str:
        return git([*SLOT_GIT, *args], self.path, **kwargs)

    def _git_paths(self, args: Sequence[str], paths: Sequence[str], **kwargs: object) -> str:
        """Run git with NUL-separated paths on stdin (file names need not be UTF-8)."""
        data = b"\0".join(os.fsencode(p) for p in paths)
        return git([*SLOT_GIT, "--literal-pathspecs", *args], self.path, input=data, **kwargs)

    @property
    def objects(self) -> pygit2.Repository:
        """The object store, for this slot's thread (pygit2 objects are not shared)."""
        if self._objects is None:
            self._objects = pygit2.Repository(str(self.common_dir))
        return self._objects

    # --- state checks ----------------------------------------------------------------------

    def _index_stat(self) -> tuple[int, int, int]:
        try:
            st = (self.gitdir / "index").stat()
        except OSError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _head(self) -> str:
        try:
            return (self.gitdir / "HEAD").read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _remember(self, head: str, dirty: Iterable[str] = ()) -> None:
        self._known = _Known(head, self._index_stat(), set(dirty))

    def _untouched_since_known(self) -> _Known | None:
        """The known state, if HEAD and index are still as gitexec left them."""
        known = self._known
        if known is None or self._watcher is None:
            return None
        if self._head() != known.head or self._index_stat() != known.index:
            return None
        if (self.gitdir / "index.lock").exists() or (self.gitdir / "HEAD.lock").exists():
            return None
        return known

    def _touched(self, trees: Sequence[str]) -> set[str] | None:
        """Paths touched since the last call (directories expanded), or None if unknown."""
        assert self._watcher is not None
        taken = self._watcher.take()
        if taken is None:
            return None
        files, dirs = taken
        out = {os.fsdecode(f) for f in files}
        for d in dirs:
            rel = os.fsdecode(d)
            out.update(self._disk_files(rel))
            for commit in trees:
                out.update(self._tree_files(commit, rel))
            out.add(rel)  # a file may have become this directory, or the other way round
        return out

    def _disk_files(self, rel: str) -> set[str]:
        found: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.path / rel):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            base = os.path.relpath(dirpath, self.path)
            for name in filenames:
                found.add(name if base == "." else f"{base}/{name}")
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    found.add(name if base == "." else f"{base}/{name}")
        return found

    def _tree(self, commit: str) -> pygit2.Tree:
        """The tree of `commit` (looked up once per commit: resets ask about many paths)."""
        cached = self._trees.get(commit)
        if cached is None:
            cached = self.objects[pygit2.Oid(hex=commit)].peel(pygit2.Tree)
            self._trees = {commit: cached, **dict(list(self._trees.items())[:3])}
        return cached

    def _tree_files(self, commit: str, rel: str) -> set[str]:
        try:
            sub = self._tree(commit)[rel]
        except (KeyError, ValueError):
            return set()
        if not isinstance(sub, pygit2.Tree):
            return set()
        found: set[str] = set()
        stack: list[tuple[str, pygit2.Tree]] = [(rel, sub)]
        while stack:
            prefix, node = stack.pop()
            for entry in node:
                path = f"{prefix}/{entry.name}"
                if isinstance(entry, pygit2.Tree):
                    stack.append((path, entry))
                else:
                    found.add(path)
        return found

    def _is_tree(self, commit: str, path: str) -> bool:
        try:
            return isinstance(self._tree(commit)[path], pygit2.Tree)
        except (KeyError, ValueError):
            return False

    def _in_tree(self, commit: str, path: str) -> bool:
        try:
            return not isinstance(self._tree(commit)[path], pygit2.Tree)
        except (KeyError, ValueError):
            return False

    def touched_now(self) -> set[str]:
        """Paths changed in the worktree so far (for live overlap detection).

        Read from the watcher when it can tell, else from `git status` (read-only: it never
        takes the index lock, so the agent working here is not disturbed).
        """
        watcher = self._watcher
        peeked = watcher.peek() if watcher is not None else None
        if peeked is not None:
            files, dirs = peeked
            return {os.fsdecode(p) for p in files | dirs}
        listing = git(
            ["--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"],
            self.path,
        )
        out: set[str] = set()
        entries = listing.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                out.add(entry[3:])
                if entry[0] in "RC":
                    i += 1  # the rename's source follows
                    if i < len(entries) and entries[i]:
                        out.add(entries[i])
            i += 1
        return out

    # --- reset -----------------------------------------------------------------------------

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
            try:
                if not self._fast_reset(commit):
                    self._full_reset(commit)
            except CommandError:
                # A worktree git refuses to reset (a crash mid-write, someone's edits in
                # its admin files) is rebuilt: it holds nothing worth keeping.
                self._create(repo, commit)
        if setup and self._run_setup(setup, env):
            self._start_watching(commit)  # setup output lands in ignored dirs: rescan once

    def _create(self, repo: RepoPaths, commit: str) -> None:
        self._stop_watching()
        self._worktree = None
        with _create_lock:
            if self.path.exists():
                shutil.rmtree(self.path)
            shutil.rmtree(self.gitdir, ignore_errors=True)
            run_git(["worktree", "prune"], repo.root)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            run_git(
                ["worktree", "add", "--detach", "--force", "-q", str(self.path), commit], repo.root
            )
            with contextlib.suppress(OSError):
                self._setup_marker.unlink()
        self._git(["update-index", "--split-index"])
        self._start_watching(commit)

    def _remove_stale_locks(self) -> None:
        """A killed agent or engine can leave git's lock files behind; nobody else uses
        this worktree (the engine lock guarantees it), so they are stale."""
        for name in ("index.lock", "HEAD.lock", "ORIG_HEAD.lock"):
            with contextlib.suppress(OSError):
                (self.gitdir / name).unlink()

    def _full_reset(self, commit: str) -> None:
        self._remove_stale_locks()
        self._stop_watching()
        self._git(["checkout", "-f", "-q", "--detach", commit])
        # Untracked leftovers go; ignored files (setup output, caches) stay.
        self._git(["clean", "-fdq"])
        self._start_watching(commit)

    def _fast_reset(self, commit: str) -> bool:
        """Reset only what changed: touched paths and the difference between the trees."""
        known = self._untouched_since_known()
        if known is None:
            return False
        touched = self._touched([known.head])
        if touched is None:
            return False
        old, new = known.head, commit
        differ: list[str] = []
        if old != new:
            differ = changed_paths(
                self.objects,
                self._tree(old).id,
                self._tree(new).id,
            )
        paths = known.dirty | touched | set(differ)
        if any(_is_rule_file(p) for p in paths):
            return False  # ignore rules changed: only a full clean is sure to be right
        tracked = sorted(p for p in paths if self._in_tree(old, p) or self._in_tree(new, p))
        # Directories either tree has are handled through the files listed in them.
        untracked = sorted(
            p
            for p in paths - set(tracked)
            if os.path.lexists(self.path / p)
            and not self._is_tree(old, p)
            and not self._is_tree(new, p)
        )
        if untracked:
            # Leftovers nobody committed (a failed agent, validation output): `git clean`
            # removes them unless ignored, exactly like the full reset.
            self._git(["--literal-pathspecs", "clean", "-fdq", "--", *untracked])
        if tracked:
            self._git_paths(
                [
                    "checkout",
                    "-f",
                    "--no-overlay",
                    "-q",
                    new,
                    "--pathspec-from-file=-",
                    "--pathspec-file-nul",
                ],
                tracked,
            )
        if old != new:
            self._set_head(new)
        # The checkout's own writes are not an agent's changes: forget them.
        assert self._watcher is not None
        if self._watcher.take() is None:
            self._stop_watching()
            return True  # reset done; the next one will be a full one
        self._remember(new)
        self.fast_resets += 1
        return True

    def _start_watching(self, commit: str) -> None:
        self._stop_watching()
        self._known = None
        if not watch.available():
            return
        try:
            listing = self._git(
                ["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"]
            )
            skip = frozenset(
                os.fsencode(p.rstrip("/")) for p in listing.split("\0") if p.endswith("/")
            )
            self._watcher = watch.TreeWatcher(self.path, skip)
        except (watch.WatchError, CommandError, OSError):
            self._watcher = None
            return
        if self._watcher.problem is not None:
            self._stop_watching()
            return
        self._remember(commit)

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        self._watcher = None
        self._known = None

    def close(self) -> None:
        self._stop_watching()
        self._objects = self._worktree = None
        self._trees = {}

    # --- collect ---------------------------------------------------------------------------

    def collect(self, base: str, message: str, identity: Identity) -> Collected:
        """Commit everything the agent changed (honouring .gitignore), keeping its own commits.

        Plumbing, not `git commit`: no hooks, no signing prompts, no editor. Ticket files
        under .gitexec/ are the engine's to write, so agent edits there are not collected.
        """
        known = self._untouched_since_known()
        touched = self._touched([known.head]) if known is not None else None
        if known is not None and touched is not None:
            candidates = sorted(p for p in touched if not _engine_path(p))
            if not any(_is_rule_file(p) for p in candidates):
                head = known.head
                added = self._add(head, candidates)
                self.fast_collects += 1
                # Nothing touched: the index still equals HEAD, no need to ask git.
                unchanged = None if added else self._tree_id(head)
                return self._commit(base, head, message, identity, dirty=touched, tree=unchanged)
        # Full scan: the agent used git itself, or the watcher cannot vouch for the tree.
        self._git(["add", "-A", "--", ".", f":(exclude){ENGINE_DIR}"])
        head = self._git(["rev-parse", "HEAD"]).strip()
        return self._commit(base, head, message, identity, dirty=touched or ())

    def _add(self, head: str, candidates: Sequence[str]) -> bool:
        """`git add -A` the touched paths that still exist or were tracked; True if any.

        Named explicitly, an ignored path makes `git add` list it and exit 1 after adding
        everything else: that is the outcome `git add -A` would have had, not an error.
        """
        paths = [p for p in candidates if os.path.lexists(self.path / p) or self._in_tree(head, p)]
        if not paths:
            return False
        proc = run_git(
            [
                *SLOT_GIT,
                "--literal-pathspecs",
                "add",
                "-A",
                "--pathspec-from-file=-",
                "--pathspec-file-nul",
            ],
            self.path,
            input=b"\0".join(os.fsencode(p) for p in paths),
            check=False,
            env={"LC_ALL": "C", "LANGUAGE": "C"},
        )
        if proc.returncode == 1 and proc.stderr.startswith(_IGNORED_HEADER):
            problems = [
                line for line in proc.stderr.splitlines() if line.startswith(("error:", "fatal:"))
            ]
            if not problems:
                return True
        if proc.returncode != 0:
            raise CommandError(proc.args, proc.returncode, proc.stdout, proc.stderr)
        return True

    def _tree_id(self, commit: str) -> str:
        return str(self._tree(commit).id)

    def _set_head(self, commit: str) -> None:
        """Point the slot's detached HEAD at `commit` (in process: no git to start)."""
        if self._worktree is None:
            self._worktree = pygit2.Repository(str(self.path))
        self._worktree.set_head(pygit2.Oid(hex=commit))

    def _commit(
        self,
        base: str,
        head: str,
        message: str,
        identity: Identity,
        dirty: Iterable[str],
        tree: str | None = None,
    ) -> Collected:
        head_tree = self._tree_id(head)
        if tree is None:
            tree = self._git(["write-tree"]).strip()
        commit = head
        if tree != head_tree:
            sig = identity.signature()
            oid = self.objects.create_commit(
                None, sig, sig, message, pygit2.Oid(hex=tree), [pygit2.Oid(hex=head)]
            )
            commit = str(oid)
            self._set_head(commit)
        own = 0
        if head != base:
            own = int(self._git(["rev-list", "--count", f"{base}..{head}"]).strip() or 0)
        if self._watcher is not None:
            # The worktree now equals HEAD except untracked files among `dirty`.
            self._remember(commit, dirty)
        return Collected(commit, own)

    # --- setup -----------------------------------------------------------------------------

    def _run_setup(self, setup: Sequence[str], env: Mapping[str, str] | None) -> bool:
        """Run `worktree.setup` unless it already ran here; True when it ran."""
        digest = hashlib.sha256("\0".join(setup).encode()).hexdigest()
        marker = self._setup_marker
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
            return False
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
        return True


class Pool:
    """A fixed set of slots; the engine hands free ones to tickets."""

    def __init__(self, repo: RepoPaths, size: int) -> None:
        self.repo = repo
        self.root = repo.state_dir / WORKTREES  # every slot and the gate slot live here
        self.slots: list[Slot] = []
        self._free: list[Slot] = []
        self._gate: Slot | None = None
        self.resize(size)

    def resize(self, size: int) -> None:
        """Grow to `size` slots (shrinking just stops handing out the extra ones)."""
        while len(self.slots) < size:
            n = len(self.slots) + 1
            slot = Slot(
                n,
                self.repo.state_dir / WORKTREES / f"slot-{n}",
                self.repo.state_dir,
                self.repo.common_dir,
            )
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

    @property
    def free(self) -> int:
        """How many slots `acquire` can hand out now."""
        return sum(1 for s in self._free if s.index <= self._limit)

    def release(self, slot: Slot) -> None:
        if slot not in self._free:
            self._free.append(slot)

    def close(self) -> None:
        for slot in [*self.slots, *([self._gate] if self._gate else [])]:
            slot.close()

    @property
    def busy(self) -> int:
        return len(self.slots) - len(self._free)

    def gate_slot(self) -> Slot:
        """The worktree integration gates run in (not one of the agents' slots)."""
        if self._gate is None:
            self._gate = Slot(
                0,
                self.repo.state_dir / WORKTREES / GATE_SLOT,
                self.repo.state_dir,
                self.repo.common_dir,
                name=GATE_SLOT,
            )
        return self._gate


def remove_worktrees(repo: RepoPaths) -> list[str]:
    """Remove every pooled worktree (for `git exec clean`); returns their names."""
    base = repo.state_dir / WORKTREES
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for path in sorted(base.iterdir()):
        if path.is_dir() and (path.name.startswith("slot-") or path.name == GATE_SLOT):
            with contextlib.suppress(CommandError):
                run_git(["worktree", "remove", "--force", "--force", str(path)], repo.root)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif path.is_file():
            path.unlink()
    run_git(["worktree", "prune"], repo.root)
    return removed
