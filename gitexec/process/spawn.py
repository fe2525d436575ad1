"""Starting a command in its own session and cgroup, and saying plainly why it could not start
(not found, not executable, a missing #! interpreter, arguments too long)."""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from gitexec.gitutil import scrubbed_env
from gitexec.process.cgroups import _Cgroup
from gitexec.process.values import PROCESS_VAR, Limits


def _arg_limit() -> int | None:
    """Linux's limit on one argument or environment string (MAX_ARG_STRLEN)."""
    if not sys.platform.startswith("linux"):
        return None
    return 32 * os.sysconf("SC_PAGE_SIZE")


def _is_file(path: Path) -> bool:
    """A regular file we can see (a PATH directory we may not enter hides nothing)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _cannot_run(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str | None:
    """Why exec would refuse `argv`, found before starting anything (what execvp would say)."""
    if not argv:
        return "empty command"
    too_big = _too_big(argv, env)
    if too_big is not None:
        return too_big
    program = argv[0]
    if "/" in program:
        candidates = [cwd / program]
    else:
        candidates = [cwd / d / program for d in os.get_exec_path(dict(env))]
    found = [c for c in candidates if _is_file(c)]
    if not found:
        return f"command not found: {program}"
    runnable = next((c for c in found if os.access(c, os.X_OK)), None)
    if runnable is None:
        return f"permission denied: {program}"
    try:
        with runnable.open("rb") as f:
            first = f.read(256)
    except OSError:
        return None
    if first.startswith(b"#!"):
        interpreter = first[2:].split(b"\n", 1)[0].strip().split(b" ", 1)[0]
        if interpreter and not os.path.exists(interpreter):
            return f"cannot run {program!r}: its interpreter (the #! line) was not found"
    return None


def _start_error(exc: Exception, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    """What to tell the user when starting a command failed."""
    program = argv[0]
    if not isinstance(exc, OSError):
        return f"cannot start {program!r}: {exc}"
    reason = exc.strerror or str(exc)
    if exc.filename is not None and os.fspath(exc.filename) == os.fspath(cwd):
        return f"cannot start {program!r} in {cwd}: {reason}"
    if exc.errno == errno.E2BIG:
        return _too_big(argv, env, always=True) or f"cannot start {program!r}: {reason}"
    return _cannot_run(argv, cwd, env) or f"cannot start {program!r}: {reason}"


def _too_big(argv: Sequence[str], env: Mapping[str, str], *, always: bool = False) -> str | None:
    """Why exec would refuse `argv` with E2BIG (an argument over Linux's per-argument limit,
    or arguments and environment over ARG_MAX); `always`: it did, say so anyway."""
    limit = _arg_limit()
    sizes = [len(a.encode("utf-8", "surrogateescape")) for a in argv]
    longest = max(range(len(sizes)), key=sizes.__getitem__)
    if limit is not None and sizes[longest] >= limit:
        return (
            f"argument {longest} is too long ({sizes[longest]} bytes; E2BIG: the limit "
            f"is {limit} bytes per argument): pass a long prompt with `stdin: prompt` "
            "or `{{ prompt_file }}`"
        )
    total = sum(sizes) + sum(len(k) + len(v) + 2 for k, v in env.items())
    pointers = 8 * (len(argv) + len(env) + 2)
    if always or total + len(argv) + pointers > os.sysconf("SC_ARG_MAX"):
        return f"arguments and environment too large for {argv[0]!r} ({total} bytes; E2BIG)"
    return None


# In a cgroup, the command starts under a shell that waits, already in the cgroup, for its
# command line on stdin (each word quoted by shlex.quote, then a line holding a token of
# this launch alone), and then execs it: not one of the command's descendants can start
# outside. Moving a process into a cgroup waits for the kernel (an RCU grace period: 11 ms
# median inside a busy run, 0.2 ms alone), so the shell can be started early, while the
# agent's worktree is being reset. Should the supervisor die before the token line, the
# shell reads end-of-file and exits without running anything. (A pre-exec hook would also
# do, but makes subprocess fork the whole engine instead of vfork: 70 ms a command at 300 MB.)
_SHIM = """cmd=
while IFS= read -r line; do
  [ "$line" = "$2" ] && break
  cmd="$cmd$line
