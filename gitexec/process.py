"""Supervised processes: agents, validation commands and gates.

A command runs in its own session with a unique `GITEXEC_PROCESS` token in its environment
and, where Linux lets us create one, in a cgroup v2 of its own. When it exits, times out or
is cancelled, everything it started is killed: its process group, its cgroup, and every
process carrying its token (a double-forked daemon keeps its environment). Its output goes
through a pipe to a thread that redacts secrets and caps the log; its resource use is
sampled while it runs.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psutil

from gitexec.gitutil import scrubbed_env

KILL_GRACE_S = 5.0
DEFAULT_LOG_CAP = 50 * 1024 * 1024
SAMPLE_EVERY_S = 0.5
PROCESS_VAR = "GITEXEC_PROCESS"
RUN_VAR = "GITEXEC_RUN"
WORKTREE_VAR = "GITEXEC_WORKTREE"

_TICK_S = 0.05  # how often timeouts and cancel are checked
_READ_SIZE = 65536
_MAX_LINE = 1024 * 1024  # a line longer than this is redacted in pieces
_OVERLAP = 8192  # a secret on such a line is kept whole if it is shorter than this
_DRAIN_S = 2.0  # output still read after everything was killed
_SCAN_MAX_AGE_S = 0.4  # one /proc pass serves every supervisor sampling within this
_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits for one command: bytes of memory, CPU cores (cgroup v2 only)."""

    memory: int | None = None
    cpu: float | None = None


@dataclass(frozen=True)
class Sample:
    """Resource use of a command and everything it started, at one moment."""

    elapsed_s: float
    cpu_s: float  # user + system, cumulative
    cpu_percent: float  # since the previous sample; 100 = one core
    rss_mb: float
    peak_rss_mb: float
    processes: int


@dataclass(frozen=True)
class ProcessResult:
    """How a supervised command ended, and what it used."""

    exit_code: int
    timed_out: bool
    cancelled: bool
    duration_s: float
    start_error: str | None = None  # it never ran: why ("command not found: x")
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    leftovers: int = 0  # processes still running when it exited, then killed
    dropped_bytes: int = 0  # output left out of the log by the cap
    oom_killed: bool = False  # its memory limit was reached
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


@dataclass(frozen=True)
class MachineLoad:
    """Load average, usable cores and memory of this machine, for overcommit warnings."""

    load_1m: float
    load_5m: float
    load_15m: float
    cores: int
    memory_total_mb: float
    memory_available_mb: float

    def overcommitted(self) -> str | None:
        """What is overloaded right now, or None (the caller decides how long is too long)."""
        problems = []
        if self.load_1m > self.cores:
            problems.append(f"load {self.load_1m:.1f} on {self.cores} cores")
        if self.memory_available_mb < self.memory_total_mb / 10:
            problems.append(
                f"{self.memory_available_mb:.0f} MiB of {self.memory_total_mb:.0f} MiB "
                "memory available"
            )
        return "; ".join(problems) or None


def machine_load() -> MachineLoad:
    """This machine's load now."""
    load = os.getloadavg()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    memory = psutil.virtual_memory()
    return MachineLoad(
        load[0], load[1], load[2], cores, memory.total / _MiB, memory.available / _MiB
    )


# --- finding processes by their environment ----------------------------------------------


def _env_value(environ: bytes, prefix: bytes) -> bytes | None:
    """The value of `prefix` (b"NAME=") in a NUL-separated environment block."""
    if environ.startswith(prefix):
        start = len(prefix)
    else:
        at = environ.find(b"\0" + prefix)
        if at < 0:
            return None
        start = at + 1 + len(prefix)
    end = environ.find(b"\0", start)
    return environ[start:] if end < 0 else environ[start:end]


def _scan_environ(name: str) -> dict[str, list[int]]:
    """Every process whose environment sets `name`, by value (except this process)."""
    found: dict[str, list[int]] = {}
    me = os.getpid()
    if os.path.isdir("/proc"):
        prefix = f"{name}=".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    value = _env_value(f.read(), prefix)
            except OSError:  # gone, or not ours to read
                continue
            if value is not None:
                found.setdefault(value.decode("utf-8", "replace"), []).append(int(entry))
        return found
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            value_s = proc.environ().get(name)
            if value_s is not None and proc.pid != me:
                found.setdefault(value_s, []).append(proc.pid)
    return found


