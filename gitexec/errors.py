"""The user-facing error type and the one top-level handler that maps errors to exit codes."""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, cast

# Exit codes: 0 all done / clean, 1 some ticket did not complete / problems found,
# 2 usage or configuration error, 3 internal error (a bug), 130 interrupted.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input, usage or configuration: shown as one clear message, exit 2, no traceback."""

    exit_code = EXIT_USAGE


class CommandError(Exception):
    """A subprocess (usually git) failed: carries the command, exit code and output."""

    def __init__(self, cmd: tuple[str, ...], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(self._describe())

    def _describe(self) -> str:
        lines = [f"command: {' '.join(self.cmd)}", f"return code: {self.returncode}"]
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = text.strip()
            if text:
                lines.append(f"{name}:")
                lines.extend(f"    {line}" for line in text.splitlines())
        return "\n".join(lines)


def log_dir() -> Path:
    """Where bug reports go: $XDG_CACHE_HOME/gitexec or ~/.cache/gitexec."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gitexec"


def _versions() -> list[str]:
    import importlib.metadata  # only here: 30 ms of every command's start-up otherwise

    from gitexec import __version__

    lines = [
        f"gitexec: {__version__}",
        f"python: {sys.version.split()[0]} ({sys.executable})",
        f"platform: {platform.platform()}",
    ]
    for dist in ("pygit2", "ruamel.yaml", "jinja2", "junit-xml", "rich"):
        try:
            lines.append(f"{dist}: {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(f"{dist}: not installed")
    lines.append(f"git: {_git_version()}")
    return lines


def _git_version() -> str:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return out.stdout.strip()


def write_bug_report(exc: BaseException, argv: list[str]) -> Path:
    """Write a bug report with versions and the traceback; return its path."""
    directory = log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gitexec.log"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report = [
        "### gitexec bug report",
        "",
        f"date: {stamp}",
        f"argv: {' '.join(argv)}",
        f"cwd: {os.getcwd()}",
        *_versions(),
        "",
        "```",
        *"".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines(),
        "```",
        "",
    ]
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(report))
    return path


# What the machine refused, not what gitexec got wrong: a clear error, never a bug report.
_REFUSALS = {
    errno.EACCES: ("cannot access", "permission denied"),
    errno.EPERM: ("cannot access", "operation not permitted"),
    errno.EROFS: ("cannot write", "the file system is read-only"),
    errno.ENOSPC: ("cannot write", "no space left on the device"),
    errno.EDQUOT: ("cannot write", "disk quota exceeded"),
}
_REFUSAL_TEXTS = ("Permission denied", "Read-only file system", "No space left on device")


def refusal(exc: OSError) -> str | None:
    """A message for a file operation the system refused (permissions, a read-only or full
    file system), naming the file; None for any other error."""
    if exc.errno in _REFUSALS:
        verb, why = _REFUSALS[exc.errno]
        where = f" {exc.filename}" if exc.filename is not None else ""
        return f"{verb}{where}: {why}"
    text = str(exc)
    if exc.errno is None and any(t in text for t in _REFUSAL_TEXTS):
        return text  # pygit2 (libgit2) says which file in its message
    return None


def run_guarded(command: Callable[[], int], argv: list[str]) -> int:
    """Run a command, mapping escaping exceptions to exit codes (see EXIT_*)."""
    try:
        return command()
    except UserError as exc:
        print(f"gitexec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gitexec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early by a pager or `head`: not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        message = refusal(exc)
        if message is None:
            return _internal_error(exc, argv)
        print(f"gitexec: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        return _internal_error(exc, argv)


def _internal_error(exc: Exception, argv: list[str]) -> int:
    try:
        where = str(write_bug_report(exc, argv))
    except OSError as log_exc:
        where = f"(could not write a bug report: {log_exc})"
    print(
        f"gitexec: internal error: {type(exc).__name__}: {exc}\n"
        f"gitexec: this is a bug; a report with versions was written to {where}",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


class PipeSafe:
    """A text stream that goes quiet once its reader has gone (`run | head`): output is a
    courtesy to the reader, never a reason for a run to stop or change its exit code."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._went_away()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._went_away()

    def _went_away(self) -> None:
        self.gone = True
        # Whatever is still buffered, or written at exit, goes nowhere instead of failing.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return self._stream.encoding

    @property
    def errors(self) -> str | None:
        return self._stream.errors


@contextlib.contextmanager
def tolerant_output() -> Iterator[None]:
    """stdout and stderr that survive their reader going away, while a command runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, PipeSafe(sys.stdout))
    sys.stderr = cast(TextIO, PipeSafe(sys.stderr))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
