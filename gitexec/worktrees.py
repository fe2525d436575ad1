"""Linked worktrees on disk: where git keeps their records, recording where pools were
made, and removing worktrees whatever state an agent left them in."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

WORKTREES = "worktrees"  # under the state dir: slot bookkeeping (and older versions' pool)
POOLS = "pools"  # under WORKTREES: every directory a pool of this repository was made in


def records_dir(state_dir: Path) -> Path:
    return state_dir / WORKTREES / POOLS


def recorded_pool_dirs(state_dir: Path) -> list[Path]:
    try:
        data = records_dir(state_dir).read_bytes()
    except OSError:
        return []
    return [Path(os.fsdecode(p)) for p in data.split(b"\0") if p]


def record_pool_dir(state_dir: Path, root: Path) -> None:
    """Remember `root` so `clean` and recovery find it even after the settings change."""
    known = recorded_pool_dirs(state_dir)
    if root not in known:
        path = records_dir(state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0".join(os.fsencode(p) for p in [*known, root]))


def linked_gitdir(worktree: Path) -> Path | None:
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


def write_detached_head(gitdir: Path, commit: str) -> None:
    """Point a pool worktree's HEAD at `commit`, without a reflog (nothing reads a pool
    worktree's).

    A detached HEAD is rewritten in place, same length over same length: replacing a file
    by rename makes ext4 flush the new one at once (auto_da_alloc), 1.6 ms against 0.01 ms,
    and a torn HEAD would only get the slot rebuilt. Anything else takes git's lock
    protocol."""
    head, lock = gitdir / "HEAD", gitdir / "HEAD.lock"
    data = (commit + "\n").encode("ascii")
    if not os.path.lexists(lock):  # else git is writing it: taking the lock below fails
        with contextlib.suppress(OSError):
            fd = os.open(head, os.O_RDWR)
            try:
                old = os.pread(fd, len(data) + 1, 0)
                if len(old) == len(data) and not old.startswith(b"ref:"):
                    os.pwrite(fd, data, 0)
                    return
            finally:
                os.close(fd)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(lock, head)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        raise
