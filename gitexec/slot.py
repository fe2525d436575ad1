"""One pooled worktree (a slot): reset to a base, setup run once, an agent's work collected.

A worktree is created once (one at a time: in parallel they fight over the disk) and then
reset from ticket to ticket to exactly its base plus what `worktree.setup` (run once per
worktree) left in ignored directories such as `node_modules/`; everything else a ticket
leaves, ignored or not, goes. A slot that cannot be reset is rebuilt.

Resets and collects cost O(changed paths) while the slot's inotify watcher (watch.py)
vouches for what was touched, with a split index keeping index writes small; otherwise
(not Linux, queue overflow, the index rewritten by someone else) they fall back to full
scans: `git checkout -f` + `git clean -fd`, and `git add -A`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pygit2

from gitexec import slotcommit, slotfiles, slotstate, watch
from gitexec.committrees import CommitTrees
from gitexec.errors import CommandError
from gitexec.gitutil import NO_HOOKS, Identity, RepoPaths, git, git_for_effect, run_git
from gitexec.merge import changed_paths
from gitexec.slotsetup import (
    NOTHING_KEPT,
    SetupError,
    SetupOutput,
    run_setup,
    save_setup_output,
    setup_output,
)
from gitexec.slotstate import Known
from gitexec.worktrees import (
    WORKTREES,
    force_remove,
    forget_worktrees,
    linked_gitdir,
    record_pool_dir,
    write_detached_head,
)

SLOT_PREFIX = "slot-"
GATE_SLOT = "gate"
# A checkout that writes many files (a new slot, a full reset, catching up after many
# merges) writes them with one worker per core (git does so from 100 files on).
PARALLEL_CHECKOUT = ("-c", "checkout.workers=0")
# Applied to every git command gitexec runs in a slot (agents' own git is left alone).
SLOT_GIT = (
    *NO_HOOKS,
    *PARALLEL_CHECKOUT,
    "-c",
    "core.splitIndex=true",
    "-c",
    "splitIndex.sharedIndexExpire=now",
    # Commands here touch a handful of named paths: threads to lstat the whole index first
    # cost more than they save.
    "-c",
    "core.preloadIndex=false",
)
ARGV_PATHS = 64  # paths given to git as arguments; more go on its stdin
_IGNORED_HEADER = "The following paths are ignored by one of your .gitignore files:"

_create_lock = threading.Lock()
# At a run's start every slot resets at once: sharing the CPU among all of them only
# delays the first agents, it does not speed up the last.
_resets = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


class _ResetFailed(Exception):
    """Something a ticket left in a slot could not be removed: rebuild the slot."""


@dataclass(frozen=True)
class Collected:
    """What an agent left in a slot, as a commit."""

    commit: str  # the ticket's result: base, the agent's own commits, plus ours on top
    own_commits: int  # commits the agent made itself

    def empty(self, base: str) -> bool:
        return self.commit == base


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
        # Valid only while the watcher is healthy and nobody else wrote HEAD or the index.
        self._known: Known | None = None
        self._skip: tuple[str, ...] = ()  # directories the watcher skips (ignored whole)
        self._objects: pygit2.Repository | None = None
        self._worktree: pygit2.Repository | None = None
        self._plain_content: bool | None = None  # settings leave blobs as on disk
        self.trees = CommitTrees(lambda: self.objects)
        # How often each fast path was taken (for tests and metrics).
        self.fast_resets = 0
        self.fast_collects = 0
        self.in_process_commits = 0
        self.resumed = 0  # a state saved by an earlier engine was taken up

    def __repr__(self) -> str:
        return f"Slot({self.name})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def gitdir(self) -> Path:
        """The worktree's own git directory, as its `.git` file names it."""
        if self._gitdir is None:
            found = linked_gitdir(self.path)
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
    def _state_file(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.state"

    @property
    def setup_log(self) -> Path:
        return self.state_dir / WORKTREES / f"{self.name}.setup.log"

    def exists(self) -> bool:
        return os.path.isfile(self.path / ".git")

    def _git(self, args: Sequence[str], **kwargs: object) -> str:
        return git([*SLOT_GIT, *args], self.path, **kwargs)

    def _git_paths(self, args: Sequence[str], paths: Sequence[str]) -> None:
        """Run git on `paths` (names need not be UTF-8): a few as arguments, many as NUL-
        separated pathspecs on stdin."""
        names = [os.fsencode(p) for p in paths]
        if len(names) <= ARGV_PATHS and sum(map(len, names)) <= ARGV_PATHS * 64:
            git_for_effect([*SLOT_GIT, "--literal-pathspecs", *args, "--", *names], self.path)
            return
        stdin = ["--pathspec-from-file=-", "--pathspec-file-nul"]
        data = b"\0".join(names)
        git([*SLOT_GIT, "--literal-pathspecs", *args, *stdin], self.path, input=data)

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

    def _remember(
        self, head: str, dirty: Iterable[str] = (), index_base: str | None = None
    ) -> None:
        self._known = Known(head, self._index_stat(), set(dirty), index_base)

    def _untouched_since_known(self) -> Known | None:
        """The known state, if HEAD and index are still as gitexec left them."""
        known = self._known
        if known is None or self._watcher is None or not self._as_saved(known):
            return None
        return known

    def _as_saved(self, known: Known) -> bool:
        """HEAD and the index as `known` says, and no git command busy writing them."""
        if self._head() != known.head or self._index_stat() != known.index:
            return False
        return not any((self.gitdir / n).exists() for n in ("index.lock", "HEAD.lock"))

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
            out.update(slotfiles.disk_files(self.path, rel))
            for commit in trees:
                out.update(self.trees.files_under(commit, rel))
            out.add(rel)  # a file may have become this directory, or the other way round
        return out

    def _a_tree_in(self, path: str, *commits: str) -> bool:
        return any(self.trees.is_tree(c, path) for c in commits)

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
        return {path for _, path in slotfiles.status(self.path, "--untracked-files=all")}

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
        keep = setup_output(setup, self._setup_marker, self._setup_output_list) or NOTHING_KEPT
        saved = slotstate.load(self._state_file, self.path) if self._watcher is None else None
        slotstate.forget(self._state_file)  # from here on, only this engine knows the slot
        with _resets:
            try:
                if not self.exists():
                    raise _ResetFailed("no worktree")
                if saved is not None:
                    self._resume(saved)
                if not self._fast_reset(commit, keep):
                    self._full_reset(commit, keep)
            except (CommandError, OSError, _ResetFailed):
                # A worktree git refuses to reset (a crash mid-write, someone's edits in its
                # admin files, a directory made unreadable) is rebuilt: it holds nothing
                # worth keeping.
                self._create(repo, commit)
        if setup and setup_output(setup, self._setup_marker, self._setup_output_list) is None:
            run_setup(setup, self.path, env, self.setup_log, self.name)
            # What setup changed in tracked or unignored files is not a ticket's to commit;
            # its ignored output stays, and is what later resets keep.
            kept = self._full_reset(commit, keep=None)
            save_setup_output(setup, kept, self._setup_marker, self._setup_output_list)

    def _resume(self, saved: slotstate.Saved) -> None:
        """Take up what an earlier engine knew of the slot, if HEAD and the index are
        still exactly as it left them (checked again once the new watcher runs)."""
        k = saved.known
        if not self._as_saved(k):
            return
        self._start_watching(k.head, [f"{p}/" for p in saved.skip])
        if self._known is None:
            return
        if not self._as_saved(k):
            self._stop_watching()
            return
        self._known = Known(k.head, k.index, set(k.dirty), k.index_base)
        self.resumed += 1

    def save_state(self) -> None:
        """Leave what this engine knows of the slot for the next one (the slot is idle:
        no agent of this engine can touch it any more)."""
        known = self._untouched_since_known()
        touched = self._touched([known.head]) if known is not None else None
        if known is None or touched is None:
            return
        known = Known(known.head, known.index, known.dirty | touched, known.index_base)
        slotstate.save(self._state_file, slotstate.Saved(str(self.path), known, self._skip))

    def carry(self, repo: RepoPaths, base: str, content: str) -> None:
        """`content` (a commit on `base`) as uncommitted changes to `base` (the collect
        then scans: the watcher cannot vouch for this)."""
        self.prepare(repo, content)
        self._git(["reset", "-q", "--mixed", base])
        self._stop_watching()

    def _create(self, repo: RepoPaths, commit: str) -> None:
        self._stop_watching()
        self._worktree = None
        with _create_lock:
            self._discard()
            record_pool_dir(self.state_dir, self.path.parent)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            add = ["worktree", "add", "--detach", "--force", "-q", str(self.path), commit]
            run_git([*NO_HOOKS, *PARALLEL_CHECKOUT, *add], repo.root)
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

    def _full_reset(self, commit: str, keep: SetupOutput | None) -> list[str]:
        """Checkout and clean everything; remove ignored paths `keep` does not keep (None:
        keep them all). Returns the ignored paths left."""
        self._remove_stale_locks()
        self._stop_watching()
        self._git(["checkout", "-f", "-q", "--detach", commit])
        self._git(["clean", "-fdq"])  # untracked leftovers; ignored ones are sorted below
        ignored = slotfiles.ignored(self.path)
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

    def _fast_reset(self, commit: str, keep: SetupOutput) -> bool:
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
                self.trees.tree(old).id,
                self.trees.tree(new).id,
            )
        paths = known.dirty | touched | set(differ)
        if any(slotfiles.is_rule_file(p) for p in paths):
            return False  # ignore rules changed: only a full clean is sure to be right
        # What git tracks: the new tree and the index (which an in-process commit left at
        # `index_base` on `dirty`); files only HEAD has are leftovers like any other.
        trees = (new, known.index_base or old)
        tracked = sorted(p for p in paths if any(self.trees.has_file(c, p) for c in trees))
        # Directories git tracks are handled through the files listed in them (unless
        # something else took their place).
        candidates = {slotfiles.symlink_above(self.path, p) or p for p in paths - set(tracked)}
        untracked = sorted(
            p
            for p in candidates
            if os.path.lexists(self.path / p)
            and not (slotfiles.is_dir(self.path, p) and self._a_tree_in(p, *trees))
        )
        if untracked:
            # Leftovers nobody committed (a failed agent, validation output) go, ignored or
            # not, unless setup made them and they are still ignored (git clean tells).
            kept = [p for p in untracked if keep.keeps(p, slotfiles.is_dir(self.path, p))]
            if kept:
                self._git(["--literal-pathspecs", "clean", "-fdq", "--", *kept])
            self._remove(p for p in untracked if p not in kept)
        if tracked:
            self._checkout(new, tracked)
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

    def _checkout(self, commit: str, paths: Sequence[str]) -> None:
        """Index and files of `paths` as in `commit` (paths it lacks go from both)."""
        self._git_paths(["checkout", "-f", "--no-overlay", "-q", commit], paths)

    def _start_watching(self, commit: str, ignored: Sequence[str] | None = None) -> None:
        """Watch the worktree, except directories ignored as a whole (`ignored`: as listed
        by `_ignored`, which is asked when None)."""
        self._stop_watching()
        self._known = None
        if not watch.available():
            return
        try:
            if ignored is None:
                ignored = slotfiles.ignored(self.path)
            self._skip = tuple(sorted(p.rstrip("/") for p in ignored if p.endswith("/")))
            skip = frozenset(os.fsencode(p) for p in self._skip)
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
        self.trees.clear()

    # --- collect ---------------------------------------------------------------------------

    def collect(self, base: str, message: str, identity: Identity) -> Collected:
        """Commit everything the agent changed (honouring .gitignore), keeping its own commits.

        Plumbing, not `git commit`: no hooks, no signing prompts, no editor. Ticket files
        under .gitexec/ are the engine's to write, so agent edits there are not collected.
        """
        known = self._untouched_since_known()
        touched = self._touched([known.head]) if known is not None else None
        if known is not None and touched is not None:
            dirty = known.dirty | touched
            mapped = {slotfiles.symlink_above(self.path, p) or p for p in touched}
            candidates = sorted(p for p in mapped if not slotfiles.engine_path(p))
            if not any(slotfiles.is_rule_file(p) for p in candidates):
                head = known.head
                tree = self._tree_in_process(head, candidates)
                if tree is not None:
                    # The index is left as it was; the next reset brings it up to date.
                    self.fast_collects += 1
                    self.in_process_commits += 1
                    behind = known.index_base or head
                    return self._commit(base, head, message, identity, dirty, tree, behind)
                if known.index_base is not None:
                    # The index lags behind HEAD on what earlier commits took: add it too.
                    mapped |= {slotfiles.symlink_above(self.path, p) or p for p in known.dirty}
                    candidates = sorted(p for p in mapped if not slotfiles.engine_path(p))
                try:
                    added = self._add(known.index_base or head, candidates)
                except CommandError:
                    added = None  # e.g. a path git cannot read: let git's own scan decide
                if added is not None:
                    self.fast_collects += 1
                    # Nothing touched and the index equal to HEAD: no need to ask git.
                    same = not added and known.index_base is None
                    unchanged = str(self.trees.tree(head).id) if same else None
                    return self._commit(base, head, message, identity, dirty, unchanged)
        # Full scan: the agent used git itself, or the watcher cannot vouch for the tree.
        self._git(["add", "-A", "--", ".", f":(exclude){slotfiles.ENGINE_DIR}"])
        head = self._git(["rev-parse", "HEAD"]).strip()
        return self._commit(base, head, message, identity, dirty=touched or ())

    def _tree_in_process(self, head: str, candidates: Sequence[str]) -> str | None:
        """The tree `git add -A` of `candidates` + `git write-tree` would make, without
        git; None when only git can tell (content filters, submodules, odd names)."""
        worktree = self._worktree_repo()
        if self._plain_content is None:
            self._plain_content = slotcommit.safe_settings(worktree, self.common_dir)
        if not self._plain_content:
            return None
        try:
            tree = slotcommit.tree_after(
                worktree, self.objects, self.path, self.trees.tree(head), candidates
            )
        except (slotcommit.NeedsGit, pygit2.GitError, OSError):
            return None
        return str(tree)

    def sync_index(self) -> None:
        """Bring the index up to HEAD where an in-process commit left it behind (before
        commands that may ask git about the worktree, such as `validate`)."""
        known = self._untouched_since_known()
        if known is None:
            if self._known is not None and self._known.index_base is not None:
                self._git(["reset", "-q"])  # the whole index, from HEAD
                self._stop_watching()
            return
        if known.index_base is None:
            return
        trees = (known.head, known.index_base)
        tracked = sorted(p for p in known.dirty if any(self.trees.has_file(c, p) for c in trees))
        if tracked:  # the index only: the files are what HEAD took from them
            self._git_paths(["reset", "-q", known.head], tracked)
        self._remember(known.head, known.dirty)

    def _add(self, index_base: str, candidates: Sequence[str]) -> bool:
        """`git add -A` the touched paths that still exist or are in the index; True if any.

        Named explicitly, an ignored path makes `git add` list it and exit 1 after adding
        everything else: that is the outcome `git add -A` would have had, not an error.
        """
        paths = [
            p
            for p in candidates
            if os.path.lexists(self.path / p) or self.trees.has_file(index_base, p)
        ]
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

    def _worktree_repo(self) -> pygit2.Repository:
        if self._worktree is None:
            self._worktree = pygit2.Repository(str(self.path))
        return self._worktree

    def _set_head(self, commit: str) -> None:
        """Point the slot's detached HEAD at `commit` (in process: no git to start)."""
        write_detached_head(self.gitdir, commit)

    def _commit(
        self,
        base: str,
        head: str,
        message: str,
        identity: Identity,
        dirty: Iterable[str],
        tree: str | None = None,
        index_base: str | None = None,
    ) -> Collected:
        head_tree = str(self.trees.tree(head).id)
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
            # The worktree now equals HEAD except untracked files among `dirty` (and the
            # index equals HEAD, or `index_base` on `dirty`).
            self._remember(commit, dirty, index_base if index_base != commit else None)
        return Collected(commit, own)
