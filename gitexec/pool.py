"""The agent pool: reusable worktrees, by default `~/.cache/gitexec/<repository id>/slot-N`.

The pool lives outside the git directory (AI agents refuse to write under any `.git/`
path), in a directory of its own per repository (`pool_dir`), so two clones never share
one. Only the slots' bookkeeping (setup markers and logs) stays under
`<common>/gitexec/worktrees`, where older versions kept the pool itself; such a pool is
removed on first use.

A worktree is created once and then reset from ticket to ticket, and `worktree.setup` runs
once per worktree, so what it installs into ignored directories (`node_modules/`,
`.venv/`) is kept. Everything else a ticket leaves behind, ignored or not, goes at the next
reset: a slot starts each ticket exactly at its base plus that setup output. A slot that
cannot be reset (a directory made unreadable, say) is rebuilt. Worktrees are created one
at a time: in parallel they fight over the disk and each takes longer.

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
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from gitexec import watch
from gitexec.errors import CommandError, UserError
from gitexec.gitutil import (
    NO_HOOKS,
    Identity,
    RepoPaths,
    git,
    read_gitexec_config,
    run_git,
    scrubbed_env,
)
from gitexec.merge import changed_paths

WORKTREES = "worktrees"  # under the state dir: slot bookkeeping (and older versions' pool)
POOLS = "pools"  # under WORKTREES: every directory a pool of this repository was made in
SLOT_PREFIX = "slot-"
GATE_SLOT = "gate"
ENGINE_DIR = ".gitexec"
# Applied to every git command gitexec runs in a slot (agents' own git is left alone).
SLOT_GIT = (
    *NO_HOOKS,
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
    """A slot cannot be made ready: `worktree.setup` failed (the message names the command
    and log), or the slot could not be rebuilt (the message names what is in the way)."""


class _ResetFailed(Exception):
    """Something a ticket left in a slot could not be removed: rebuild the slot."""


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


@dataclass(frozen=True)
class _Kept:
    """The ignored files and directories `worktree.setup` left in a slot (kept across
    resets), and the directories above them."""

    files: frozenset[str] = frozenset()
    dirs: frozenset[str] = frozenset()
    parents: frozenset[str] = frozenset()

    @classmethod
    def of(cls, listing: Iterable[str]) -> _Kept:
        """From `Slot._ignored` entries (directories end with `/`)."""
        entries = list(listing)
        dirs = frozenset(p.rstrip("/") for p in entries if p.endswith("/"))
        files = frozenset(p for p in entries if not p.endswith("/"))
        parents = {p.rsplit("/", i)[0] for p in dirs | files for i in range(1, p.count("/") + 1)}
        return cls(files, dirs, frozenset(parents))

    def keeps(self, rel: str, is_dir: bool) -> bool:
        """Whether `rel` (a directory or not) is setup output, inside it, or holds some.

        Setup output an agent replaced by something else (a directory by a symlink, say)
        is not setup output any more.
        """
        if rel in self.files:
            return not is_dir
        if rel in self.dirs or rel in self.parents:
            return is_dir
        while True:
            rel, sep, _ = rel.rpartition("/")
            if not sep:
                return False
            if rel in self.dirs:
                return True


_NOTHING_KEPT = _Kept()


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
        self._gitdir: Path | None = None
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
        """The worktree's own git directory, as its `.git` file names it."""
        if self._gitdir is None:
            found = _linked_gitdir(self.path)
            if found is None:
                return self.common_dir / "worktrees" / self.path.name
            self._gitdir = found
        return self._gitdir

    @property
    def _setup_marker(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup"

    @property
    def _setup_output_list(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.kept"

    @property
    def setup_log(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup.log"

    def exists(self) -> bool:
        return os.path.isfile(self.path / ".git")

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
        """Files (and symlinks) below directory `rel`; never through a symlink."""
        found: set[str] = set()
        top = self.path / rel
        if self._symlink_above(rel) is not None or os.path.islink(top):
            return found
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            base = os.path.relpath(dirpath, self.path)
            for name in filenames:
                found.add(name if base == "." else f"{base}/{name}")
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    found.add(name if base == "." else f"{base}/{name}")
        return found

    def _is_dir(self, rel: str) -> bool:
        """A real directory (not a symlink to one)."""
        path = self.path / rel  # os.path: an unreadable parent is "no", not an error
        return os.path.isdir(path) and not os.path.islink(path)

    def _symlink_above(self, rel: str) -> str | None:
        """The highest directory above `rel` that is now a symlink, if any.

        Git refuses paths beyond a symlink ("beyond a symbolic link"); the symlink stands for
        them, just as `git add -A` sees it.
        """
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if os.path.islink(self.path / above):
                return above
        return None

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
        return {path for _, path in self._status("--untracked-files=all")}

    def _status(self, *options: str) -> list[tuple[str, str]]:
        """(status code, path) of `git status` (read-only: never takes the index lock)."""
        listing = git(
            [*NO_HOOKS, "--no-optional-locks", "status", "--porcelain=v1", "-z", *options],
            self.path,
        )
        out: list[tuple[str, str]] = []
        entries = listing.split("\0")
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                out.append((entry[:2], entry[3:]))
                if entry[0] in "RC":
                    i += 1  # the rename's source follows
                    if i < len(entries) and entries[i]:
                        out.append((entry[:2], entries[i]))
            i += 1
        return out

    def _ignored(self) -> list[str]:
        """Ignored paths, a directory as one entry (`dir/`) only when the directory itself is
        ignored: then nothing below it can be re-included (`!pattern`), so none of it is
        ever committed. `build/*` with `!build/keep.md` lists `build/`'s files instead."""
        return [
            path
            for code, path in self._status("--ignored=matching", "--untracked-files=all")
            if code == "!!"
        ]

    # --- reset -----------------------------------------------------------------------------

    def prepare(
        self,
        repo: RepoPaths,
        commit: str,
        setup: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Make the slot a clean, detached checkout of `commit`, running setup if needed.

        Clean means: exactly `commit`, plus the ignored output of `worktree.setup`.
        """
        keep = self._setup_output(setup) or _NOTHING_KEPT
        if not self.exists():
            self._create(repo, commit)
        else:
            try:
                if not self._fast_reset(commit, keep):
                    self._full_reset(commit, keep)
            except (CommandError, OSError, _ResetFailed):
                # A worktree git refuses to reset (a crash mid-write, someone's edits in its
                # admin files, a directory made unreadable) is rebuilt: it holds nothing
                # worth keeping.
                self._create(repo, commit)
        if setup and self._setup_output(setup) is None:
            self._run_setup(setup, env)
            # What setup changed in tracked or unignored files is not a ticket's to commit;
            # its ignored output stays, and is what later resets keep.
            kept = self._full_reset(commit, keep=None)
            self._save_setup_output(setup, kept)

    def _create(self, repo: RepoPaths, commit: str) -> None:
        self._stop_watching()
        self._worktree = None
        with _create_lock:
            self._discard()
            _record_pool_dir(self.state_dir, self.path.parent)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            run_git(
                [*NO_HOOKS, "worktree", "add", "--detach", "--force", "-q", str(self.path), commit],
                repo.root,
            )
            for stale in (self._setup_marker, self._setup_output_list):
                with contextlib.suppress(OSError):
                    stale.unlink()
        self._git(["update-index", "--split-index"])
        self._start_watching(commit, ignored=())

    def _discard(self) -> None:
        """Remove the worktree and git's record of it, whatever state it is in."""
        problem = force_remove(self.path)
        if problem is not None:
            raise SetupError(f"cannot rebuild {self.name}: could not remove {problem}")
        forget_worktrees(self.common_dir, [self.path])
        self._gitdir = None

    def _remove_stale_locks(self) -> None:
        """A killed agent or engine can leave git's lock files behind; nobody else uses
        this worktree (the engine lock guarantees it), so they are stale."""
        for name in ("index.lock", "HEAD.lock", "ORIG_HEAD.lock"):
            with contextlib.suppress(OSError):
                (self.gitdir / name).unlink()

    def _full_reset(self, commit: str, keep: _Kept | None) -> list[str]:
        """Checkout and clean everything; remove ignored paths `keep` does not keep (None:
        keep them all). Returns the ignored paths left."""
        self._remove_stale_locks()
        self._stop_watching()
        self._git(["checkout", "-f", "-q", "--detach", commit])
        self._git(["clean", "-fdq"])  # untracked leftovers; ignored ones are sorted below
        ignored = self._ignored()
        if keep is not None:
            leftovers = {p for p in ignored if not keep.keeps(p.rstrip("/"), p.endswith("/"))}
            self._remove(sorted(leftovers))
            ignored = [p for p in ignored if p not in leftovers]
        self._start_watching(commit, ignored)
        return ignored

    def _remove(self, paths: Iterable[str]) -> None:
        for rel in paths:
            problem = force_remove(self.path / rel.rstrip("/"))
            if problem is not None:
                raise _ResetFailed(problem)

    def _fast_reset(self, commit: str, keep: _Kept) -> bool:
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
        # Directories either tree has are handled through the files listed in them (unless
        # something else took their place).
        untracked = sorted(
            p
            for p in {self._symlink_above(p) or p for p in paths - set(tracked)}
            if os.path.lexists(self.path / p)
            and not (self._is_dir(p) and (self._is_tree(old, p) or self._is_tree(new, p)))
        )
        if untracked:
            # Leftovers nobody committed (a failed agent, validation output): `git clean`
            # removes them unless ignored, exactly like the full reset...
            self._git(["--literal-pathspecs", "clean", "-fdq", "--", *untracked])
            # ...and what is left is ignored: it goes too, unless setup made it.
            self._remove(
                p
                for p in untracked
                if os.path.lexists(self.path / p) and not keep.keeps(p, self._is_dir(p))
            )
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

    def _start_watching(self, commit: str, ignored: Sequence[str] | None = None) -> None:
        """Watch the worktree, except directories ignored as a whole (`ignored`: as listed
        by `_ignored`, which is asked when None)."""
        self._stop_watching()
        self._known = None
        if not watch.available():
            return
        try:
            if ignored is None:
                ignored = self._ignored()
            skip = frozenset(os.fsencode(p.rstrip("/")) for p in ignored if p.endswith("/"))
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
            mapped = {self._symlink_above(p) or p for p in touched}
            candidates = sorted(p for p in mapped if not _engine_path(p))
            if not any(_is_rule_file(p) for p in candidates):
                head = known.head
                try:
                    added = self._add(head, candidates)
                except CommandError:
                    added = None  # e.g. a path git cannot read: let git's own scan decide
                if added is not None:
                    self.fast_collects += 1
                    # Nothing touched: the index still equals HEAD, no need to ask git.
                    unchanged = None if added else self._tree_id(head)
                    return self._commit(
                        base, head, message, identity, dirty=touched, tree=unchanged
                    )
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

    def _setup_output(self, setup: Sequence[str]) -> _Kept | None:
        """What this `setup` left here (nothing without setup); None when it has to run."""
        if not setup:
            return _NOTHING_KEPT
        try:
            marker = self._setup_marker.read_text(encoding="utf-8").strip()
            listing = self._setup_output_list.read_bytes()
        except OSError:
            return None
        if marker != _digest(setup):
            return None
        return _Kept.of(os.fsdecode(p) for p in listing.split(b"\0") if p)

    def _save_setup_output(self, setup: Sequence[str], ignored: Sequence[str]) -> None:
        self._setup_output_list.write_bytes(b"\0".join(os.fsencode(p) for p in ignored))
        self._setup_marker.write_text(_digest(setup) + "\n", encoding="utf-8")

    def _run_setup(self, setup: Sequence[str], env: Mapping[str, str] | None) -> None:
        """Run the `worktree.setup` commands; SetupError names the one that failed."""
        self._setup_marker.parent.mkdir(parents=True, exist_ok=True)
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


def _digest(setup: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(setup).encode()).hexdigest()


class Pool:
    """A fixed set of slots in `root` (default: where the settings say, see
    `resolve_pool_dir`); the engine hands free ones to tickets."""

    def __init__(self, repo: RepoPaths, size: int, root: Path | None = None) -> None:
        self.repo = repo
        self.root = root if root is not None else resolve_pool_dir(repo)
        remove_legacy_pool(repo)
        self.slots: list[Slot] = []
        self._free: list[Slot] = []
        self._gate: Slot | None = None
        self.resize(size)

    def resize(self, size: int) -> None:
        """Grow to `size` slots (shrinking just stops handing out the extra ones)."""
        while len(self.slots) < size:
            n = len(self.slots) + 1
            slot = Slot(
                n, self.root / f"{SLOT_PREFIX}{n}", self.repo.state_dir, self.repo.common_dir
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
                self.root / GATE_SLOT,
                self.repo.state_dir,
                self.repo.common_dir,
                name=GATE_SLOT,
            )
        return self._gate


# --- where pools live ----------------------------------------------------------------------


def repository_id(repo: RepoPaths) -> str:
    """A readable name plus a hash of the git common dir's real path: clones of one
    repository get different ids, the worktrees of one repository share it."""
    common = Path(os.path.realpath(repo.common_dir))
    digest = hashlib.sha256(os.fsencode(common)).hexdigest()[:16]
    name = common.parent.name if common.name == ".git" else common.name.removesuffix(".git")
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "repository"
    return f"{readable}-{digest}"


def pool_dir(repo: RepoPaths, setting: str | None = None) -> Path:
    """`<setting>/<repository id>`, the setting relative to the repository's top level;
    without one, `$XDG_CACHE_HOME/gitexec/<repository id>` (`~/.cache` when unset)."""
    if setting:
        base = Path(os.path.expanduser(setting))
        if not base.is_absolute():
            base = repo.root / base
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "")
        base = (Path(cache) if os.path.isabs(cache) else Path.home() / ".cache") / "gitexec"
    root = Path(os.path.abspath(base / repository_id(repo)))
    top = repo.toplevel
    if top is not None and _inside(root, top) and not _inside(root, repo.common_dir):
        raise UserError(
            f"worktree.dir: the pool {root} would be inside the work tree {top}, where "
            "its worktrees show up as untracked repositories; choose a directory outside it"
        )
    return root


def resolve_pool_dir(repo: RepoPaths) -> Path:
    """The pool directory the settings name: GITEXEC_WORKTREE_DIR, then `git config
    gitexec.worktreeDir`, then `worktree.dir` in the work tree's .gitexec/config.yaml."""
    from gitexec.config import CONFIG_FILE, SETTINGS, Config, parse_config, resolve

    configured: str | None = None
    if repo.toplevel is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = (repo.toplevel / CONFIG_FILE).read_text(encoding="utf-8")
            configured = parse_config(CONFIG_FILE, text).config.worktree_dir
    setting = next(s for s in SETTINGS if s.attr == "worktree_dir")
    env = {k: v for k, v in os.environ.items() if k == setting.env}
    git_config = {
        k: v for k, v in read_gitexec_config(repo.root).items() if k == setting.git_key.lower()
    }
    resolved = resolve(Config(worktree_dir=configured), env=env, git_config=git_config)
    return pool_dir(repo, resolved.worktree_dir)


def pool_dirs(repo: RepoPaths, *, existing: bool = True) -> list[Path]:
    """Every directory this repository's pool was made in, and the one the settings name
    now (settings may have changed since); only those that exist, unless told otherwise."""
    found = [*_recorded_pool_dirs(repo.state_dir)]
    with contextlib.suppress(UserError):
        found.append(resolve_pool_dir(repo))
    unique = list(dict.fromkeys(found))
    return [p for p in unique if p.is_dir()] if existing else unique


def _records(state_dir: Path) -> Path:
    return state_dir / WORKTREES / POOLS


def _recorded_pool_dirs(state_dir: Path) -> list[Path]:
    try:
        data = _records(state_dir).read_bytes()
    except OSError:
        return []
    return [Path(os.fsdecode(p)) for p in data.split(b"\0") if p]


def _record_pool_dir(state_dir: Path, root: Path) -> None:
    """Remember `root` so `clean` and recovery find it even after the settings change."""
    known = _recorded_pool_dirs(state_dir)
    if root not in known:
        path = _records(state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0".join(os.fsencode(p) for p in [*known, root]))


def _inside(path: Path, directory: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))


def _is_slot(path: Path) -> bool:
    name = path.name
    return (name.startswith(SLOT_PREFIX) or name == GATE_SLOT) and not os.path.islink(path)


def _linked_gitdir(worktree: Path) -> Path | None:
    """The git directory a linked worktree's `.git` file points to."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    key, _, value = text.strip().partition(": ")
    if key != "gitdir" or not value:
        return None
    return worktree / value if not os.path.isabs(value) else Path(value)


def forget_worktrees(common_dir: Path, worktrees: Iterable[Path]) -> None:
    """Remove git's records (`<common>/worktrees/<name>`) of these worktree paths: a
    targeted `git worktree prune` that leaves the user's own worktrees alone."""
    wanted = {os.path.realpath(p) for p in worktrees}
    admin_root = common_dir / "worktrees"
    try:
        admins = list(admin_root.iterdir())
    except OSError:
        return
    for admin in admins:
        try:
            gitfile = (admin / "gitdir").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if os.path.realpath(os.path.dirname(gitfile)) in wanted:
            force_remove(admin)


# --- removing worktrees --------------------------------------------------------------------


def restore_permissions(root: Path) -> None:
    """Give the owner rwx on every directory under `root` (an agent's `chmod 000` must not
    make its worktree impossible to reset or remove)."""
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISDIR(mode):
            continue
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            with contextlib.suppress(OSError):
                os.chmod(path, mode | stat.S_IRWXU)
        try:
            with os.scandir(path) as entries:
                stack.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


def force_remove(path: Path) -> str | None:
    """Remove a file, symlink or directory tree, restoring permissions first; returns what
    could not be removed and why (None: it is gone)."""
    if not os.path.lexists(path):
        return None
    problems: list[str] = []

    def failed(where: str, exc: BaseException) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append(f"{where}: {reason}")

    try:
        if os.path.islink(path) or not os.path.isdir(path):
            path.unlink()
            return None
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    restore_permissions(path)
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _f, where, exc: failed(where, exc))
    else:
        shutil.rmtree(path, onerror=lambda _f, where, info: failed(where, info[1]))
    if not os.path.lexists(path):
        return None
    return problems[0] if problems else f"{path}: not removed"


@dataclass(frozen=True)
class Removal:
    """What removing pooled worktrees did: names removed, and problems (path: reason)."""

    removed: tuple[str, ...]
    failed: tuple[str, ...]


def _remove_slots(repo: RepoPaths, root: Path) -> Removal:
    removed: list[str] = []
    failed: list[str] = []
    try:
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and _is_slot(p))
    except OSError:
        return Removal((), ())
    for path in candidates:
        problem = force_remove(path)
        if problem is None:
            removed.append(path.name)
        else:
            failed.append(problem)
    if candidates:
        forget_worktrees(repo.common_dir, candidates)
    return Removal(tuple(removed), tuple(failed))


def remove_legacy_pool(repo: RepoPaths) -> Removal:
    """Remove a pool older versions made under `<common>/gitexec/worktrees`."""
    return _remove_slots(repo, repo.state_dir / WORKTREES)


def remove_pools(repo: RepoPaths) -> Removal:
    """Remove every pooled worktree of the repository (for `git exec clean`), wherever its
    pools were made, and their bookkeeping."""
    removed: list[str] = []
    failed: list[str] = []
    roots = pool_dirs(repo)
    for root in [*roots, repo.state_dir / WORKTREES]:
        result = _remove_slots(repo, root)
        removed.extend(result.removed)
        failed.extend(result.failed)
    for root in roots:
        with contextlib.suppress(OSError):
            root.rmdir()  # ours, and empty unless something could not be removed
    # Worktrees someone deleted by hand leave git's records of them behind.
    for admin in _stale_admins(repo, pool_dirs(repo, existing=False)):
        force_remove(admin)
    state = repo.state_dir / WORKTREES
    if state.is_dir():
        for path in state.iterdir():
            if path.is_file() and path.name != POOLS:
                path.unlink()
        remaining = [p for p in _recorded_pool_dirs(repo.state_dir) if p.is_dir()]
        if remaining:
            _records(repo.state_dir).write_bytes(b"\0".join(os.fsencode(p) for p in remaining))
        else:
            with contextlib.suppress(OSError):
                _records(repo.state_dir).unlink()
    return Removal(tuple(sorted(set(removed))), tuple(failed))


def _stale_admins(repo: RepoPaths, roots: Sequence[Path]) -> list[Path]:
    """git's records of worktrees that were in one of `roots` and are gone."""
    stale: list[Path] = []
    try:
        admins = list((repo.common_dir / "worktrees").iterdir())
    except OSError:
        return stale
    homes = [*roots, repo.state_dir / WORKTREES]
    for admin in admins:
        try:
            worktree = Path((admin / "gitdir").read_text(encoding="utf-8").strip()).parent
        except (OSError, UnicodeDecodeError):
            continue
        if not worktree.exists() and any(worktree.parent == home for home in homes):
            stale.append(admin)
    return stale
