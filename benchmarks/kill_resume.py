"""The durability torture test: kill -9 a run at many points, resume, compare.

A 20-ticket run with `merge.order: plan` (and validation commands) is first run without
interruption. Then, for each of `--points` kill points spread evenly over that run's
journal (so over dispatch, agent, commit, validate, merge and status writes), a fresh copy
is started, killed with SIGKILL right after the journal reached that many events, and
resumed (`git exec resume --validate-state`). Each trial must end with the same output
tree, every ticket merged exactly once on the first-parent chain, no process of the run
left alive, and no worktrees beyond the pool.

Run: python benchmarks/kill_resume.py [--points 50] [--jobs 3]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gitexec.journal import read_records  # noqa: E402
from tests.test_control import KILL_DAG, agents_of_run, dag_repo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV as ENV  # noqa: E402
from _repo import gitexec  # noqa: E402


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=ENV, capture_output=True, text=True, check=True
    ).stdout


def trial(work: Path, n: int, kill_at: int, jobs: int, expected: str) -> str | None:
    """One kill-and-resume; returns a problem description, or None when all is well."""
    repo = dag_repo(work / f"t{n}")
    journal = repo / ".git/gitexec/runs/k/journal.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gitexec",
            "run",
            "--no-monitor",
            "--run-id",
            "k",
            "--jobs",
            str(jobs),
        ],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(read_records(journal)) >= kill_at:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = '"event":"run-finished"' in (journal.read_text() if journal.exists() else "")
    if not done:
        resumed = gitexec(repo, "resume", "--validate-state", "--no-monitor")
        if resumed.returncode != 0:
            return f"resume failed ({resumed.returncode}): {resumed.stdout}{resumed.stderr}"
    if git(repo, "rev-parse", "gitexec/k:out") != expected:
        return "different output tree"
    ledger = git(
        repo,
        "log",
        "--first-parent",
        "--format=%(trailers:key=Gitexec-Ticket,valueonly)",
        "gitexec/k",
    )
    merged = sorted(line.strip() for line in ledger.splitlines() if line.strip())
    if merged != sorted(KILL_DAG):
        return f"first-parent ledger is {merged}"
    alive = agents_of_run("k", repo)
    if alive:
        return f"processes left: {alive}"
    worktrees = [line for line in git(repo, "worktree", "list").splitlines() if "slot-" in line]
    if len(worktrees) > jobs + 1:
        return f"{len(worktrees)} worktrees for a pool of {jobs + 1}"
    shutil.rmtree(repo.parent / repo.name, ignore_errors=True)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitexec-kill-"))
    reference = dag_repo(work / "reference")
    run = gitexec(reference, "run", "--no-monitor", "--run-id", "k", "--jobs", str(args.jobs))
    if run.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{run.stdout}{run.stderr}")
    expected = git(reference, "rev-parse", "gitexec/k:out")
    total = len(read_records(reference / ".git/gitexec/runs/k/journal.jsonl"))
    points = sorted(
        {1 + round(i * (total - 1) / max(1, args.points - 1)) for i in range(args.points)}
    )
    failures = 0
    start = time.monotonic()
    for n, kill_at in enumerate(points):
        problem = trial(work, n, kill_at, args.jobs, expected)
        verdict = "ok" if problem is None else f"FAILED: {problem}"
        print(f"kill after event {kill_at:3d}/{total}: {verdict}", flush=True)
        failures += problem is not None
    print(
        f"{len(points) - failures}/{len(points)} kill points resumed to the same result "
        f"in {time.monotonic() - start:.0f} s"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
