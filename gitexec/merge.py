"""In-memory three-way tree merge with pygit2 whose cost follows the changed paths.

`merge_trees` walks base, ours and theirs together and stops descending wherever two of them
agree on a subtree (git-revise's `merge_entries` shortcut), so only directories changed on both
sides are read and only files changed on both sides are content-merged (libgit2's xdiff, which
is git's). Results follow `git merge-tree --write-tree` (merge-ort): the same clean trees and
the same clean-or-conflict verdict, checked by tests/test_merge_differential.py. Renames are
looked for only when a deletion meets a change on the other side (ort's "relevant" renames),
with git's own similarity estimate, directory renames included. Conflicts are values; merge
rules (union / ours / theirs per path glob) settle the conflicts on the paths they name.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pygit2
from pygit2.ffi import C, ffi

from gitexec.globs import PathSet
from gitexec.treecache import TREES, Entries
from gitexec.treewrite import TreeWriter


class RuleStrategy(enum.Enum):
    """How a merge rule settles a conflict on the paths it names."""

    UNION = "union"  # keep both sides' lines of each conflicting hunk (text files only)
    OURS = "ours"  # take the integration branch's version
    THEIRS = "theirs"  # take the ticket's version


@dataclass(frozen=True)
class MergeRule:
    """A conflict strategy for the paths matched by `paths` (globs, see `gitexec.globs`)."""

    paths: tuple[str, ...]
    strategy: RuleStrategy


class ConflictKind(enum.Enum):
    """Why a path could not be merged."""

    CONTENT = "content"
    ADD_ADD = "add_add"
    MODIFY_DELETE = "modify_delete"
    RENAME = "rename"
    BINARY = "binary"
    MODE = "mode"
    FILE_DIRECTORY = "file_directory"
    SUBMODULE = "submodule"


@dataclass(frozen=True)
class Conflict:
    """One conflict: where, what kind, a git-style message and, for text, diff3 markers."""

    path: str
    kind: ConflictKind
    message: str
    text: str | None = None


@dataclass(frozen=True)
class MergeResult:
    """The merged tree (None when conflicts remain), the conflicts, and paths rules settled."""

    tree: pygit2.Oid | None
    conflicts: tuple[Conflict, ...] = ()
    resolved: tuple[tuple[str, RuleStrategy], ...] = ()

    @property
    def clean(self) -> bool:
        return not self.conflicts

    @property
    def conflict_paths(self) -> list[str]:
        """The conflicted paths, sorted and without duplicates."""
        return sorted({c.path for c in self.conflicts})


# A tree entry: (object id, filemode). None stands for "no entry".
_Entry = tuple[pygit2.Oid, int]
_Changes = dict[str, tuple[_Entry | None, _Entry | None]]

_TREE = 0o040000
_BLOB = 0o100644
_EXEC = 0o100755
_LINK = 0o120000
_GITLINK = 0o160000
_TYPE_MASK = 0o170000
_FILE_MODES = frozenset({_BLOB, _EXEC, _LINK})

_OURS = 1
_THEIRS = 2

_BINARY_PROBE = 8000  # git's buffer_is_binary(): a NUL in the first 8000 bytes
_EMPTY_BLOB = pygit2.Oid(hex="e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
# diffcore-rename: similarity scores run to 60000; renames need 50%, same-basename pairs 75%
_MAX_SCORE = 60000.0
_MIN_SCORE = 30000
_MIN_BASENAME_SCORE = 45000
_CANDIDATES_PER_DST = 4
_RENAME_LIMIT = 7000  # merge-ort's default rename limit
_HASHBASE = 107927  # diffcore-delta's span hash modulus

# libgit2 git_merge_file_options values (include/git2/merge.h).
_FAVOR_NORMAL = 0
_FAVOR_UNION = 3
_STYLE_DIFF3 = 2

# Directory-rename relevance, as merge-ort's `dir_rename_relevance`.
_NOT_RELEVANT = 0
_RELEVANT_FOR_ANCESTOR = 1
_RELEVANT_FOR_SELF = 2

_EMPTY_BASE_MARKER = re.compile(rb"^\|{7}(\r?\n)(={7}\r?\n)", re.MULTILINE)
_TYPE_NAMES = {0o100000: "file", _LINK: "symlink", _GITLINK: "submodule", _TREE: "directory"}


def _read_tree(repo: pygit2.Repository, oid: pygit2.Oid) -> Entries:
    """The entries of one tree object, by raw name: every tree the merge reads comes here
    (through the shared cache: a tree is parsed once, however often it is merged)."""
    return TREES.entries(repo, oid)


def _tree_key(item: tuple[bytes, _Entry]) -> bytes:
    """git's tree order: a subtree sorts as if its name ended in '/'."""
    name, (_, mode) = item
    return name + b"/" if mode == _TREE else name


