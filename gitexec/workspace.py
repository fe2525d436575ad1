"""The repository a command works on: where it is, its project, and resolved settings."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitexec.config import Config, resolve
from gitexec.errors import UserError
from gitexec.gitutil import RepoPaths, find_repo, read_gitexec_config
from gitexec.project import Project, load_project

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

    @functools.cached_property
    def git_config(self) -> dict[str, str]:
        return read_gitexec_config(self.root)

    def settings(self, config: Config, flags: Mapping[str, Any] | None = None) -> Config:
        """Config with flag > GITEXEC_* > git config > config.yaml precedence applied."""
        return resolve(config, flags=flags, git_config=self.git_config)
