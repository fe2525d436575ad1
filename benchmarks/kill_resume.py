"""The durability torture test: kill -9 a run at many points, resume, compare.

A 20-ticket run with `merge.order: plan` (and validation commands) is first run without
interruption. Then fresh copies are started and disturbed, and each is finished with
`git exec resume --validate-state` (or, when the kill left no run behind, started again
with the same run id). Four series:

- events: killed with SIGKILL right after the journal reached N events, for `--points`
  values of N spread evenly over the whole run (dispatch, agent, commit, validate, merge,
  status writes);
- early: killed `--early` times densely over the run's first moments: from just before
  its first journal record to 0.3 s after it (the run must then be absent, or resumable);
- gates: the same run with an integration gate after every merge, killed while the N-th
  gate is pending (`--gates` points); resume must run the pending gate again;
- moves: someone moves the integration branch back to the base after N merges (`--moves`
  points); the engine stops (or is killed right away, every other point), and the run is
  resumed with `--onto journal`.

Each trial must end with the same output tree, every ticket merged exactly once on the
first-parent chain (and, with gates, passed by exactly one gate run), no process of the
run left alive, and no worktrees beyond the pool.

Run: python benchmarks/kill_resume.py [--points 60] [--early 15] [--gates 10] [--moves 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gitexec.journal import read_records  # noqa: E402
from tests.test_control import KILL_DAG, dag_repo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV  # noqa: E402

RUN = "k"
JOURNAL = f".git/gitexec/runs/{RUN}/journal.jsonl"
GATED_CONFIG = "version: 1\nmerge:\n  order: plan\ngates:\n  integration: ['sleep 0.3']\n"
EARLY_WINDOW_S = 0.3
_RUN_ARGS = ("run", "--no-monitor", "--run-id", RUN)


@dataclass(frozen=True)
class Trial:
    """A fresh copy of the project, with its own pool (so leftovers are its own)."""

    repo: Path
    cache: Path
    jobs: int

    @property
    def env(self) -> dict[str, str]:
        return {**BENCH_ENV, "XDG_CACHE_HOME": str(self.cache)}

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.repo, env=self.env, capture_output=True, text=True, check=True
        ).stdout

    def gitexec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitexec", *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gitexec", *_RUN_ARGS, "--jobs", str(self.jobs)],
            cwd=self.repo,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def events(self) -> list[dict[str, Any]]:
        return read_records(self.repo / JOURNAL)


def make_trial(work: Path, name: str, jobs: int, *, gated: bool) -> Trial:
    repo = dag_repo(work / name)
    trial = Trial(repo, work / f"{name}-cache", jobs)
    if gated:
        (repo / ".gitexec/config.yaml").write_text(GATED_CONFIG)
        trial.git("commit", "-q", "-am", "gate every merge")
    return trial


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def wait_until(proc: subprocess.Popen[bytes], condition: Callable[[], bool]) -> bool:
    """Poll until `condition` holds (True) or the run ended or took too long (False)."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


Result = tuple[str | None, str]  # (what went wrong, or None; how the run was finished)


def finish(trial: Trial, *resume_args: str) -> Result:
    """Bring a disturbed run to its end: resume it, or start it again if it is absent."""
    journal = trial.repo / JOURNAL
    text = journal.read_text() if journal.exists() else ""
    if '"event":"run-finished","state":"completed"' in text:
        return None, "had completed"
    if not text:
        proc = trial.gitexec("run", "--no-monitor", "--run-id", RUN, "--jobs", str(trial.jobs))
        what = "absent, run again"
    else:
        proc = trial.gitexec(
            "resume", "--run", RUN, "--validate-state", "--no-monitor", *resume_args
        )
        what = f"resumed from {text.count(chr(10))} events"
    if proc.returncode != 0:
        return f"{what}: failed ({proc.returncode}): {proc.stdout}{proc.stderr}", what
    return None, what


def leftovers(trial: Trial) -> list[int]:
    """Live processes of the run: its environment names it, it works in the repository or
    the pool."""
    roots = (str(trial.repo) + "/", str(trial.cache) + "/")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd") + "/"
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"GITEXEC_RUN={RUN}".encode() in environ and cwd.startswith(roots) and state != "Z":
            found.append(int(entry))
    return found


def check(trial: Trial, expected: str, *, gated: bool) -> str | None:
    """The run's end is the uninterrupted run's: same tree, each ticket merged (and gated)
    exactly once, nothing left running, no extra worktrees."""
    if trial.git("rev-parse", f"gitexec/{RUN}:out") != expected:
        return "different output tree"
    ledger = trial.git(
        "log",
        "--first-parent",
        "--format=%(trailers:key=Gitexec-Ticket,valueonly)",
        f"gitexec/{RUN}",
    )
    merged = sorted(line.strip() for line in ledger.splitlines() if line.strip())
    if merged != sorted(KILL_DAG):
        return f"first-parent ledger is {merged}"
    if gated:
        events = trial.events()
        passed = Counter(
            str(t) for e in events if e["event"] == "gate-passed" for t in _list(e["tickets"])
        )
        failed = [e for e in events if e["event"] == "gate-failed"]
        if passed != Counter(list(KILL_DAG)) or failed:
            twice = sorted(t for t in KILL_DAG if passed[t] != 1)
            return f"gates: not passed exactly once by {twice}, {len(failed)} gate failure(s)"
    alive = leftovers(trial)
    if alive:
        return f"processes left: {alive}"
    worktrees = [line for line in trial.git("worktree", "list").splitlines() if "slot-" in line]
    if len(worktrees) > trial.jobs + 1:
        return f"{len(worktrees)} worktrees for a pool of {trial.jobs + 1}"
    return None


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def cleanup(trial: Trial) -> None:
    shutil.rmtree(trial.repo, ignore_errors=True)
    shutil.rmtree(trial.cache, ignore_errors=True)


