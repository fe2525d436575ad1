"""The repository a command works on: where it is, its project, and resolved settings."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitexec.config import Config, resolve
from gitexec.errors import UserError
from gitexec.gitutil import RepoPaths, find_repo, read_gitexec_config
from gitexec.project import Project, load_project


@dataclass(frozen=True)
class Workspace:
    repo: RepoPaths
    cwd: Path  # where the command was started (`-C DIR` included): relative paths start here

    @classmethod
    def find(cls, start: Path) -> Workspace:
        repo = find_repo(start)
        if repo.toplevel is None:
            raise UserError(f"{repo.git_dir} is a bare repository; run gitexec in a work tree")
        return cls(repo, start.resolve())

    def relative(self, name: str) -> str:
        """A path given on the command line, relative to the repository root."""
        path = (self.cwd / name).resolve()
        try:
            return path.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return name

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

    @functools.cached_property
    def git_config(self) -> dict[str, str]:
        return read_gitexec_config(self.root)

    def settings(self, config: Config, flags: Mapping[str, Any] | None = None) -> Config:
        """Config with flag > GITEXEC_* > git config > config.yaml precedence applied."""
        return resolve(config, flags=flags, git_config=self.git_config)