"
done
[ "$line" = "$2" ] || exit 125
[ "$3" = stdin ] || exec </dev/null
cd -- "$1" || exit 126
eval "exec $cmd"
"""


class Launch:
    """A command's start, begun before its command line is known: its environment, its
    cgroup with `limits` applied, and there a shell waiting for the command (`start`). All
    but the environment is made on a thread of its own, while the caller gets on."""

    def __init__(
        self, cwd: Path, env: Mapping[str, str], limits: Limits | None, with_stdin: bool
    ) -> None:
        self.cwd = cwd
        self.with_stdin = with_stdin
        self.token = uuid.uuid4().hex
        self.env = scrubbed_env({**env, PROCESS_VAR: self.token})
        self.warnings: list[str] = []
        self.cgroup: _Cgroup | None = None
        self._wants_limits = limits is not None and (
            limits.memory is not None or limits.cpu is not None
        )
        self._end = uuid.uuid4().hex
        self._shell: subprocess.Popen[bytes] | None = None
        self._joined = False
        self._done = False
        self._making = threading.Thread(target=self._make, args=(limits,), name="gitexec-launch")
        self._making.start()

    def _make(self, limits: Limits | None) -> None:
        """The cgroup, then the shell in it (moving a process there is what waits)."""
        self.cgroup, why = _Cgroup.create(self.token)
        if limits is not None and self._wants_limits:
            if self.cgroup is None:
                self.warnings.append(f"limits not enforced: {why}")
            else:
                self.warnings.extend(self.cgroup.limit(limits))
        if self.cgroup is None:
            return
        mode = "stdin" if self.with_stdin else "none"
        shell = ["/bin/sh", "-c", _SHIM, "gitexec", str(self.cwd), self._end, mode]
        try:
            # The worktree may be rebuilt meanwhile: the shell enters it last.
            self._shell = self._popen(shell, Path("/"), subprocess.PIPE)
        except (OSError, ValueError, subprocess.SubprocessError):
            return  # the command starts without the shell, and so without the cgroup
        with contextlib.suppress(OSError):
            (self.cgroup.path / "cgroup.procs").write_text(str(self._shell.pid))
            self._joined = True

    def start(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Run `argv`: in the waiting shell when it joined the cgroup, else directly (then
        with no cgroup: `cgroup` is None). Raises what starting it raised (then `abandon`)."""
        assert not self._done, "a launch starts one command"
        self._making.join()
        shell = self._shell
        if shell is not None and self._joined:
            assert shell.stdin is not None
            if not os.path.isdir(self.cwd):  # what Popen would say; the shell only enters it
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self.cwd))
            words = " ".join(shlex.quote(arg) for arg in argv)
            if "\0" in words:
                raise ValueError("embedded null byte")
            shell.stdin.write(os.fsencode(f"{words}\n{self._end}\n"))
            shell.stdin.flush()
            self._done = True
            if not self.with_stdin:
                shell.stdin.close()
                shell.stdin = None
            return shell
        self._end_shell()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
            if self._wants_limits:
                self.warnings.append("limits not enforced: could not join the cgroup")
        proc = self._popen(
            argv, self.cwd, subprocess.PIPE if self.with_stdin else subprocess.DEVNULL
        )
        self._done = True
        return proc

    def _popen(self, argv: Sequence[str], cwd: Path, stdin: int) -> subprocess.Popen[bytes]:
        """`argv` in its own session, output and errors on one pipe."""
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=self.env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def abandon(self) -> None:
        """Undo a launch whose command did not start (nothing happens after `start`)."""
        if self._done:
            return
        self._done = True
        self._making.join()
        self._end_shell()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def _end_shell(self) -> None:
        """The waiting shell reads end-of-file and exits without running anything."""
        shell, self._shell = self._shell, None
        if shell is None:
            return
        for pipe in (shell.stdin, shell.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a command line it never read
                    pipe.close()
        try:
            shell.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stopped by someone: it must not keep us
            shell.kill()
            shell.wait()
