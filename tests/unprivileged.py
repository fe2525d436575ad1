"""Running gitexec where file permissions hold: as root (who ignores them) via `nobody`.

`chmod 000` stops nobody but root, so tests about unreadable directories build their
repository in a directory `nobody` owns and run the CLI as that user when the suite runs
as root. As any other user, they run as that user.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

NOBODY = 65534
_AS_ROOT = os.geteuid() == 0


def _open_to_all(path: Path) -> bool:
    """Whether any user can reach and run `path` (every directory above it searchable)."""
    try:
        if not path.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def _readable_by_all(path: Path) -> bool:
    """Whether any user can read `path` (every directory above it searchable)."""
    try:
        if not path.stat().st_mode & stat.S_IROTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
    except OSError:
        return False


def _interpreter() -> tuple[str, dict[str, str]]:
    """A Python the unprivileged user can run, and the environment that finds gitexec."""
    if not _AS_ROOT:
        return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.executable).resolve(), Path("/usr/bin") / version):
        if _open_to_all(candidate):
            paths = [str(_source_root()), *site.getsitepackages()]
            return str(candidate), {"PYTHONPATH": os.pathsep.join(paths)}
    pytest.skip(f"no {version} that an unprivileged user can run")


@functools.cache
def _source_root() -> Path:
    """Where the unprivileged user imports gitexec and the tests from: this checkout, or,
    when it sits in a directory other users cannot enter (a fresh clone in a private
    temporary directory, as CI makes), a copy of what they need that every user can read."""
    import gitexec

    root = Path(gitexec.__file__).resolve().parent.parent
    if _readable_by_all(root / "gitexec" / "__init__.py") and _readable_by_all(
        root / "tests" / "__init__.py"
    ):
        return root
    copy = Path(tempfile.mkdtemp(prefix="gitexec-src-"))
    atexit.register(shutil.rmtree, copy, True)
    for name in ("gitexec", "templates", "tests"):
        if (root / name).is_dir():
            shutil.copytree(root / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, _, filenames in os.walk(copy):
        Path(dirpath).chmod(0o755)  # readable by the unprivileged user: that is the point
        for name in filenames:
            (Path(dirpath) / name).chmod(0o644)
    return copy


def _restore(root: Path) -> None:
    """Give the owner rwx on every directory again, so the tree can be removed."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, os.lstat(path).st_mode | stat.S_IRWXU)


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """A directory the CLI (see `cli`) can use and chmod in, with a home directory inside."""
    path = Path(tempfile.mkdtemp(prefix="gitexec-perm-"))
    path.chmod(0o755)
    home = path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        Path(os.environ["GIT_CONFIG_GLOBAL"]).read_text(encoding="utf-8"), encoding="utf-8"
    )
    if _AS_ROOT:
        # The tests' own git (as root) works on repositories `nobody` owns.
        with open(os.environ["GIT_CONFIG_GLOBAL"], "a", encoding="utf-8") as f:
            f.write("[safe]\n\tdirectory = *\n")
    try:
        yield path
    finally:
        if not _AS_ROOT:
            _restore(path)
        shutil.rmtree(path, ignore_errors=True)


def hand_over(root: Path) -> None:
    """Make everything under `root` the CLI user's (a no-op unless running as root)."""
    if not _AS_ROOT:
        return
    os.chown(root, NOBODY, NOBODY)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY, follow_symlinks=False)


def cli(
    box: Path, repo: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m gitexec -C repo args...` as the sandbox's user, with its home and cache."""
    return python(box, "-m", "gitexec", "-C", str(repo), *args, env=env)


def python(
    box: Path, *args: str, env: Mapping[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python args...` as the sandbox's user, with its home and cache; gitexec and the
    tests package are importable (to run test code where permissions hold)."""
    home = box / "home"
    full = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        **(env or {}),
    }
    interpreter, extra = _interpreter()
    full.update(extra)
    tests_root = str(_source_root())
    full["PYTHONPATH"] = os.pathsep.join(p for p in (tests_root, full.get("PYTHONPATH")) if p)
    hand_over(box)
    return subprocess.run(
        [interpreter, *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=timeout_s,
        check=False,
        cwd=box,
        user=NOBODY if _AS_ROOT else None,
        group=NOBODY if _AS_ROOT else None,
        extra_groups=[] if _AS_ROOT else None,
    )