class _TokenIndex:
    """Processes by GITEXEC_PROCESS token: one /proc pass shared by every supervisor that
    samples within a short while (reading each process's environment is the costly part)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -1.0
        self._index: dict[str, list[int]] = {}

    def pids(self, token: str, *, fresh: bool = False) -> list[int]:
        if fresh:
            return _scan_environ(PROCESS_VAR).get(token, [])
        with self._lock:
            if time.monotonic() - self._at > _SCAN_MAX_AGE_S:
                self._index = _scan_environ(PROCESS_VAR)
                self._at = time.monotonic()
            return list(self._index.get(token, []))


_TOKENS = _TokenIndex()


def _protected() -> set[int]:
    """This process and its ancestors: never signalled, whatever their environment says."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def run_processes(run_id: str, *, within: Path | None = None) -> list[int]:
    """Live processes started for run `run_id` (GITEXEC_RUN in their environment); with
    `within`, only those whose GITEXEC_WORKTREE lies under it (run ids are per
    repository: another repository's run of the same name is not ours)."""
    protected = _protected()
    found = [p for p in _scan_environ(RUN_VAR).get(run_id, []) if p not in protected]
    if within is None:
        return sorted(found)
    prefix = f"{WORKTREE_VAR}={within}/".encode()
    return sorted(p for p in found if _environ_has(p, prefix))


