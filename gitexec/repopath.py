"""Files a repository's config names for gitexec to read (prompt and report templates).

They are repository-relative: not absolute, no `..`, no symbolic link on the way (git
stores a link, not what it points to, and a link could lead to `/proc/self/environ`),
and a regular file (a FIFO would block, a device never end). One function resolves
them for `check`, for the engine and for reports.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from gitexec.errors import UserError

MAX_TEMPLATE_BYTES = 4 << 20


class RepositoryPathError(UserError):
    """A configured path that is not a regular file inside the repository."""


def path_problem(rel: str) -> str | None:
    """What is wrong with a repository-relative path on its face, or None."""
    if not rel.strip():
        return "must not be empty"
    if "\0" in rel or "\n" in rel:
        return f"{rel!r} contains a control character"
    if rel.startswith(("/", "~", "\\")) or re.match(r"[A-Za-z]:[\\/]", rel):
        return f"{rel!r} is not repository-relative (an absolute path)"
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return f"{rel!r} must not contain '..': it would leave the repository"
    return None


def repository_file(root: Path, rel: str) -> Path:
    """`root / rel` when it is a regular file inside the repository at `root`, reached
    without a symbolic link; RepositoryPathError says why not."""
    problem = path_problem(rel)
    if problem is not None:
        raise RepositoryPathError(problem)
    current = root
    for part in PurePosixPath(rel).parts:
        current = current / part
        try:
            st = current.lstat()
        except FileNotFoundError:
            raise RepositoryPathError(f"{rel!r} does not exist in the repository") from None
        except OSError as exc:
            raise RepositoryPathError(f"{rel!r}: {exc.strerror or exc}") from None
        if stat.S_ISLNK(st.st_mode):
            inner = "" if current == root / rel else f" ({current.relative_to(root)})"
            raise RepositoryPathError(
                f"{rel!r} goes through a symbolic link{inner}: gitexec reads only regular "
                "files in the repository here"
            )
    if not stat.S_ISREG(st.st_mode):
        raise RepositoryPathError(f"{rel!r} is not a regular file")
    return current


def read_repository_file(root: Path | None, path: Path, what: str) -> str:
    """The text of a configured file: `path` relative to the repository at `root`, or
    (without a root) a path that must at least be a regular file and not a link."""
    if root is not None:
        rel = path.as_posix()
        if path.is_absolute():
            if not path.is_relative_to(root):
                raise RepositoryPathError(f"{what}: {rel!r} is not inside the repository")
            rel = path.relative_to(root).as_posix()
        try:
            path = repository_file(root, rel)
        except RepositoryPathError as exc:
            raise RepositoryPathError(f"{what}: {exc}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        reason = "a symbolic link" if os.path.islink(path) else exc.strerror or str(exc)
        raise RepositoryPathError(f"{what}: {path}: {reason}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise RepositoryPathError(f"{what}: {path} is not a regular file")
        data = f.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise RepositoryPathError(f"{what}: {path} is larger than {MAX_TEMPLATE_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RepositoryPathError(f"{what}: {path} is not valid UTF-8") from None
