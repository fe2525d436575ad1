"""Questions about what is on a slot's disk, asked without writing anything: `git status`
listings (read-only: never the index lock, so an agent working there is not disturbed),
the files below a directory, and symlinks that stand for the paths beyond them."""

from __future__ import annotations

import os
from pathlib import Path

from gitexec.gitutil import NO_HOOKS, git

ENGINE_DIR = ".gitexec"  # ticket files: the engine's to write, never collected
# Files whose change alters what git considers ignored or how it filters content.
_RULE_FILES = (".gitignore", ".gitattributes")


def is_rule_file(path: str) -> bool:
    return path.rsplit("/", 1)[-1] in _RULE_FILES


def engine_path(path: str) -> bool:
    return path == ENGINE_DIR or path.startswith(ENGINE_DIR + "/")


def disk_files(root: Path, rel: str) -> set[str]:
    """Files, symlinks and directories below directory `rel`; never through a symlink.

    Directories too: one git does not track goes as a whole, even when empty or when
    what is in it (an ignored file an agent made a directory of) goes."""
    found: set[str] = set()
    top = root / rel
    if symlink_above(root, rel) is not None or os.path.islink(top):
        return found
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        base = os.path.relpath(dirpath, root)
        for name in filenames:
            found.add(name if base == "." else f"{base}/{name}")
        for name in dirnames:
            found.add(name if base == "." else f"{base}/{name}")
    return found


def is_dir(root: Path, rel: str) -> bool:
    """A real directory (not a symlink to one)."""
    path = root / rel  # os.path: an unreadable parent is "no", not an error
    return os.path.isdir(path) and not os.path.islink(path)


def symlink_above(root: Path, rel: str) -> str | None:
    """The highest directory above `rel` that is now a symlink, if any.

    Git refuses paths beyond a symlink ("beyond a symbolic link"); the symlink stands for
    them, just as `git add -A` sees it.
    """
    parts = rel.split("/")
    for i in range(1, len(parts)):
        above = "/".join(parts[:i])
        if os.path.islink(root / above):
            return above
    return None


def status(root: Path, *options: str) -> list[tuple[str, str]]:
    """(status code, path) of `git status` in `root`."""
    listing = git(
        [*NO_HOOKS, "--no-optional-locks", "status", "--porcelain=v1", "-z", *options], root
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


def ignored(root: Path) -> list[str]:
    """Ignored paths, a directory as one entry (`dir/`) only when the directory itself is
    ignored: then nothing below it can be re-included (`!pattern`), so none of it is
    ever committed. `build/*` with `!build/keep.md` lists `build/`'s files instead."""
    return [
        path
        for code, path in status(root, "--ignored=matching", "--untracked-files=all")
        if code == "!!"
    ]