def _environ_has(pid: int, entry_prefix: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return environ.startswith(entry_prefix) or b"\0" + entry_prefix in environ


def kill_run(run_id: str, grace_s: float = 2.0, *, within: Path | None = None) -> list[int]:
    """Kill what is left of run `run_id`'s processes (see run_processes for `within`): at
    the end of a run, and on resume (orphans of a killed engine). SIGTERM, then SIGKILL
    after `grace_s`; the pids found."""
    found = run_processes(run_id, within=within)
    if not found:
        return []
    _signal_each(found, signal.SIGTERM)
    _signal_each(found, signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
    deadline = time.monotonic() + grace_s
    left = found
    while left and time.monotonic() < deadline:
        time.sleep(_TICK_S)
        left = run_processes(run_id, within=within)
    for _ in range(50):  # a process forking while we kill: catch its children too
        if not left:
            break
        _signal_each(left, signal.SIGKILL)
        time.sleep(0.01)
        left = run_processes(run_id, within=within)
    return found


def _signal_each(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- cgroup v2 -----------------------------------------------------------------------------


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


@functools.lru_cache(maxsize=1)
def _cgroup_home() -> tuple[Path | None, str]:
    """This process's own cgroup v2 directory (children go under it), or why there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, "no cgroup v2 here"
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None or own.endswith(" (deleted)"):
        return None, "no cgroup v2 here"
    for line in mounts:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] != "cgroup2":
            continue
        fields = left.split()
        root, mount = _unescape_mount(fields[3]), _unescape_mount(fields[4])
        if root != "/":
            if own != root and not own.startswith(root + "/"):
                continue
            own = own[len(root) :]
        path = Path(mount) / own.lstrip("/")
        if (path / "cgroup.procs").is_file():
            _remove_stale_cgroups(path)
            return path, ""
    return None, "no cgroup v2 mounted here"


def _remove_stale_cgroups(home: Path) -> None:
    """Remove the empty cgroups that engines killed with SIGKILL left behind."""
    with contextlib.suppress(OSError):
        for child in home.iterdir():
            name = child.name.split("-")
            ours = len(name) == 3 and name[0] == "gitexec" and name[1].isdigit()
            if ours and not psutil.pid_exists(int(name[1])):
                with contextlib.suppress(OSError):
                    child.rmdir()  # fails while populated: kill_run handles those


class _Cgroup:
    """A cgroup v2 holding one command and everything it starts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, token: str) -> tuple[_Cgroup | None, str]:
        home, why = _cgroup_home()
        if home is None:
            return None, why
        path = home / f"gitexec-{os.getpid()}-{token[:12]}"
        try:
            path.mkdir()
        except OSError as exc:
            return None, f"cgroup v2 not writable here ({exc.strerror})"
        return cls(path), ""

    def limit(self, limits: Limits) -> list[str]:
        """Apply `limits`; a warning for each one that cannot be enforced."""
        warnings = []
        wanted = []
        if limits.memory is not None:
            wanted.append(("memory", "memory.max", str(limits.memory)))
        if limits.cpu is not None:
            wanted.append(("cpu", "cpu.max", f"{max(1000, round(limits.cpu * 100_000))} 100000"))
        for controller, name, value in wanted:
            if not (self.path / name).exists():
                # Only possible where the parent cgroup holds no process, or is the root.
                control = self.path.parent / "cgroup.subtree_control"
                with contextlib.suppress(OSError):
                    control.write_text(f"+{controller}")
            if not (self.path / name).exists():
                warnings.append(
                    f"{controller} limit not enforced: the cgroup v2 {controller} controller "
                    f"is not enabled for {self.path.parent}"
                )
                continue
            try:
                (self.path / name).write_text(value)
            except OSError as exc:
                warnings.append(f"{controller} limit not enforced: {name}: {exc.strerror}")
        return warnings

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """SIGKILL every member, atomically where the kernel has cgroup.kill (5.14+)."""
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            _signal_each(self.pids(), signal.SIGKILL)

    def cpu_s(self) -> float | None:
        try:
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def oom_killed(self) -> bool:
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value) > 0
        except (OSError, ValueError):
            pass
        return False

    def remove(self) -> None:
        """Remove the (emptied) cgroup; members killed a moment ago may still be exiting."""
        for _ in range(200):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
                self.kill()
                time.sleep(0.005)


# --- the process tree ----------------------------------------------------------------------


class _Tree:
    """A command and everything it started: its process group, its cgroup, its token."""

    def __init__(self, pid: int, token: str, cgroup: _Cgroup | None) -> None:
        self.pid = pid
        self.token = token
        self.cgroup = cgroup
        self.root_done = False

    def members(self, *, fresh: bool = False) -> set[int]:
        # The cgroup holds every descendant from the first instruction on; without one, the
        # token finds those that left the session (their environment went with them).
        if self.cgroup is not None:
            pids = set(self.cgroup.pids())
        else:
            pids = set(_TOKENS.pids(self.token, fresh=fresh))
        if not self.root_done:
            pids.add(self.pid)
            if not os.path.isdir("/proc"):
                with contextlib.suppress(psutil.Error):
                    pids.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))
        pids.discard(os.getpid())
        return pids

    def signal(self, sig: int, members: set[int] | None = None) -> None:
        """Send `sig` to every member."""
        if members is None:
            members = self.members(fresh=True)
        if sig == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        _signal_each(members, sig)
        if sig == signal.SIGTERM:  # a stopped process acts on SIGTERM only once continued
            _signal_each(members, signal.SIGCONT)

    def kill_all(self) -> int:
        """SIGKILL until nothing is left (a member may fork while we kill); how many."""
        killed: set[int] = set()
        for _ in range(100):
            left = self.members(fresh=True)
            if not left:
                break
            killed |= left
            self.signal(signal.SIGKILL, left)
            time.sleep(0.002)
        # A process stops showing its environment when it lets go of its memory, a moment
        # before it is dead: wait for that moment.
        deadline = time.monotonic() + 1.0
        while any(not _dead(p) for p in killed) and time.monotonic() < deadline:
            time.sleep(0.001)
        return len(killed)


def _dead(pid: int) -> bool:
    """Is `pid` gone, or a zombie?"""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