# --- the series ------------------------------------------------------------------------------


def after_events(trial: Trial, kill_at: int) -> Result:
    proc = trial.start()
    wait_until(proc, lambda: len(trial.events()) >= kill_at)
    kill(proc)
    return finish(trial)


def early(trial: Trial, delay_s: float) -> Result:
    proc = trial.start()
    deadline = time.monotonic() + delay_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    kill(proc)
    return finish(trial)


def gate_pending(trial: Trial, nth: int) -> Result:
    def pending() -> bool:
        events = trial.events()
        started = sum(1 for e in events if e["event"] == "gate-started")
        return started >= nth and events[-1]["event"] != "gate-passed"

    proc = trial.start()
    found = wait_until(proc, pending)
    kill(proc)
    if not found:
        return f"gate {nth} was never pending", ""
    return finish(trial)


def moved(trial: Trial, merges: int, *, kill_now: bool) -> Result:
    proc = trial.start()
    found = wait_until(
        proc, lambda: sum(1 for e in trial.events() if e["event"] == "ticket-merged") >= merges
    )
    if not found:
        kill(proc)
        return f"the run ended before {merges} merges", ""
    base = trial.git("rev-parse", "main").strip()
    trial.git("update-ref", f"refs/heads/gitexec/{RUN}", base)
    if kill_now:
        kill(proc)
    else:
        try:
            proc.wait(timeout=60)  # the engine notices at its next merge and stops
        except subprocess.TimeoutExpired:
            kill(proc)
            return "the engine did not stop after its branch was moved", ""
    return finish(trial, "--onto", "journal")


def spread(count: int, lo: float, hi: float) -> list[float]:
    return [lo + i * (hi - lo) / max(1, count - 1) for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=60, help="kills spread over the events")
    parser.add_argument("--early", type=int, default=15, help="kills in the first moments")
    parser.add_argument("--gates", type=int, default=10, help="kills during a pending gate")
    parser.add_argument("--moves", type=int, default=6, help="external moves of the branch")
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitexec-kill-"))

    reference = make_trial(work, "reference", args.jobs, gated=True)
    spawned = time.monotonic()
    proc = reference.start()
    wait_until(proc, lambda: bool(reference.events()))
    startup = time.monotonic() - spawned  # until the first journal record exists
    if proc.wait() != 0:
        raise SystemExit("the uninterrupted gated run failed")
    expected = reference.git("rev-parse", f"gitexec/{RUN}:out")
    gate_runs = sum(1 for e in reference.events() if e["event"] == "gate-started")
    plain = make_trial(work, "plain", args.jobs, gated=False)
    run = plain.gitexec("run", "--no-monitor", "--run-id", RUN, "--jobs", str(args.jobs))
    if run.returncode != 0 or plain.git("rev-parse", f"gitexec/{RUN}:out") != expected:
        raise SystemExit(f"the uninterrupted run failed:\n{run.stdout}{run.stderr}")
    total = len(plain.events())

    series: list[tuple[str, bool, str, Callable[[Trial], Result]]] = []
    for kill_at in sorted({1 + round(x) for x in spread(args.points, 0, total - 1)}):
        series.append(
            (
                "events",
                False,
                f"after event {kill_at:3d}/{total}",
                partial(after_events, kill_at=kill_at),
            )
        )
    for delay in spread(args.early, max(0.0, startup - 0.05), startup + EARLY_WINDOW_S):
        series.append(
            ("early", False, f"{delay:5.3f} s after start", partial(early, delay_s=delay))
        )
    for nth in sorted({1 + round(x) for x in spread(args.gates, 0, gate_runs - 1)}):
        series.append(
            ("gates", True, f"during gate {nth:2d}/{gate_runs}", partial(gate_pending, nth=nth))
        )
    for n, merges in enumerate(sorted({1 + round(x) for x in spread(args.moves, 0, 11)})):
        kill_now = n % 2 == 0
        label = f"branch moved after {merges:2d} merges" + (", then killed" if kill_now else "")
        series.append(("moves", False, label, partial(moved, merges=merges, kill_now=kill_now)))

    counts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    start = time.monotonic()
    for n, (name, gated, label, disturb) in enumerate(series):
        trial = make_trial(work, f"t{n}", args.jobs, gated=gated)
        problem, how = disturb(trial)
        problem = problem or check(trial, expected, gated=gated)
        verdict = "ok" if problem is None else "FAILED: " + problem
        print(f"{name:6} {label}: {verdict} ({how})", flush=True)
        counts[name] += 1
        failed[name] += problem is not None
        if problem is None:
            cleanup(trial)
    elapsed = time.monotonic() - start
    for name in counts:
        print(f"{name:6} {counts[name] - failed[name]}/{counts[name]} resumed to the same result")
    ok = sum(counts.values()) - sum(failed.values())
    print(
        f"{ok}/{sum(counts.values())} disturbed runs resumed to the same result in {elapsed:.0f} s"
    )
    if not failed.total():
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"failed trials are kept in {work}")
    return 1 if failed.total() else 0


if __name__ == "__main__":
    raise SystemExit(main())