class _Trees:
    """Tree reads (held for one operation, and shared through `TREES`) and raw tree writes."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self._cache: dict[pygit2.Oid, Entries] = {}

    def entries(self, oid: pygit2.Oid | None) -> Entries:
        """Read-only: copy before changing."""
        if oid is None:
            return {}
        found = self._cache.get(oid)
        if found is None:
            found = self._cache[oid] = _read_tree(self.repo, oid)
        return found

    def write(self, entries: Mapping[bytes, _Entry]) -> pygit2.Oid:
        data = b"".join(
            b"%o %s\0" % (mode, name) + oid.raw
            for name, (oid, mode) in sorted(entries.items(), key=_tree_key)
        )
        oid = self.repo.odb.write(pygit2.GIT_OBJECT_TREE, data)
        TREES.put(oid, dict(entries))  # the next merge reads what this one wrote
        return oid

    def apply(
        self,
        tree: pygit2.Oid | None,
        changes: Mapping[str, _Entry | None],
        prefix: str = "",
        on_collision: _Merger | None = None,
    ) -> pygit2.Oid | None:
        """`tree` with `changes` applied, rebuilding only the trees along changed paths.

        A path set to a file replaces what was there, unless `on_collision` is given: then a
        file meeting a non-empty directory is a file/directory conflict reported to it.
        Returns None when the result is empty.
        """
        direct: dict[bytes, _Entry | None] = {}
        nested: dict[bytes, dict[str, _Entry | None]] = {}
        for path, entry in changes.items():
            head, _, rest = path.partition("/")
            name = head.encode("utf-8", "surrogateescape")
            if rest:
                nested.setdefault(name, {})[rest] = entry
            else:
                direct[name] = entry
        entries = dict(self.entries(tree))
        for name in direct.keys() | nested.keys():
            cur = entries.get(name)
            cur_tree = cur[0] if cur is not None and cur[1] == _TREE else None
            child = _join(prefix, name)
            sub = cur_tree
            if name in nested:
                sub = self.apply(cur_tree, nested[name], child + "/", on_collision)
            new: _Entry | None
            if on_collision is not None:
                file = direct.get(name, None if cur_tree is not None else cur)
                if file is not None and sub is not None:
                    on_collision.file_directory(child)
                new = (sub, _TREE) if sub is not None else file
            elif name in direct:
                if name in nested:
                    raise ValueError(f"{child!r} is changed both as a file and as a directory")
                new = direct[name]
            elif sub is None and cur_tree is None:
                new = cur  # only deletions below a path that holds no directory: nothing to do
            else:
                new = (sub, _TREE) if sub is not None else None
            if new is None:
                entries.pop(name, None)
            else:
                entries[name] = new
        return self.write(entries) if entries else None

    def diff(
        self, a: pygit2.Oid | None, b: pygit2.Oid | None, prefix: str, side: _SideChanges
    ) -> None:
        """Record file-level differences a -> b in `side`, skipping subtrees equal by id."""
        ae, be = self.entries(a), self.entries(b)
        # Compared in C: two versions of a large directory differ in a few entries.
        for name in {name for name, _ in ae.items() ^ be.items()}:
            x, y = ae.get(name), be.get(name)
            path = _join(prefix, name)
            xf, xd = _split(x)
            yf, yd = _split(y)
            if xf != yf:
                side.changes[path] = (xf, yf)
            if xd != yd:
                if yd is None:
                    side.removed_dirs.add(path)
                elif xd is None:
                    side.added_dirs.add(path)
                self.diff(xd, yd, path + "/", side)


@dataclass
class _SideChanges:
    """What one side changed relative to the base, file by file, and what renames matter."""

    changes: _Changes = field(default_factory=dict)
    removed_dirs: set[str] = field(default_factory=set)  # directories in base, not here
    added_dirs: set[str] = field(default_factory=set)  # directories here, not in base
    # Removed directories the other side added files into directly: where this side's
    # directory renames matter (merge-ort's RELEVANT_FOR_SELF).
    self_dirs: set[str] = field(default_factory=set)
    relevant: set[str] = field(default_factory=set)  # deletions whose renames matter

    @property
    def deleted(self) -> dict[str, _Entry]:
        return {p: old for p, (old, new) in self.changes.items() if old and new is None}

    @property
    def added(self) -> dict[str, _Entry]:
        return {p: new for p, (old, new) in self.changes.items() if new and old is None}

    def consider(self, other: _SideChanges) -> None:
        """Work out which of this side's deletions need rename detection (relevant_sources).

        Content: the other side changed the path too. Location: it lies in a directory this
        side removed while the other side added files directly into it (directory renames).
        """
        mine = self.added
        self.self_dirs = {
            _dirname(p) for p in other.added if p not in mine and _dirname(p) in self.removed_dirs
        }
        self.relevant = {
            p
            for p in self.deleted
            if p in other.changes or (self.self_dirs and self.dir_relevance(_dirname(p)))
        }

    def dir_relevance(self, d: str) -> int:
        if d in self.self_dirs:
            return _RELEVANT_FOR_SELF
        if d in self.removed_dirs and any(p in self.self_dirs for p in _parents(d)):
            return _RELEVANT_FOR_ANCESTOR
        return _NOT_RELEVANT


def _join(prefix: str, name: bytes) -> str:
    return prefix + name.decode("utf-8", "surrogateescape")


def _split(entry: _Entry | None) -> tuple[_Entry | None, pygit2.Oid | None]:
    """An entry as (file part, tree part): merge-ort merges the two separately."""
    if entry is None:
        return None, None
    if entry[1] == _TREE:
        return None, entry[0]
    return entry, None


def _is_tree(entry: _Entry | None) -> bool:
    return entry is not None and entry[1] == _TREE


def _is_regular(entry: _Entry | None) -> bool:
    return entry is not None and entry[1] & _TYPE_MASK == 0o100000


def _dirname(path: str) -> str:
    return path.rpartition("/")[0]


def _parents(path: str) -> list[str]:
    """The directories containing `path`, nearest first ("" excluded)."""
    out: list[str] = []
    while "/" in path:
        path = path.rpartition("/")[0]
        out.append(path)
    return out


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def _unique_basenames(paths: Sequence[str]) -> dict[str, str | None]:
    """Basename -> the one path with it, or None when several share it."""
    out: dict[str, str | None] = {}
    for path in paths:
        name = _basename(path)
        out[name] = None if name in out else path
    return out


def _spanhash(data: bytes) -> dict[int, int]:
    """git's diffcore-delta fingerprint: bytes per hash of LF- or 64-byte-delimited chunks.

    As in git 2.39, CR before LF is skipped in text and a last chunk without LF is not counted.
    """
    text = b"\0" not in data[:_BINARY_PROBE]
    out: dict[int, int] = {}
    n = acc1 = acc2 = 0
    size = len(data)
    for i, c in enumerate(data):
        if text and c == 13 and i + 1 < size and data[i + 1] == 10:
            continue
        old = acc1
        acc1 = (((acc1 << 7) ^ (acc2 >> 25)) + c) & 0xFFFFFFFF
        acc2 = ((acc2 << 7) ^ (old >> 25)) & 0xFFFFFFFF
        n += 1
        if n < 64 and c != 10:
            continue
        key = ((acc1 + acc2 * 0x61) & 0xFFFFFFFF) % _HASHBASE
        out[key] = out.get(key, 0) + n
        n = acc1 = acc2 = 0
    return out


def _count_dir_renames(renames: Mapping[str, str], side: _SideChanges) -> dict[str, dict[str, int]]:
    """Votes old directory -> {new directory: files}, as git's update_dir_rename_counts()."""
    counts: dict[str, dict[str, int]] = {}
    for src, dst in renames.items():
        old, new, first = src, dst, True
        while True:
            old, _, old_part = old.rpartition("/")
            new, _, new_part = new.rpartition("/")
            if old not in side.removed_dirs:
                break
            if not first and old_part != new_part:
                break
            relevance = side.dir_relevance(old)
            if relevance == _RELEVANT_FOR_SELF or first:
                bucket = counts.setdefault(old, {})
                bucket[new] = bucket.get(new, 0) + 1
            first = False
            if relevance == _NOT_RELEVANT or not old or not new:
                break
    return counts


