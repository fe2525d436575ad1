"""`worktree.setup` in a slot: running it once, and remembering what it left (its ignored
output, such as `node_modules/`, is kept across resets; everything else goes)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitexec.gitutil import scrubbed_env


class SetupError(Exception):
    """A slot cannot be made ready: `worktree.setup` failed (the message names the command
    and log), or the slot could not be rebuilt (the message names what is in the way)."""


@dataclass(frozen=True)
class SetupOutput:
    """The ignored files and directories `worktree.setup` left in a slot (kept across
    resets), and the directories above them."""

    files: frozenset[str] = frozenset()
    dirs: frozenset[str] = frozenset()
    parents: frozenset[str] = frozenset()

    @classmethod
    def of(cls, listing: Iterable[str]) -> SetupOutput:
        """From `git ls-files --ignored` style entries (directories end with `/`)."""
        entries = list(listing)
        dirs = frozenset(p.rstrip("/") for p in entries if p.endswith("/"))
        files = frozenset(p for p in entries if not p.endswith("/"))
        parents = {p.rsplit("/", i)[0] for p in dirs | files for i in range(1, p.count("/") + 1)}
        return cls(files, dirs, frozenset(parents))

    def keeps(self, rel: str, is_dir: bool) -> bool:
        """Whether `rel` (a directory or not) is setup output, inside it, or holds some.

        Setup output an agent replaced by something else (a directory by a symlink, say)
        is not setup output any more.
        """
        if rel in self.files:
            return not is_dir
        if rel in self.dirs or rel in self.parents:
            return is_dir
        while True:
            rel, sep, _ = rel.rpartition("/")
            if not sep:
                return False
            if rel in self.dirs:
                return True


NOTHING_KEPT = SetupOutput()


def setup_output(setup: Sequence[str], marker: Path, listing: Path) -> SetupOutput | None:
    """What `setup` left in a slot, as recorded when it ran (nothing without setup); None
    when it has not run there (or other commands did)."""
    if not setup:
        return NOTHING_KEPT
    try:
        recorded = marker.read_text(encoding="utf-8").strip()
        entries = listing.read_bytes()
    except OSError:
        return None
    if recorded != _digest(setup):
        return None
    return SetupOutput.of(os.fsdecode(p) for p in entries.split(b"\0") if p)


def save_setup_output(
    setup: Sequence[str], ignored: Sequence[str], marker: Path, listing: Path
) -> None:
    listing.write_bytes(b"\0".join(os.fsencode(p) for p in ignored))
    marker.write_text(_digest(setup) + "\n", encoding="utf-8")


def run_setup(
    setup: Sequence[str], cwd: Path, env: Mapping[str, str] | None, log_path: Path, name: str
) -> None:
    """Run the `worktree.setup` commands; SetupError names the one that failed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        for command in setup:
            log.write(f"$ {command}\n".encode())
            log.flush()
            proc = subprocess.run(
                ["sh", "-c", command],
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=scrubbed_env(env),
                check=False,
            )
            if proc.returncode != 0:
                raise SetupError(
                    f"worktree setup command {command!r} exited {proc.returncode} in "
                    f"{name} (log: {log_path})"
                )


def _digest(setup: Sequence[str]) -> str:
    return hashlib.sha256("\0".join(setup).encode()).hexdigest()
