"""The tree `git add -A` + `git write-tree` would make of the paths an agent touched, built
in process: blobs hashed from disk, HEAD's tree edited along the touched paths only.

Two git processes fewer per ticket, on the critical path of every hand-off. Only taken
when nothing could make git's answer differ: no attributes that could apply (no
`.gitattributes` in the directories above a path, no `info/attributes`, global or system
attributes file), no `core.autocrlf`, file modes and symlinks as on disk, no embedded
repositories or submodules, names that are UTF-8, only regular files, symlinks and
directories. Otherwise `NeedsGit`, and the slot asks git.
Untracked paths go in unless ignored (libgit2's ignore rules: `.gitignore` files,
`info/exclude`, `core.excludesFile`, negations, as git applies them).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

import pygit2

ATTRIBUTES = ".gitattributes"
# Settings under which it may not be either, or modes and links are not taken from disk
# (each with the values that are safe; unset is safe).
_TRUE = ("true", "yes", "on", "1")
_SAFE_SETTINGS = {
    "core.autocrlf": ("false", "no", "off", "0"),
    "core.filemode": _TRUE,
    "core.symlinks": _TRUE,
}
Change = tuple[pygit2.Oid, int] | None  # a blob and its mode, or None: the path goes


class NeedsGit(Exception):
    """Something here only git can decide exactly."""


def safe_settings(worktree: pygit2.Repository, common_dir: Path) -> bool:
    """Whether the repository's settings leave blobs, modes and links as on disk, and no
    attributes file outside the tree could change that."""
    config = worktree.config
    for key, safe in _SAFE_SETTINGS.items():
        try:
            value = str(config[key]).strip().lower()
        except KeyError:
            continue
        if value not in safe:
            return False
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    files = [common_dir / "info" / "attributes", Path(xdg) / "git" / "attributes"]
    files += [Path("/etc/gitattributes"), Path("/usr/local/etc/gitattributes")]
    with contextlib.suppress(KeyError):
        files.append(Path(os.path.expanduser(str(config["core.attributesFile"]))))
    return not any(os.path.exists(f) for f in files)


def _attributes_above(head: pygit2.Tree, path: str, seen: dict[str, bool]) -> bool:
    """Whether a `.gitattributes` in a directory above `path` could apply to it (the
    worktree's rule files are HEAD's: a touched one sends the whole commit to git)."""
    parts = path.split("/")[:-1]
    for i in range(len(parts) + 1):
        above = "/".join(parts[:i])
        found = seen.get(above)
        if found is None:
            rule = f"{above}/{ATTRIBUTES}" if above else ATTRIBUTES
            try:
                head[rule]
                found = True
            except KeyError:
                found = False
            seen[above] = found
        if found:
            return True
    return False


def changes_on_disk(
    worktree: pygit2.Repository,
    objects: pygit2.Repository,
    root: Path,
    head: pygit2.Tree,
    candidates: Iterable[str],
) -> dict[str, Change]:
    """What `git add -A -- <candidates>` would change in `head`'s tree."""
    changes: dict[str, Change] = {}
    checked_dirs: set[str] = set()
    attributes: dict[str, bool] = {}
    for path in candidates:
        entry = _entry(head, path)
        tracked = entry is not None and entry.filemode != pygit2.GIT_FILEMODE_TREE
        full = root / path
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            if tracked:
                changes[path] = None
            continue
        except OSError as exc:
            raise NeedsGit(f"{path}: {exc}") from None
        if stat.S_ISDIR(st.st_mode):
            if os.path.lexists(full / ".git"):
                raise NeedsGit(f"{path}: an embedded repository")
            if tracked:
                changes[path] = None  # a directory took the file's place: its files follow
            continue
        if not tracked:
            if worktree.path_is_ignored(path):
                continue
            _no_repository_above(root, head, path, checked_dirs)
        if _attributes_above(head, path, attributes):
            raise NeedsGit(f"{path}: attributes may apply")
        if stat.S_ISLNK(st.st_mode):
            changes[path] = (objects.create_blob(os.readlink(os.fsencode(full))), 0o120000)
        elif stat.S_ISREG(st.st_mode):
            mode = 0o100755 if st.st_mode & stat.S_IXUSR else 0o100644
            changes[path] = (objects.create_blob_fromdisk(str(full)), mode)
        else:
            raise NeedsGit(f"{path}: not a file, symlink or directory")
    return changes


def _entry(tree: pygit2.Tree, path: str) -> pygit2.Object | None:
    try:
        entry = tree[path]
    except KeyError:
        return None
    except (ValueError, UnicodeError):
        raise NeedsGit(f"{path!r}: not a name pygit2 can look up") from None
    if entry.filemode == pygit2.GIT_FILEMODE_COMMIT:
        raise NeedsGit(f"{path}: a submodule")
    return entry


def _no_repository_above(root: Path, head: pygit2.Tree, path: str, checked: set[str]) -> None:
    """An untracked file inside a new directory that is a repository of its own is a
    submodule to git: leave that to git."""
    parts = path.split("/")[:-1]
    for i in range(len(parts), 0, -1):
        above = "/".join(parts[:i])
        if above in checked:
            return
        checked.add(above)
        entry = _entry(head, above)
        if entry is not None:
            return  # directories git already tracks are not repositories of their own
        if os.path.lexists(root / above / ".git"):
            raise NeedsGit(f"{above}: an embedded repository")


def edit_tree(
    repo: pygit2.Repository, tree: pygit2.Tree | None, changes: Mapping[str, Change]
) -> pygit2.Oid | None:
    """`tree` with each path set to its blob or removed; subtrees left empty go (git has
    no empty directories). None when nothing is left."""
    direct: dict[str, Change] = {}
    nested: dict[str, dict[str, Change]] = {}
    for path, change in changes.items():
        name, sep, rest = path.partition("/")
        if sep:
            nested.setdefault(name, {})[rest] = change
        else:
            direct[name] = change
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    for name in direct.keys() | nested.keys():
        existing = tree[name] if tree is not None and name in tree else None
        change = direct.get(name)
        if change is not None:  # a file or symlink, in place of whatever was there
            builder.insert(name, change[0], change[1])
            continue
        below: pygit2.Oid | None = None
        if name in nested:
            sub = existing if isinstance(existing, pygit2.Tree) else None
            below = edit_tree(repo, sub, nested[name])
        if below is not None:
            builder.insert(name, below, pygit2.GIT_FILEMODE_TREE)
        elif existing is not None:
            builder.remove(name)
    if len(builder) == 0:
        return None
    return builder.write()


def _utf8(paths: Iterable[str]) -> None:
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise NeedsGit(f"{path!r}: not UTF-8") from None


def tree_after(
    worktree: pygit2.Repository,
    objects: pygit2.Repository,
    root: Path,
    head: pygit2.Tree,
    candidates: Iterable[str],
) -> pygit2.Oid:
    """HEAD's tree with what the agent did to `candidates` (raises NeedsGit)."""
    paths = list(candidates)
    _utf8(paths)
    changes = changes_on_disk(worktree, objects, root, head, paths)
    if not changes:
        return head.id
    tree = edit_tree(objects, head, changes)
    if tree is None:
        tree = objects.TreeBuilder().write()
    return tree