class _Meter:
    """Samples the CPU time and resident memory of a tree."""

    def __init__(self, tree: _Tree, start: float) -> None:
        self.tree = tree
        self.start = start
        self.cpu_s = 0.0
        self.peak_rss = 0
        self._last = (start, 0.0)

    def sample(self) -> Sample:
        cpu = 0.0
        rss = 0
        members = self.tree.members()
        count = 0
        for pid in members:
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
            count += 1
            # Children already reaped by a member moved their time into it.
            cpu += times.user + times.system + times.children_user + times.children_system
        if self.tree.cgroup is not None:
            cpu = max(cpu, self.tree.cgroup.cpu_s() or 0.0)
        now = time.monotonic()
        self.cpu_s = max(self.cpu_s, cpu)  # an escaped process reaped by init takes its time
        self.peak_rss = max(self.peak_rss, rss)
        last_at, last_cpu = self._last
        percent = 100 * (self.cpu_s - last_cpu) / (now - last_at) if now > last_at else 0.0
        self._last = (now, self.cpu_s)
        return Sample(
            elapsed_s=now - self.start,
            cpu_s=self.cpu_s,
            cpu_percent=percent,
            rss_mb=rss / _MiB,
            peak_rss_mb=self.peak_rss / _MiB,
            processes=count,
        )


# --- the log: redacted, capped ---------------------------------------------------------------


