"""The inotify watcher reports every touched path, or admits it cannot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gitexec import watch

pytestmark = pytest.mark.skipif(not watch.available(), reason="inotify is Linux-only")


def tree(root: Path) -> None:
    for rel in ("a.txt", "src/x.py", "src/deep/y.py", "node_modules/pkg/index.js"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def test_reports_files_and_directories(tmp_path: Path) -> None:
    tree(tmp_path)
    w = watch.TreeWatcher(tmp_path, skip=frozenset({b"node_modules"}))
    (tmp_path / "a.txt").write_text("changed")
    (tmp_path / "src/deep/y.py").unlink()
    (tmp_path / "new/inner").mkdir(parents=True)
    (tmp_path / "new/inner/z.py").write_text("z")
    (tmp_path / "node_modules/pkg/index.js").write_text("ignored dir, not watched")
    os.rename(tmp_path / "src/x.py", tmp_path / "src/moved.py")
    result = w.take()
    assert result is not None
    files, dirs = result
    assert {b"a.txt", b"src/deep/y.py", b"src/x.py", b"src/moved.py"} <= files
    assert b"new" in dirs  # created before its watch existed: expanded by callers
    assert not any(f.startswith(b"node_modules") for f in files)
    # Events are consumed; the new directory is now watched too.
    (tmp_path / "new/inner/late.py").write_text("late")
    result = w.take()
    assert result is not None
    assert result[0] == {b"new/inner/late.py"}
    w.close()


def test_directory_removal_and_rename_are_directory_events(tmp_path: Path) -> None:
    tree(tmp_path)
    w = watch.TreeWatcher(tmp_path)
    shutil.rmtree(tmp_path / "src/deep")
    os.rename(tmp_path / "src", tmp_path / "lib")
    result = w.take()
    assert result is not None
    _, dirs = result
    assert b"src" in dirs and b"lib" in dirs
    w.close()


def test_overflow_is_reported_as_unknown(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    w = watch.TreeWatcher(tmp_path)
    target = tmp_path / "churn.txt"
    for i in range(limit + 10):
        target.write_text(str(i))
    assert w.take() is None
    assert w.problem == "inotify queue overflowed"
    w.close()
