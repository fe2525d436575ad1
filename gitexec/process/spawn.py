"""Starting a command in its own session and cgroup, and saying plainly why it could not start
(not found, not executable, a missing #! interpreter, arguments too long)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from gitexec.process.cgroups import _Cgroup


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
        return f"arguments and environment too large for {program!r} ({total} bytes; E2BIG)"
    return _cannot_run(argv, cwd, env) or f"cannot start {program!r}: {reason}"


# In a cgroup, the command starts under a shell that waits for one line on stdin before
# exec: the supervisor moves the shell into the cgroup first, so not one of the command's
# descendants can start outside. Should the supervisor die before that line, the shell reads
# end-of-file and exits without running anything. (A pre-exec hook would also do, but makes
# subprocess fork the whole engine instead of vfork: 70 ms a command at 300 MB.)
_SHIM = 'read -r go || exit 125; exec "$@"'
_SHIM_NO_STDIN = 'read -r go || exit 125; exec "$@" </dev/null'


def _spawn(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    with_stdin: bool,
    cgroup: _Cgroup | None,
) -> tuple[subprocess.Popen[bytes], _Cgroup | None]:
    """Start `argv` in its own session, inside `cgroup` from its first instruction; the
    cgroup it is in (None if it could not join)."""
    command = list(argv)
    if cgroup is not None:
        command = ["/bin/sh", "-c", _SHIM if with_stdin else _SHIM_NO_STDIN, "gitexec", *argv]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if with_stdin or cgroup is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if cgroup is None:
        return proc, None
    assert proc.stdin is not None
    joined = False
    try:
        (cgroup.path / "cgroup.procs").write_text(str(proc.pid))
        joined = True
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):  # it may be gone already (EPIPE)
            os.write(proc.stdin.fileno(), b"\n")
        if not with_stdin:
            proc.stdin.close()
            proc.stdin = None
    return proc, cgroup if joined else None