class _Redactor:
    """Applies `redact` to whole lines only, so a secret split across reads is still found.

    A line longer than _MAX_LINE is redacted in pieces, cut where cutting changes nothing
    (a secret shorter than _OVERLAP is never split).
    """

    def __init__(self, redact: Callable[[bytes], bytes]) -> None:
        self.redact = redact
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        out = []
        newline = buf.rfind(b"\n")
        if newline >= 0:
            out.append(self.redact(buf[: newline + 1]))
            buf = buf[newline + 1 :]
        while len(buf) > _MAX_LINE:
            cut = self._cut(buf)
            out.append(self.redact(buf[:cut]))
            buf = buf[cut:]
        self.pending = buf
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return self.redact(rest) if rest else b""

    def _cut(self, buf: bytes) -> int:
        """Where to cut a long line: a place that no secret spans."""
        space = max(buf.rfind(c, _MAX_LINE - _OVERLAP, _MAX_LINE) for c in (b" ", b"\t", b"\r"))
        candidates = [space + 1] if space > 0 else []
        candidates += [_MAX_LINE - k * _OVERLAP for k in range(_MAX_LINE // _OVERLAP - 1)]
        for cut in candidates:
            left, right = buf[max(0, cut - _OVERLAP) : cut], buf[cut : cut + _OVERLAP]
            if self.redact(left) + self.redact(right) == self.redact(left + right):
                return cut
        return _MAX_LINE


class _CappedLog:
    """Appends a command's output to its log, keeping at most `cap` bytes: the first and the
    last half, and a line saying how much was dropped between them."""

    def __init__(self, f: BinaryIO, cap: int | None) -> None:
        self.f = f
        self.cap = cap
        self.start = f.seek(0, os.SEEK_END)
        self.written = 0
        self.head = (cap or 0) - (cap or 0) // 2
        self.tail_max = (cap or 0) // 2
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.dropped = 0
        self.capped = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.cap is None or (not self.capped and self.written + len(data) <= self.cap):
            self.f.write(data)
            self.written += len(data)
            return
        if not self.capped:
            # Past the cap: the file keeps the head; what followed it becomes the tail.
            self.capped = True
            self.f.seek(self.start + self.head)
            moved = self.f.read()
            self.f.truncate(self.start + self.head)
            self._keep(moved)
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        self.tail.append(data)
        self.tail_len += len(data)
        while self.tail_len > self.tail_max:
            excess = self.tail_len - self.tail_max
            first = self.tail[0]
            if len(first) <= excess:
                self.tail.popleft()
                cut = len(first)
            else:
                self.tail[0] = first[excess:]
                cut = excess
            self.tail_len -= cut
            self.dropped += cut

    def close(self) -> int:
        """Write the tail after the marker; the number of bytes dropped."""
        if self.capped:
            tail = b"".join(self.tail)
            newline = tail.find(b"\n", 0, 4096)  # start the tail on a line of its own
            if newline >= 0:
                tail = tail[newline + 1 :]
                self.dropped += newline + 1
            self.f.write(
                f"\n[gitexec: {self.dropped} bytes of output dropped here; the log keeps the "
                f"first {_size(self.head)} and the last {_size(self.tail_max)} of each "
                f"command's output]\n".encode()
            )
            self.f.write(tail)
        return self.dropped


def _size(n: int) -> str:
    if n >= _MiB:
        return f"{n / _MiB:g} MiB"
    return f"{n / 1024:g} KiB" if n >= 1024 else f"{n} bytes"


class _Pump(threading.Thread):
    """Feeds the command's stdin and reads its output: to `on_output` as it comes, and to the
    log redacted and capped. Never blocks on a child that stops reading or writing."""

    def __init__(
        self,
        out_fd: int,
        in_fd: int | None,
        stdin: bytes,
        log: _CappedLog,
        redact: Callable[[bytes], bytes] | None,
        on_output: Callable[[bytes], None] | None,
    ) -> None:
        super().__init__(name="gitexec-output", daemon=True)
        self.out_fd = out_fd
        self.in_fd = in_fd
        self.stdin = memoryview(stdin)
        self.log = log
        self.redactor = _Redactor(redact) if redact is not None else None
        self.on_output = on_output
        self.warnings: list[str] = []
        self.abandoned = False
        self._log_failed = False
        self._stop_at: float | None = None
        self._lock = threading.Lock()

    def finish(self, drain_s: float) -> None:
        """The command is gone: stop feeding stdin, read what is left for up to `drain_s`."""
        with self._lock:
            self._stop_at = time.monotonic() + drain_s
        self.join()

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.out_fd, selectors.EVENT_READ)
            if self.in_fd is not None:
                if self.stdin:
                    os.set_blocking(self.in_fd, False)
                    sel.register(self.in_fd, selectors.EVENT_WRITE)
                else:
                    self._close_stdin(sel)
            while sel.get_map():
                with self._lock:
                    stop_at = self._stop_at
                if stop_at is not None:
                    if self.in_fd is not None:
                        self._close_stdin(sel)
                    if time.monotonic() >= stop_at:
                        self.abandoned = True
                        break
                for key, _ in sel.select(timeout=0.1):
                    if key.fd == self.out_fd:
                        self._read(sel)
                    else:
                        self._write(sel)
        finally:
            if self.in_fd is not None:
                self._close_stdin(sel)
            sel.close()
            os.close(self.out_fd)
            self._log(self.redactor.flush() if self.redactor else b"")

    def _read(self, sel: selectors.BaseSelector) -> None:
        try:
            data = os.read(self.out_fd, _READ_SIZE)
        except OSError:
            data = b""
        if not data:
            sel.unregister(self.out_fd)
            return
        if self.on_output is not None:
            try:
                self.on_output(data)
            except Exception as exc:
                self.on_output = None
                self.warnings.append(f"output callback failed: {exc!r}")
        self._log(self.redactor.feed(data) if self.redactor else data)

    def _log(self, data: bytes) -> None:
        if self._log_failed:
            return
        try:
            self.log.write(data)
        except OSError as exc:  # a full disk must not stall the command: keep reading
            self._log_failed = True
            self.warnings.append(f"cannot write the log: {exc.strerror}")

    def _write(self, sel: selectors.BaseSelector) -> None:
        assert self.in_fd is not None
        try:
            sent = os.write(self.in_fd, self.stdin[:_READ_SIZE])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the command does not want (more of) its input
            sent = len(self.stdin)
        self.stdin = self.stdin[sent:]
        if not self.stdin:
            self._close_stdin(sel)

    def _close_stdin(self, sel: selectors.BaseSelector) -> None:
        if self.in_fd is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(self.in_fd)
        with contextlib.suppress(OSError):
            os.close(self.in_fd)
        self.in_fd = None


class _SafeRedact:
    """`redact`, except that a failing redactor withholds the output instead of leaking it."""

    def __init__(self, redact: Callable[[bytes], bytes]) -> None:
        self.redact = redact
        self.error: str | None = None

    def __call__(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.redact(data)
        except Exception as exc:
            self.error = repr(exc)
            return (
                f"\n[gitexec: output withheld from here on: redaction failed: {exc!r}]\n".encode()
            )


# --- starting ----------------------------------------------------------------------------


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


class _Waiter(threading.Thread):
    """Waits for exactly one child (never any other: others' wait statuses stay theirs)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="gitexec-wait", daemon=True)
        self.pid = pid
        self.done = threading.Event()
        self.code = 255
        self.cpu_s = 0.0
        self.maxrss = 0
        self.lost = False

    def run(self) -> None:
        try:
            _, status, usage = os.wait4(self.pid, 0)
            self.code = os.waitstatus_to_exitcode(status)
            # Its own time plus that of every descendant it waited for.
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self.maxrss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        except ChildProcessError:
            self.lost = True
        finally:
            self.done.set()


# --- running -------------------------------------------------------------------------------


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout_s: float | None,
    cancel: threading.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
    header: str | None = None,
    grace_s: float = KILL_GRACE_S,
    stdin: bytes | None = None,
    redact: Callable[[bytes], bytes] | None = None,
    log_cap: int | None = DEFAULT_LOG_CAP,
    on_output: Callable[[bytes], None] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    sample_every_s: float = SAMPLE_EVERY_S,
    limits: Limits | None = None,
) -> ProcessResult:
    """Run `argv` in `cwd` with `env` added to the (GIT_*-scrubbed) environment; its output
    (stdout and stderr) is appended to `log`, after `header`.

    `stdin` is fed to the command (None: /dev/null). `redact` rewrites whole lines before
    they reach the log; `on_output` sees the raw output as it comes; the log keeps at most
    `log_cap` bytes of it (head and tail). `on_sample` gets resource samples every
    `sample_every_s`. On timeout or cancel: SIGTERM to everything the command started,
    SIGKILL after `grace_s`. Whatever it leaves running when it exits is killed.
    Callbacks run on supervising threads and must be quick.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    token = uuid.uuid4().hex
    full_env = scrubbed_env({**env, PROCESS_VAR: token})
    warnings: list[str] = []
    with log.open("a+b", buffering=0) as out:
        if header:
            out.write(header.encode("utf-8", "replace"))
        cgroup, why = _Cgroup.create(token)
        wants_limits = limits is not None and (limits.memory is not None or limits.cpu is not None)
        if limits is not None and wants_limits:
            if cgroup is None:
                warnings.append(f"limits not enforced: {why}")
            else:
                warnings.extend(cgroup.limit(limits))
        proc: subprocess.Popen[bytes] | None = None
        error = _cannot_run(argv, cwd, full_env)
        if error is None:
            try:
                proc, joined = _spawn(argv, cwd, full_env, stdin is not None, cgroup)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                error = _start_error(exc, argv, cwd, full_env)
        if proc is None:
            if cgroup is not None:
                cgroup.remove()
            _notes(out, [*(f"warning: {w}" for w in warnings), f"cannot start: {error}"])
            duration = time.monotonic() - start
            return ProcessResult(127, False, False, duration, error, warnings=tuple(warnings))
        if cgroup is not None and joined is None:
            cgroup.remove()
            cgroup = None
            if wants_limits:
                warnings.append("limits not enforced: could not join the cgroup")
        _notes(out, [f"warning: {w}" for w in warnings])
        watch = _Watch(
            timeout_s=timeout_s,
            cancel=cancel,
            on_start=on_start,
            grace_s=grace_s,
            stdin=stdin,
            redact=redact,
            log_cap=log_cap,
            on_output=on_output,
            on_sample=on_sample,
            sample_every_s=sample_every_s,
        )
        return _supervise(proc, _Tree(proc.pid, token, cgroup), out, start, watch, warnings)


def _notes(out: BinaryIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(f"gitexec: {line}\n".encode("utf-8", "replace"))


@dataclass(frozen=True)
class _Watch:
    """What run_process was asked to do while the command runs."""

    timeout_s: float | None
    cancel: threading.Event | None
    on_start: Callable[[int, int], None] | None
    grace_s: float
    stdin: bytes | None
    redact: Callable[[bytes], bytes] | None
    log_cap: int | None
    on_output: Callable[[bytes], None] | None
    on_sample: Callable[[Sample], None] | None
    sample_every_s: float


def _supervise(
    proc: subprocess.Popen[bytes],
    tree: _Tree,
    out: BinaryIO,
    start: float,
    watch: _Watch,
    warnings: list[str],
) -> ProcessResult:
    """Watch a started command to its end, then clean up after it."""
    noted = len(warnings)  # logged already
    assert proc.stdout is not None
    # The pump owns the pipe fds from here; the Popen object must not close them again.
    out_fd = os.dup(proc.stdout.fileno())
    proc.stdout.close()
    in_fd = None
    if proc.stdin is not None:
        in_fd = os.dup(proc.stdin.fileno())
        proc.stdin.close()
    capped = _CappedLog(out, watch.log_cap)
    redact = _SafeRedact(watch.redact) if watch.redact is not None else None
    pump = _Pump(out_fd, in_fd, watch.stdin or b"", capped, redact, watch.on_output)
    waiter = _Waiter(proc.pid)
    meter = _Meter(tree, start)
    on_sample = watch.on_sample
    pump.start()
    waiter.start()
    timed_out = cancelled = killed = False
    terminated_at: float | None = None
    try:
        if watch.on_start is not None:
            watch.on_start(proc.pid, proc.pid)
        deadline = start + watch.timeout_s if watch.timeout_s else None
        next_sample = start + watch.sample_every_s
        while not waiter.done.wait(_TICK_S):
            now = time.monotonic()
            if terminated_at is None:
                timed_out = deadline is not None and now >= deadline
                cancelled = not timed_out and watch.cancel is not None and watch.cancel.is_set()
                if timed_out or cancelled:
                    tree.signal(signal.SIGTERM)
                    terminated_at = now
            elif not killed and now - terminated_at >= watch.grace_s:
                tree.signal(signal.SIGKILL)
                killed = True
            if now >= next_sample:
                next_sample = now + watch.sample_every_s
                sample = meter.sample()
                if on_sample is not None:
                    try:
                        on_sample(sample)
                    except Exception as exc:
                        on_sample = None
                        warnings.append(f"sample callback failed: {exc!r}")
    finally:
        # Whatever happened (even an exception here), nothing the command started lives on.
        if not waiter.done.is_set():
            tree.signal(signal.SIGKILL)
            waiter.done.wait()
        tree.root_done = True
        proc.returncode = waiter.code  # reaped by the waiter, not by Popen
        leftovers = tree.kill_all()
        pump.finish(_DRAIN_S)
        dropped = capped.close()
        oom = False
        if tree.cgroup is not None:
            meter.cpu_s = max(meter.cpu_s, tree.cgroup.cpu_s() or 0.0)
            oom = tree.cgroup.oom_killed()
            tree.cgroup.remove()

    warnings.extend(pump.warnings)
    if redact is not None and redact.error is not None:
        warnings.append(f"redaction failed ({redact.error}): the rest of the output was withheld")
    if waiter.lost:
        warnings.append("exit status lost: something else in this process reaped the command")
    if pump.abandoned:
        warnings.append("output still open after everything the command started was killed")
    notes = []
    if timed_out or cancelled:
        how = f"timed out after {watch.timeout_s:g}s" if timed_out else "stopped"
        kill = f"SIGKILL after {watch.grace_s:g}s" if killed else "SIGTERM"
        out.write(b"\n")
        notes.append(f"{how}; killed the command and everything it started ({kill})")
    elif leftovers:
        notes.append(f"killed {leftovers} process(es) the command left running")
    if dropped:
        notes.append(f"{dropped} bytes of output were dropped from this log (log cap)")
    if oom:
        notes.append("killed: memory limit reached")
    _notes(out, [*notes, *(f"warning: {w}" for w in warnings[noted:])])
    return ProcessResult(
        exit_code=waiter.code,
        timed_out=timed_out,
        cancelled=cancelled,
        duration_s=time.monotonic() - start,
        cpu_s=max(meter.cpu_s, waiter.cpu_s),
        peak_rss_mb=max(meter.peak_rss, waiter.maxrss) / _MiB,
        leftovers=leftovers,
        dropped_bytes=dropped,
        oom_killed=oom,
        warnings=tuple(warnings),
    )
