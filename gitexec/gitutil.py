"""The one place that runs git as a subprocess: explicit cwd, scrubbed environment, clear errors."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gitexec.errors import CommandError, UserError

if TYPE_CHECKING:
    import pygit2

# Inherited GIT_* variables that describe *where* a repository is (hooks export GIT_DIR,
# GIT_INDEX_FILE, ...) would point every git we run at the caller's repository. Keep only
# the ones that describe transport, configuration and identity.
_KEEP_GIT_ENV = frozenset(
    {
        "GIT_EXEC_PATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSL_CAINFO",
        "GIT_SSL_NO_VERIFY",
        "GIT_HTTP_PROXY_AUTHMETHOD",
        "GIT_ALLOW_PROTOCOL",
        "GIT_ASKPASS",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_SYSTEM",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_PARAMETERS",  # `git -c k=v exec ...` reaches us (and our git) this way
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "GIT_TERMINAL_PROMPT",
        "GIT_EDITOR",
        "GIT_TRACE",
        "GIT_TRACE2",
        "GIT_TRACE2_EVENT",
        "GIT_TRACE2_PERF",
    }
)


# Git options for commands gitexec runs in its own worktrees: the user's hooks (and the
# fsmonitor hook) are theirs to run in their checkouts, not in ours, where their output
# would land in whichever ticket next commits. `-c` reaches only that one git, so an agent
# running git itself still gets the user's settings.
NO_HOOKS = ("-c", f"core.hooksPath={os.devnull}", "-c", "core.fsmonitor=false")


def scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without GIT_* variables that select a repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GIT_")
        or k in _KEEP_GIT_ENV
        or k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
    }
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    input: str | bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `git args...` in `cwd`; raise CommandError with its output when it fails."""
    cmd = ("git", *args)
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        input=data,
        capture_output=True,
        env=scrubbed_env(env),
        check=False,
    )
    out = proc.stdout.decode("utf-8", "surrogateescape")
    err = proc.stderr.decode("utf-8", "surrogateescape")
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def git_for_effect(args: Sequence[str | bytes], cwd: Path) -> None:
    """Run git for what it does alone (no input, output not kept); CommandError with what
    it printed on stderr when it fails. One pipe, so nothing polls while it runs."""
    cmd = ("git", *args)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=scrubbed_env(),
        check=False,
    )
    if proc.returncode != 0:
        shown = tuple(os.fsdecode(a) for a in cmd)
        raise CommandError(shown, proc.returncode, "", proc.stderr.decode("utf-8", "replace"))


def git(args: Sequence[str], cwd: Path, **kwargs: object) -> str:
    """Run git and return its stdout."""
    return run_git(args, cwd, **kwargs).stdout  # type: ignore[arg-type]


@dataclass(frozen=True)
class RepoPaths:
    """Where a repository lives: its work tree (None when bare), git dir and common dir."""

    toplevel: Path | None
    git_dir: Path
    common_dir: Path
    shallow: bool

    @property
    def root(self) -> Path:
        """The work tree, or the git dir of a bare repository."""
        return self.toplevel if self.toplevel is not None else self.git_dir

    @property
    def state_dir(self) -> Path:
        """Everything gitexec keeps: `<common>/gitexec`."""
        return self.common_dir / "gitexec"


def find_repo(start: Path) -> RepoPaths:
    """Locate the repository containing `start`, or raise a UserError saying there is none."""
    proc = run_git(
        [
            "rev-parse",
            "--path-format=absolute",
            "--is-bare-repository",
            "--is-shallow-repository",
            "--git-dir",
            "--git-common-dir",
            "--show-toplevel",
        ],
        start,
        check=False,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 and len(lines) < 4:
        raise UserError(f"not a git repository: {start} (run `git init` first)")
    bare, shallow, git_dir, common_dir = lines[:4]
    toplevel = Path(lines[4]) if len(lines) > 4 and bare != "true" else None
    return RepoPaths(
        toplevel=toplevel,
        git_dir=Path(git_dir),
        common_dir=Path(common_dir),
        shallow=shallow == "true",
    )


def read_gitexec_config(cwd: Path) -> dict[str, str]:
    """`git config gitexec.*` as a mapping (pygit2 would miss `git -c` settings)."""
    proc = run_git(["config", "--null", "--get-regexp", r"^gitexec\."], cwd, check=False)
    if proc.returncode not in (0, 1):  # 1: no such key
        raise CommandError(proc.args, proc.returncode, proc.stdout, proc.stderr)
    found: dict[str, str] = {}
    for entry in proc.stdout.split("\0"):
        if entry:
            key, _, value = entry.partition("\n")
            found[key.lower()] = value
    return found


@dataclass(frozen=True)
class Identity:
    """Who engine commits are by: git's configured identity, or a stand-in when unset."""

    name: str
    email: str
    fixed_time: tuple[int, int] | None  # (epoch, offset minutes) when GIT_*_DATE pins it

    def signature(self) -> pygit2.Signature:
        """A signature for a commit made now (or at the pinned time)."""
        import pygit2

        if self.fixed_time is not None:
            stamp, offset = self.fixed_time
            return pygit2.Signature(self.name, self.email, stamp, offset)
        now = time.time()
        offset = time.localtime(now).tm_gmtoff // 60
        return pygit2.Signature(self.name, self.email, int(now), offset)

    def env(self) -> dict[str, str]:
        """The identity for git subprocesses (works without user.name configured)."""
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


def _parse_ident(line: str) -> tuple[str, str, int, int] | None:
    # "Name <email> 1700000000 +0100"
    try:
        head, stamp, tz = line.rsplit(" ", 2)
        name, _, rest = head.partition(" <")
        email = rest.rstrip(">")
        sign = -1 if tz.startswith("-") else 1
        offset = sign * (int(tz[1:3]) * 60 + int(tz[3:5]))
        return name, email, int(stamp), offset
    except ValueError:
        return None


def committer_identity(cwd: Path) -> Identity:
    proc = run_git(["var", "GIT_COMMITTER_IDENT"], cwd, check=False)
    parsed = _parse_ident(proc.stdout.strip()) if proc.returncode == 0 else None
    if parsed is None:
        return Identity("gitexec", "gitexec@localhost", None)
    name, email, stamp, offset = parsed
    pinned = "GIT_COMMITTER_DATE" in os.environ
    return Identity(name, email, (stamp, offset) if pinned else None)