def _best_targets(counts: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    """For each directory, where most of its renamed files went (git's dir_rename_guess)."""
    return {old: max(sorted(targets), key=lambda d: targets[d]) for old, targets in counts.items()}


def _type_name(mode: int) -> str:
    return _TYPE_NAMES.get(mode & _TYPE_MASK, f"mode {mode:o}")


def _tree_id(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Oid:
    """Accept a commit id where a tree id is expected."""
    obj = repo[oid]
    if isinstance(obj, pygit2.Commit):
        return obj.tree_id
    if not isinstance(obj, pygit2.Tree):
        raise ValueError(f"{oid} is neither a tree nor a commit")
    return oid


@dataclass
class _Content:
    """The outcome of merge-ort's handle_content_merge() for one path."""

    entry: _Entry
    found: list[tuple[ConflictKind, str]]
    text_conflict: bool = False  # the contents conflict as text (markers can be shown)
    base_blob: pygit2.Oid | None = None  # the base of the text merge (None: two-way)


class _Merger:
    """One merge: the fast recursive walk, and the rename-aware pass when renames may matter."""

    def __init__(
        self,
        repo: pygit2.Repository,
        trees: _Trees,
        rules: Sequence[MergeRule],
        labels: tuple[str, str, str],
        detect_renames: bool,
    ) -> None:
        self.repo = repo
        self.trees = trees
        self.rules = [(PathSet(tuple(r.paths)), r.strategy) for r in rules]
        self.labels = labels  # (ours, base, theirs)
        self.detect_renames = detect_renames
        self.conflicts: list[Conflict] = []
        self.resolved: list[tuple[str, RuleStrategy]] = []
        # Set when a rename could change the outcome (merge-ort's "relevant" renames).
        self.rename_hint = False
        self._binary: dict[pygit2.Oid, bool] = {}
        self._spans: dict[pygit2.Oid, dict[int, int]] = {}

    # -- the fast path ----------------------------------------------------------------------

    def merge_dir(
        self,
        prefix: str,
        b: pygit2.Oid | None,
        o: pygit2.Oid | None,
        t: pygit2.Oid | None,
        removed: int,
    ) -> pygit2.Oid | None:
        """Merge three versions of the directory at `prefix` ("" or ending in "/").

        `removed`: the sides that deleted this directory (or one above it) from the base.
        """
        be, oe, te = self.trees.entries(b), self.trees.entries(o), self.trees.entries(t)
        changes: dict[bytes, _Entry | None] = {}
        for name in be.keys() | oe.keys() | te.keys():
            bn, on, tn = be.get(name), oe.get(name), te.get(name)
            if on == tn:
                # Both sides made the same change. A file deleted on both may still be one
                # side's rename source (git: rename/delete), so let the rename pass look.
                if bn != on and bn is not None and (bn[1] == _TREE or on is None or _is_tree(on)):
                    self.rename_hint = True
                continue
            if bn == tn:
                if removed & _THEIRS and bn is None and not _is_tree(on):
                    self.rename_hint = True  # a file added to a directory theirs removed
                continue
            if bn == on:
                if removed & _OURS and bn is None and not _is_tree(tn):
                    self.rename_hint = True
                changes[name] = tn
                continue
            merged = self.merge_entry(_join(prefix, name), bn, on, tn, removed)
            if merged != on:
                changes[name] = merged
        if not changes:
            return o
        entries = dict(oe)
        for name, entry in changes.items():
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
        return self.trees.write(entries) if entries else None

    def merge_entry(
        self, path: str, bn: _Entry | None, on: _Entry | None, tn: _Entry | None, removed: int
    ) -> _Entry | None:
        """Merge one name that all three sides disagree on; files and directories separately."""
        bf, bd = _split(bn)
        of, od = _split(on)
        tf, td = _split(tn)
        rd: pygit2.Oid | None = None
        if bd is not None or od is not None or td is not None:
            if od == td:
                rd = od
                if bd is not None:
                    self.rename_hint = True
            elif bd == td:
                rd = od
            elif bd == od:
                rd = td
            else:
                if bd is not None:
                    removed |= (_OURS if od is None else 0) | (_THEIRS if td is None else 0)
                rd = self.merge_dir(path + "/", bd, od, td, removed)
        rf: _Entry | None = None
        if bf is not None or of is not None or tf is not None:
            if of == tf:
                rf = of
                if bf is not None and of is None:
                    self.rename_hint = True
            elif bf == tf:
                rf = of
                if bf is None and removed & _THEIRS:
                    self.rename_hint = True
            elif bf == of:
                rf = tf
                if bf is None and removed & _OURS:
                    self.rename_hint = True
            else:
                if of is None or tf is None:
                    self.rename_hint = True  # modify/delete: the deletion may be a rename
                rf = self.merge_file(path, bf, of, tf)
        if rd is not None and rf is not None:
            self.file_directory(path)
        if rd is not None:
            return (rd, _TREE)
        return rf

    def file_directory(self, path: str) -> None:
        self.conflict(
            path,
            ConflictKind.FILE_DIRECTORY,
            f"CONFLICT (file/directory): directory in the way of {path}",
        )

    # -- files ------------------------------------------------------------------------------

    def merge_file(
        self,
        path: str,
        b: _Entry | None,
        o: _Entry | None,
        t: _Entry | None,
        names: tuple[str, str, str] | None = None,
        forced: bool = False,
    ) -> _Entry | None:
        """Merge one non-directory path (merge-ort's process_entry()); record conflicts.

        `forced`: the path is already conflicted by a rename; compute the best-effort result
        and leave the reporting to the caller.
        """
        if not forced:
            if o == t:
                return o
            if b == o:
                return t
            if b == t:
                return o
        found: list[tuple[ConflictKind, str]] = []
        content: _Content | None = None
        ours, _, theirs = self.labels
        result: _Entry | None
        if o is not None and t is not None:
            if o[1] & _TYPE_MASK != t[1] & _TYPE_MASK:
                result = o
                found.append(
                    (
                        ConflictKind.MODE,
                        f"CONFLICT (distinct types): {path} is a {_type_name(o[1])} in "
                        f"{ours} and a {_type_name(t[1])} in {theirs}",
                    )
                )
            else:
                content = self.content(path, b, o, t, names)
                result, found = content.entry, content.found
        elif o is None and t is None:
            result = None
        else:
            result = o if o is not None else t
            deleted, modified = (ours, theirs) if o is None else (theirs, ours)
            found.append(
                (
                    ConflictKind.MODIFY_DELETE,
                    f"CONFLICT (modify/delete): {path} deleted in {deleted} and modified in "
                    f"{modified}; version {modified} of {path} left in tree",
                )
            )
        if forced or not found:
            return result
        strategy = self.rule_for(path)
        if strategy is RuleStrategy.OURS or strategy is RuleStrategy.THEIRS:
            self.resolved.append((path, strategy))
            return o if strategy is RuleStrategy.OURS else t
        text_sides = None
        if content is not None and content.text_conflict and o is not None and t is not None:
            text_sides = (content.base_blob, o[0], t[0])
        if strategy is RuleStrategy.UNION and text_sides is not None and len(found) == 1:
            # Union settles conflicting lines, never a mode or type disagreement as well.
            data, _ = self.merge_blobs(*text_sides, favor=_FAVOR_UNION)
            self.resolved.append((path, strategy))
            return (self.repo.create_blob(data), result[1] if result else _BLOB)
        for kind, message in found:
            text = None
            if text_sides is not None and kind in (ConflictKind.CONTENT, ConflictKind.ADD_ADD):
                text = self.conflict_text(*text_sides, names)
            self.conflict(path, kind, message, text)
        return result

    def content(
        self,
        path: str,
        b: _Entry | None,
        o: _Entry,
        t: _Entry,
        names: tuple[str, str, str] | None,
    ) -> _Content:
        """merge-ort's handle_content_merge(): merge modes and contents of same-type entries."""
        ours, _, theirs = self.labels
        found: list[tuple[ConflictKind, str]] = []
        bmode = b[1] if b is not None else 0
        if o[1] in (t[1], bmode):
            mode = t[1]
        else:
            mode = o[1]
            if t[1] != bmode:
                found.append(
                    (
                        ConflictKind.MODE,
                        f"CONFLICT (mode): {path} has mode {o[1]:o} in {ours} and "
                        f"{t[1]:o} in {theirs}",
                    )
                )
        boid = b[0] if b is not None else None
        if o[0] in (t[0], boid):
            return _Content((t[0], mode), found)
        if t[0] == boid:
            return _Content((o[0], mode), found)
        ftype = o[1] & _TYPE_MASK
        if ftype == _GITLINK:
            found.append(
                (
                    ConflictKind.SUBMODULE,
                    f"CONFLICT (submodule): {path} points to different commits in {ours} and "
                    f"{theirs}",
                )
            )
            return _Content((o[0], mode), found)
        if ftype == _LINK:
            found.append(
                (
                    ConflictKind.CONTENT,
                    f"CONFLICT (symlink): {path} points to different targets in {ours} and "
                    f"{theirs}",
                )
            )
            return _Content((o[0], mode), found)
        base_blob = boid if b is not None and _is_regular(b) else None  # else: two-way merge
        if any(self.is_binary(x) for x in (base_blob, o[0], t[0]) if x is not None):
            found.append(
                (
                    ConflictKind.BINARY,
                    f"CONFLICT (binary): cannot merge binary files {path} ({ours} vs. {theirs})",
                )
            )
            return _Content((o[0], mode), found)
        try:
            data, clean = self.merge_blobs(base_blob, o[0], t[0])
        except pygit2.GitError:  # e.g. larger than xdiff handles: git treats it as binary
            found.append((ConflictKind.BINARY, f"CONFLICT (binary): cannot merge {path} as text"))
            return _Content((o[0], mode), found)
        entry = (self.repo.create_blob(data), mode)
        if clean:
            return _Content(entry, found)
        kind, reason = (
            (ConflictKind.ADD_ADD, "add/add") if b is None else (ConflictKind.CONTENT, "content")
        )
        found.insert(0, (kind, f"CONFLICT ({reason}): Merge conflict in {path}"))
        return _Content(entry, found, text_conflict=True, base_blob=base_blob)

    def is_binary(self, oid: pygit2.Oid) -> bool:
        found = self._binary.get(oid)
        if found is None:
            blob = self.repo[oid]
            data = blob.data if isinstance(blob, pygit2.Blob) else b""
            found = self._binary[oid] = b"\0" in data[:_BINARY_PROBE]
        return found

    def merge_blobs(
        self,
        base: pygit2.Oid | None,
        ours: pygit2.Oid,
        theirs: pygit2.Oid,
        *,
        favor: int = _FAVOR_NORMAL,
        diff3: bool = False,
        labels: tuple[str, str, str] | None = None,
    ) -> tuple[bytes, bool]:
        """libgit2's xdiff merge (git's own, level ZEALOUS) of three blobs, as bytes.

        pygit2's merge_file_from_index() decodes the result as UTF-8 and takes no options, so
        this calls git_merge_file_from_index() through pygit2's cffi binding.
        """
        keep: list[Any] = []

        def entry(oid: pygit2.Oid | None) -> Any:
            if oid is None:
                return ffi.NULL
            centry = ffi.new("git_index_entry *")
            ffi.buffer(ffi.addressof(centry, "id"))[:] = oid.raw
            centry.mode = _BLOB
            cpath = ffi.new("char[]", b"file")
            centry.path = cpath
            keep.extend((centry, cpath))
            return centry

        opts = ffi.new("git_merge_file_options *")
        opts.version = 1
        opts.favor = favor
        opts.flags = _STYLE_DIFF3 if diff3 else 0
        if labels is not None:
            cours, cbase, ctheirs = (
                ffi.new("char[]", s.encode("utf-8", "replace")) for s in labels
            )
            keep.extend((cours, cbase, ctheirs))
            opts.our_label, opts.ancestor_label, opts.their_label = cours, cbase, ctheirs
        out = ffi.new("git_merge_file_result *")
        repo_ptr = getattr(self.repo, "_repo")  # noqa: B009 - pygit2's own cffi handle
        err = C.git_merge_file_from_index(
            out, repo_ptr, entry(base), entry(ours), entry(theirs), opts
        )
        if err < 0:
            raise pygit2.GitError(f"git_merge_file_from_index failed ({err})")
        try:
            data = bytes(ffi.buffer(out.ptr, out.len)) if out.len else b""
            return data, bool(out.automergeable)
        finally:
            C.git_merge_file_result_free(out)

    def conflict_text(
        self,
        base: pygit2.Oid | None,
        ours: pygit2.Oid,
        theirs: pygit2.Oid,
        names: tuple[str, str, str] | None,
    ) -> str:
        """diff3-style conflict markers for a text conflict, labelled like git merge-ort."""
        lo, lb, lt = self.labels
        if names is not None and len(set(names)) > 1:
            lb, lo, lt = f"{lb}:{names[0]}", f"{lo}:{names[1]}", f"{lt}:{names[2]}"
        data, _ = self.merge_blobs(base, ours, theirs, diff3=True, labels=(lo, lb, lt))
        if base is None:
            # libgit2 leaves the label off an empty base section; git merge-file keeps it.
            marker = b"||||||| " + lb.encode("utf-8", "replace")
            data = _EMPTY_BASE_MARKER.sub(lambda m: marker + m[1] + m[2], data)
        return data.decode("utf-8", "replace")

    def rule_for(self, path: str) -> RuleStrategy | None:
        for pathset, strategy in self.rules:
            if pathset.matches(path):
                return strategy
        return None

    def conflict(
        self, path: str, kind: ConflictKind, message: str, text: str | None = None
    ) -> None:
        self.conflicts.append(Conflict(path, kind, message, text))

    # -- renames ----------------------------------------------------------------------------

    def merge_with_renames(
        self, base: pygit2.Oid | None, ours: pygit2.Oid, theirs: pygit2.Oid
    ) -> pygit2.Oid | bool | None:
        """Merge path by path with merge-ort's rename handling.

        Returns False when no rename touches the result (the fast walk's answer stands).
        """
        sides = {_OURS: _SideChanges(), _THEIRS: _SideChanges()}
        self.trees.diff(base, ours, "", sides[_OURS])
        self.trees.diff(base, theirs, "", sides[_THEIRS])
        sides[_OURS].consider(sides[_THEIRS])
        sides[_THEIRS].consider(sides[_OURS])
        renames = {x: self.find_renames(sides[x]) for x in (_OURS, _THEIRS)}
        if not renames[_OURS] and not renames[_THEIRS]:
            return False

        stages: dict[str, list[_Entry | None]] = {}
        for x in (_OURS, _THEIRS):
            for path, (old, _) in sides[x].changes.items():
                stages.setdefault(path, [old, old, old])
        for x in (_OURS, _THEIRS):
            for path, (_, new) in sides[x].changes.items():
                stages[path][x] = new
        ours_before = {p: s[_OURS] for p, s in stages.items()}
        names: dict[str, list[str]] = {}
        forced: set[str] = set()
        gone: set[str] = set()

        dir_renames = {x: self.directory_renames(x, sides, renames[x]) for x in (_OURS, _THEIRS)}
        for d in dir_renames[_OURS].keys() & dir_renames[_THEIRS].keys():
            del dir_renames[_OURS][d], dir_renames[_THEIRS][d]
        for x in (_OURS, _THEIRS):
            self.directory_rename_conflicts(x, sides, dir_renames, forced)

        combined = sorted(
            ((src, x, dst) for x in (_OURS, _THEIRS) for src, dst in renames[x].items()),
            key=lambda r: (r[0], r[1]),
        )
        i = 0
        while i < len(combined):
            src, x, dst = combined[i]
            if i + 1 < len(combined) and combined[i + 1][0] == src:
                other = combined[i + 1][2]
                if dst == other:  # both sides renamed it the same way
                    stages[dst][0] = stages[src][0]
                    names[dst] = [src, dst, dst]
                    gone.add(src)
                else:
                    forced.update((src, dst, other))
                    self.conflict(
                        src,
                        ConflictKind.RENAME,
                        f"CONFLICT (rename/rename): {src} renamed to {dst} in "
                        f"{self.labels[0]} and to {other} in {self.labels[2]}",
                    )
                i += 2
                continue
            i += 1
            self.apply_rename(src, dst, x, stages, names, forced, gone)

        results: dict[str, _Entry | None] = {}
        for path in sorted(stages):
            if path in gone:
                results[path] = None
                continue
            b, o, t = stages[path]
            label_names = names.get(path)
            results[path] = self.merge_file(
                path,
                b,
                o,
                t,
                (label_names[0], label_names[1], label_names[2]) if label_names else None,
                forced=path in forced,
            )
        changes = {p: r for p, r in results.items() if r != ours_before[p]}
        return self.trees.apply(ours, changes, on_collision=self)

    def apply_rename(
        self,
        src: str,
        dst: str,
        x: int,
        stages: dict[str, list[_Entry | None]],
        names: dict[str, list[str]],
        forced: set[str],
        gone: set[str],
    ) -> None:
        """One side's rename src -> dst, as merge-ort's process_renames() handles it."""
        y = 3 - x
        old, new = stages[src], stages[dst]
        source_deleted = old[y] is None
        collision = new[y] is not None
        type_changed = not source_deleted and _is_regular(old[y]) != _is_regular(new[x])
        if type_changed and collision:
            collision = False
        label = self.labels[0] if x == _OURS else self.labels[2]
        other = self.labels[2] if x == _OURS else self.labels[0]
        if collision and not source_deleted:
            # rename/add: merge the renamed content first; the result then meets the add.
            a, b = (new[x], old[y]) if x == _OURS else (old[y], new[x])
            if a is not None and b is not None and a[1] & _TYPE_MASK == b[1] & _TYPE_MASK:
                new[x] = self.content(dst, old[0], a, b, None).entry
        elif collision:
            forced.add(dst)
            self.conflict(
                dst,
                ConflictKind.RENAME,
                f"CONFLICT (rename/delete): {src} renamed to {dst} in {label}, but deleted "
                f"in {other}",
            )
        else:
            new[0] = old[0]
            path_names = [src, src, src]
            path_names[x] = dst
            names[dst] = path_names
            if type_changed:
                old[0] = None
            elif source_deleted:
                forced.add(dst)
                self.conflict(
                    dst,
                    ConflictKind.RENAME,
                    f"CONFLICT (rename/delete): {src} renamed to {dst} in {label}, but "
                    f"deleted in {other}",
                )
            else:
                new[y] = old[y]
        if not type_changed:
            gone.add(src)

    def find_renames(self, side: _SideChanges) -> dict[str, str]:
        """Pair this side's deletions with its additions as git's diffcore-rename does for ort.

        Exact renames (same blob) over all sources, preferring the same basename; then, for the
        relevant sources only, files with the same unique basename at 75% similarity, then the
        best remaining pairs at 50%. Empty files are never sources or targets (rename_empty=0).
        """
        if not side.relevant:
            return {}
        deleted = {p: e for p, e in side.deleted.items() if e[0] != _EMPTY_BLOB}
        added = {p: e for p, e in side.added.items() if e[0] != _EMPTY_BLOB}
        if not deleted or not added:
            return {}
        by_blob: dict[pygit2.Oid, list[str]] = {}
        for path in sorted(deleted):
            by_blob.setdefault(deleted[path][0], []).append(path)
        renames: dict[str, str] = {}
        targets: set[str] = set()
        for dst in sorted(added):
            entry = added[dst]
            best, best_score = None, 0
            for src in by_blob.get(entry[0], ()):
                source = deleted[src]
                if src in renames:
                    continue
                if not (_is_regular(source) and _is_regular(entry)) and source[1] != entry[1]:
                    continue
                score = 1 + (_basename(src) == _basename(dst))
                if score > best_score:
                    best, best_score = src, score
                    if score == 2:
                        break
            if best is not None:
                renames[best] = dst
                targets.add(dst)
        sources = [p for p in sorted(deleted) if p in side.relevant and p not in renames]
        dests = [p for p in sorted(added) if p not in targets]
        if not sources or not dests:
            return renames

        def record(src: str, dst: str) -> None:
            renames[src] = dst
            targets.add(dst)

        # Same basename: unique on both sides, or placed where the directory's exact renames
        # went (git's dir_rename_guess).
        src_names = _unique_basenames(sources)
        dst_names = _unique_basenames(dests)
        guess = _best_targets(_count_dir_renames(renames, side))
        remaining = set(dests)
        for src in sources:
            name = _basename(src)
            if name not in dst_names:
                continue
            match = dst_names[name]
            if src_names[name] is None or match is None:
                target_dir = guess.get(_dirname(src))
                match = f"{target_dir}/{name}" if target_dir is not None else None
            if match is None or match not in remaining or match in targets:
                continue
            score = self.similarity(deleted[src], added[match], _MIN_BASENAME_SCORE)
            if score >= _MIN_BASENAME_SCORE:
                record(src, match)
        sources = [p for p in sources if p not in renames]
        dests = [p for p in dests if p not in targets]
        if not sources or not dests or len(sources) * len(dests) > _RENAME_LIMIT**2:
            return renames
        # The best four sources per destination, then the best pairs first (diffcore-rename).
        matrix: list[tuple[int, int, str, str]] = []
        for dst in dests:
            best_four: list[tuple[int, int, str, str]] = []
            for src in sources:
                score = self.similarity(deleted[src], added[dst], _MIN_SCORE)
                candidate = (score, int(_basename(src) == _basename(dst)), src, dst)
                if len(best_four) < _CANDIDATES_PER_DST:
                    best_four.append(candidate)
                    continue
                worst = min(range(len(best_four)), key=lambda i: best_four[i][:2])
                if best_four[worst][:2] < candidate[:2]:
                    best_four[worst] = candidate
            matrix.extend(best_four)
        matrix.sort(key=lambda c: (-c[0], -c[1]))  # stable, like git's STABLE_QSORT
        for score, _, src, dst in matrix:
            if score < _MIN_SCORE:
                break
            if dst not in targets and src not in renames:
                record(src, dst)
        return renames

    def similarity(self, src: _Entry, dst: _Entry, minimum: int) -> int:
        """git's estimate_similarity(): the share of dst (0..60000) copied from src."""
        if not _is_regular(src) or not _is_regular(dst):
            return 0
        a, b = self.blob(src[0]), self.blob(dst[0])
        longest, shortest = max(len(a), len(b)), min(len(a), len(b))
        if not longest or longest * (_MAX_SCORE - minimum) < (longest - shortest) * _MAX_SCORE:
            return 0
        sa, sb = self.spans(src[0], a), self.spans(dst[0], b)
        copied = sum(min(n, sb.get(h, 0)) for h, n in sa.items())
        return int(copied * _MAX_SCORE / longest)

    def blob(self, oid: pygit2.Oid) -> bytes:
        blob = self.repo[oid]
        return blob.data if isinstance(blob, pygit2.Blob) else b""

    def spans(self, oid: pygit2.Oid, data: bytes) -> dict[int, int]:
        found = self._spans.get(oid)
        if found is None:
            found = self._spans[oid] = _spanhash(data)
        return found

    def directory_renames(
        self, x: int, sides: dict[int, _SideChanges], renames: dict[str, str]
    ) -> dict[str, str]:
        """Directories side x renamed (merge-ort: majority vote over the files moved out).

        Only removed directories that the other side added files into take part; a tie is a
        "directory rename split" conflict.
        """
        side = sides[x]
        if not side.self_dirs:
            return {}
        out: dict[str, str] = {}
        for old, targets in sorted(_count_dir_renames(renames, side).items()):
            if not side.dir_relevance(old):
                continue
            best = max(targets.values())
            winners = [d for d, n in targets.items() if n == best]
            if len(winners) == 1:
                out[old] = winners[0]
            else:
                self.conflict(
                    old,
                    ConflictKind.RENAME,
                    f"CONFLICT (directory rename split): unclear where to rename {old} to; it "
                    f"was renamed to multiple other directories, with no majority",
                )
        return out

    def directory_rename_conflicts(
        self,
        x: int,
        sides: dict[int, _SideChanges],
        dir_renames: dict[int, dict[str, str]],
        forced: set[str],
    ) -> None:
        """Files the other side added inside a directory side x renamed.

        git (merge.directoryRenames=conflict) moves them along but reports a conflict.
        """
        renamed = dir_renames[x]
        if not renamed:
            return
        y = 3 - x
        side, other = sides[x], sides[y]
        new_only = other.added_dirs - side.added_dirs
        for path in sorted(other.added):
            parents = _parents(path)
            if not other.relevant and new_only:
                # merge-ort does not walk a directory only the other side has (unless it needs
                # renames there), so adds inside one are not seen, except below a directory
                # where this side's directory renames are already being worked out.
                top = next((d for d in reversed(parents) if d in new_only), None)
                if top is not None and not side.dir_relevance(_dirname(top)):
                    continue
            for d in parents:
                if d in renamed:
                    target = renamed[d]
                    if target in dir_renames[y]:
                        break
                    where = target + path[len(d) :]
                    forced.add(path)
                    self.conflict(
                        path,
                        ConflictKind.RENAME,
                        f"CONFLICT (file location): {path} added in "
                        f"{self.labels[2 if x == _OURS else 0]} inside a directory that was "
                        f"renamed in {self.labels[0 if x == _OURS else 2]}, suggesting it "
                        f"should perhaps be moved to {where}",
                    )
                    break


def merge_trees(
    repo: pygit2.Repository,
    base: pygit2.Oid | None,
    ours: pygit2.Oid,
    theirs: pygit2.Oid,
    *,
    rules: Sequence[MergeRule] = (),
    labels: tuple[str, str, str] = ("ours", "base", "theirs"),
    detect_renames: bool = True,
) -> MergeResult:
    """Three-way merge of trees (commit ids are accepted too) without an index or worktree.

    Equal subtrees are never read; files are content-merged only when both sides changed them.
    `labels` name (ours, base, theirs) in messages and conflict markers. A clean result's tree
    equals `git merge-tree --write-tree`'s; rules settle the conflicts on the paths they name.
    """
    b = _tree_id(repo, base) if base is not None else None
    o, t = _tree_id(repo, ours), _tree_id(repo, theirs)
    if o == t or b == t:
        return MergeResult(o)
    if b == o:
        return MergeResult(t)
    trees = _Trees(repo)
    merger = _Merger(repo, trees, rules, labels, detect_renames)
    tree = merger.merge_dir("", b, o, t, 0)
    if detect_renames and merger.rename_hint:
        again = _Merger(repo, trees, rules, labels, detect_renames)
        result = again.merge_with_renames(b, o, t)
        if result is not False:
            merger = again
            tree = result if isinstance(result, pygit2.Oid) else None
    conflicts = tuple(sorted(merger.conflicts, key=lambda c: (c.path, c.kind.value)))
    resolved = tuple(sorted(merger.resolved, key=lambda r: r[0]))
    if conflicts:
        return MergeResult(None, conflicts, resolved)
    return MergeResult(tree if tree is not None else trees.write({}), (), resolved)


def changed_paths(repo: pygit2.Repository, a: pygit2.Oid | None, b: pygit2.Oid) -> list[str]:
    """The sorted file paths that differ between two trees, skipping subtrees equal by id."""
    side = _SideChanges()
    _Trees(repo).diff(_tree_id(repo, a) if a is not None else None, _tree_id(repo, b), "", side)
    return sorted(side.changes)


def update_tree(
    repo: pygit2.Repository,
    tree: pygit2.Oid | None,
    changes: Mapping[str, tuple[bytes, int] | None],
    *,
    writer: TreeWriter | None = None,
) -> pygit2.Oid:
    """`tree` with files written or deleted (None), rebuilding only the trees on their paths.

    Used to put ticket status files into a merge result. A written path replaces whatever is
    there (a file or a directory); deleting a missing path does nothing. The trees are
    written by libgit2's tree builder (`writer`: one that keeps its builders between calls).
    """
    entries: dict[str, _Entry | None] = {}
    for path, change in changes.items():
        parts = path.split("/")
        if "\0" in path or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
            raise ValueError(f"invalid path {path!r}")
        if change is None:
            entries[path] = None
            continue
        data, mode = change
        if mode not in _FILE_MODES:
            raise ValueError(f"invalid file mode {mode:o} for {path!r}")
        entries[path] = (repo.create_blob(data), int(mode))
    start = _tree_id(repo, tree) if tree is not None else None
    trees = _Trees(repo)
    try:
        result = (writer or TreeWriter(repo)).update(start, entries)
    except UnicodeEncodeError:  # a name that is not UTF-8: the builder takes only text
        result = trees.apply(start, entries)
    return result if result is not None else trees.write({})
