"""A cgroup v2 per command, where Linux lets us create one: it holds every descendant from the
first instruction on, enforces limits, and is killed as a whole."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import time
from pathlib import Path

import psutil

from gitexec.process.environ import _signal_each
from gitexec.process.values import Limits


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
