"""The repository a command works on: where it is, its project, and resolved settings."""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitexec.config import Config, resolve
from gitexec.errors import UserError
from gitexec.gitutil import RepoPaths, find_repo, read_gitexec_config
from gitexec.project import Project, load_project
from gitexec.refs import integration_ref, results_prefix

RUNS = "runs"  # <state>/runs/<run-id>: a run's journal, logs and control requests

SHA256_MESSAGE = (
    "this repository uses SHA-256 object names (extensions.objectformat = sha256), which "
    "the pygit2 here cannot read: gitexec works on SHA-1 repositories only"
)
_OBJECT_FORMAT = re.compile(
    r"^\s*\[\s*extensions\s*\][^\[]*?^\s*objectformat\s*=\s*\"?(\w+)",
    re.IGNORECASE | re.MULTILINE | re.DOTALL,
)


def object_format(common_dir: Path) -> str:
    """`sha1`, or what `extensions.objectformat` in the repository's config names."""
    try:
        text = (common_dir / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "sha1"
    m = _OBJECT_FORMAT.search(text)
    return m.group(1).lower() if m else "sha1"


def unwritable(path: Path) -> Path | None:
    """Where writing `path` would be refused: `path` itself when it exists, else the
    nearest directory above it (creating the rest there); None when it would not be."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    mode = os.W_OK | (os.X_OK if probe.is_dir() else 0)
    return None if os.access(probe, mode) else probe


def _why(path: Path) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "the file system is read-only"
    except OSError:
        pass
    return "permission denied"


@dataclass(frozen=True)
class Workspace:
    repo: RepoPaths
    cwd: Path  # where the command was started (`-C DIR` included): relative paths start here

    @classmethod
    def find(cls, start: Path) -> Workspace:
        repo = find_repo(start)
        if repo.toplevel is None:
            raise UserError(f"{repo.git_dir} is a bare repository; run gitexec in a work tree")
        if object_format(repo.common_dir) != "sha1":
            raise UserError(SHA256_MESSAGE)
        return cls(repo, start.resolve())

    def relative(self, name: str) -> str:
        """A path given on the command line, relative to the repository root."""
        path = (self.cwd / name).resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return name

    def shown(self, path: Path) -> str:
        """A path as a message shows it: relative to where the command started when it is
        below it (like git), else absolute."""
        try:
            return path.relative_to(self.cwd).as_posix()
        except ValueError:
            return str(path)

    @property
    def root(self) -> Path:
        return self.repo.root

    @property
    def state_dir(self) -> Path:
        return self.repo.state_dir

    @property
    def parse_cache(self) -> Path:
        """Parsed work-tree tickets, keyed by file stat (see cache.py)."""
        return self.state_dir / "cache" / "parse.pickle"

    def load(self, *, check_plan: bool = True, use_cache: bool = True) -> Project:
        cache = self.parse_cache if use_cache else None
        return load_project(self.root, cache_path=cache, check_plan=check_plan)

    # --- can we write where a run writes? ------------------------------------------------------

    def run_paths(self, run_id: str) -> list[Path]:
        """What a run (or its resume) writes: the engine lock, its journal, its branch, its
        result refs and their reflogs, and objects."""
        common = self.repo.common_dir
        return [
            self.state_dir / "lock",
            self.state_dir / RUNS / run_id / "journal.jsonl",
            common / integration_ref(run_id),
            common / results_prefix(run_id) / "x",
            common / "logs" / integration_ref(run_id),
            common / "objects",
        ]

    def require_writable(self, paths: Iterable[Path]) -> None:
        """Refuse, before anything is done, to start work whose state cannot be written:
        each path must be writable, or creatable in the nearest directory that exists."""
        for path in paths:
            blocked = unwritable(path)
            if blocked is not None:
                raise UserError(
                    f"cannot write {self.shown(blocked)}: {_why(blocked)}; gitexec keeps its "
                    "runs, lock and refs there. Make it writable (`chmod -R u+w "
                    f"{self.shown(blocked)}`), or run gitexec as the user who owns it"
                )

    def require_readable(self, path: Path) -> None:
        """Refuse to read state this user may not read (`path`, below the git directory),
        naming where, instead of failing on the first file that cannot be opened."""
        below = path.relative_to(self.repo.common_dir).parts
        probe = self.repo.common_dir
        for part in ("", *below):
            probe = probe / part if part else probe
            try:
                is_dir = stat.S_ISDIR(os.stat(probe).st_mode)
            except FileNotFoundError:
                return
            mode = (os.R_OK | os.X_OK if is_dir else os.R_OK) if probe == path else os.X_OK
            if not os.access(probe, mode):
                raise UserError(
                    f"cannot read {self.shown(probe)}: permission denied; gitexec keeps its "
                    "runs there. Make it readable, or run gitexec as the user who owns it"
                )

    @functools.cached_property
    def git_config(self) -> dict[str, str]:
        return read_gitexec_config(self.root)

    def settings(self, config: Config, flags: Mapping[str, Any] | None = None) -> Config:
        """Config with flag > GITEXEC_* > git config > config.yaml precedence applied."""
        return resolve(config, flags=flags, git_config=self.git_config)
