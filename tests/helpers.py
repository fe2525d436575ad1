"""Small helpers for building real, temporary git repositories in tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    """Run git in `cwd` and return stdout; fail the test with git's output on error."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, input=input, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write `files` (path -> content) under `root`, creating directories."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def init_repo(path: Path, files: Mapping[str, str | bytes] | None = None) -> Path:
    """Create a repository on branch `main` with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    write_files(path, files or {"README.md": "hello\n"})
    commit_all(path, "initial")
    return path


def commit_all(path: Path, message: str) -> str:
    """Stage everything and commit; return the new commit id."""
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD").strip()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until `predicate` holds; errors from a state not there yet count as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def until_file(path: object, poll_s: float = 0.02, limit_s: int = 300) -> str:
    """Shell that waits for `path` to exist: an agent held until the test lets it go. It
    gives up after `limit_s`, so a test that fails before letting go leaves no agent
    polling behind it."""
    rounds = int(limit_s / poll_s)
    return f"i=0; while [ ! -f {path} ] && [ $i -lt {rounds} ]; do sleep {poll_s}; i=$((i+1)); done"
