"""Makespan against make, and what one hand-off between dependent tickets costs.

  (a) Random DAGs (seeded): 200 tickets whose agent sleeps 0.05-0.5 s and writes one file,
      each with up to 3 dependencies among the previous 30 tickets. `git exec run --jobs 8`
      (the pool in place) vs `make -j8` running the same commands on the same DAG in one
      directory, vs the lower bound max(critical path, total work / jobs). Median over
      three seeds (goal: gitexec <= 1.0x make). From each run's journal: the median
      hand-off on the DAG's critical path (the last dependency's agent exit to the
      dependent's agent start; goal <= 25 ms), split into its steps, and how long after
      the run started its first agent started (goal <= 0.2 s). `engine_busy`: the share of
      the wall time the engine's own process was on a CPU (its threads take turns holding
      one interpreter lock, so near 1.0 every step in it waits for the others).
  (b) 60 tickets of `sleep 0.5` on a 20,000-file repository, jobs 4, vs `make -j4` running
      the same commands without isolation: on the repository's first run (the pool is
      made) and with the pool in place (goals: <= 1.3x and <= 1.05x).

Wall times are the whole CLI (`python -m gitexec run`, Python's start-up included) and the
whole `make`. Pools go to a cache directory inside the work directory.

`--gitexec DIR` runs the gitexec found in DIR (a checkout, e.g. a worktree of an older
commit, for before/after figures) instead of the installed one.

Run: python benchmarks/bench_makespan.py [--quick] [--only a,b] [--seeds 1,2,3] [--json F]
     [--gitexec DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV, make_repo

from gitexec.journal import read_records

Graph = dict[str, list[str]]


@dataclass(frozen=True)
class Workload:
    """A DAG, each ticket's agent time, and the command that sleeps it and writes a file."""

    graph: Graph
    seconds: dict[str, float]

    def command(self, tid: str) -> str:
        return f"sleep {self.seconds[tid]:.3f} && mkdir -p out && echo {tid} > out/{tid}.txt"

    def critical_path(self) -> list[str]:
        """The longest path by agent time (the graph lists dependencies before dependents)."""
        finish: dict[str, float] = {}
        via: dict[str, str | None] = {}
        for tid, deps in self.graph.items():
            before = max(deps, key=lambda d: finish[d], default=None)
            finish[tid] = (finish[before] if before else 0.0) + self.seconds[tid]
            via[tid] = before
        node: str | None = max(finish, key=lambda t: finish[t])
        path: list[str] = []
        while node is not None:
            path.append(node)
            node = via[node]
        return path[::-1]

    def lower_bound(self, jobs: int) -> float:
        path = sum(self.seconds[t] for t in self.critical_path())
        return max(path, sum(self.seconds.values()) / jobs)


def random_dag(n: int, seed: int, prefix: str) -> Workload:
    """`n` tickets, agents of 0.05-0.5 s, up to 3 dependencies among the previous 30."""
    rnd = random.Random(seed)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    graph: Graph = {}
    for i, tid in enumerate(ids):
        window = ids[max(0, i - 30) : i]
        graph[tid] = sorted(rnd.sample(window, min(len(window), rnd.randint(0, 3))))
    seconds = {tid: round(rnd.uniform(0.05, 0.5), 3) for tid in ids}
    return Workload(graph, seconds)


def sleeps(n: int, seconds: float, seed: int = 3) -> Workload:
    """`n` tickets of one duration; a quarter depend on one or two earlier ones (the shape
    of bench_engine.py's (b))."""
    rnd = random.Random(seed)
    graph: Graph = {}
    for i in range(n):
        deps: set[str] = set()
        if i >= 8 and rnd.random() < 0.25:
            deps = {f"T{rnd.randrange(i):03d}" for _ in range(rnd.randint(1, 2))}
        graph[f"T{i:03d}"] = sorted(deps)
    return Workload(graph, dict.fromkeys(graph, seconds))


# --- running both ----------------------------------------------------------------------------


def sh(cmd: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def write_tickets(repo: Path, work: Workload, env: Mapping[str, str]) -> None:
    """Replace the repository's tickets with the workload's, estimates exact, and commit."""
    tickets = repo / ".gitexec" / "tickets"
    shutil.rmtree(tickets, ignore_errors=True)
    tickets.mkdir(parents=True)
    for tid, deps in work.graph.items():
        (tickets / f"{tid}.yaml").write_text(
            f"id: {tid}\ntitle: Ticket {tid}\ndepends_on: [{', '.join(deps)}]\n"
            f"paths: [out/{tid}.txt]\nestimate: {work.seconds[tid]}s\n"
            f"run: {json.dumps(work.command(tid))}\n",
            encoding="utf-8",
        )
    sh(["git", "add", "-A", ".gitexec"], repo, env)
    sh(["git", "commit", "-q", "-m", "tickets"], repo, env)


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # the engine's and its git processes' CPU (agents' sleep costs none)
    engine_cpu_s: float | None  # the engine's process alone (its one interpreter lock)
    journal: list[dict[str, Any]]


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _own_cpu_when_done(pid: int) -> float | None:
    """Wait for `pid` to exit without reaping it, and read the CPU it used itself (not
    its children's) while /proc still has it; None where that cannot be read."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (AttributeError, OSError):
        return None
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def gitexec_run(repo: Path, jobs: int, run_id: str, env: Mapping[str, str]) -> Run:
    cpu = _children_cpu()
    start = time.perf_counter()
    command = [sys.executable, "-m", "gitexec", "run", "--no-monitor"]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            [*command, "--jobs", str(jobs), "--run-id", run_id],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        engine_cpu = _own_cpu_when_done(proc.pid)
        returncode = proc.wait()
        wall = time.perf_counter() - start
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    cpu = _children_cpu() - cpu
    if returncode != 0:
        raise SystemExit(f"gitexec run {run_id} failed:\n{output}")
    journal = read_records(repo / ".git" / "gitexec" / "runs" / run_id / "journal.jsonl")
    return Run(wall, cpu, engine_cpu, journal)


def _busy(run: Run) -> float | None:
    """The share of the run's wall time the engine's process was on a CPU."""
    return None if run.engine_cpu_s is None else round(run.engine_cpu_s / run.wall_s, 3)


def make_run(work: Workload, jobs: int, where: Path) -> float:
    """The same commands under `make -jN` in one directory: no isolation, no commits."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    names = " ".join(work.graph)
    rules = [f"all: {names}", f".PHONY: all {names}"]
    rules += [f"{t}: {' '.join(deps)}\n\t@{work.command(t)}" for t, deps in work.graph.items()]
    (where / "Makefile").write_text("\n".join(rules) + "\n", encoding="utf-8")
    start = time.perf_counter()
    subprocess.run(["make", "-s", f"-j{jobs}"], cwd=where, check=True)
    return time.perf_counter() - start


# A checkout whose gitexec the runs use (--gitexec), else the installed one.
GITEXEC_DIR: Path | None = None


def bench_env(work_dir: Path) -> dict[str, str]:
    """The benchmark identity, pools under the work directory, nothing of the caller's git."""
    env = {k: v for k, v in BENCH_ENV.items() if not k.startswith("GITEXEC_")}
    env["XDG_CACHE_HOME"] = str(work_dir / "cache")
    if GITEXEC_DIR is not None:
        env["PYTHONPATH"] = str(GITEXEC_DIR)
    return env


def new_repo(work_dir: Path, name: str, files: int, env: Mapping[str, str]) -> Path:
    """A clone of a `files`-file template repository (the template is made once)."""
    template = work_dir / f"template-{files}"
    if not template.exists():
        make_repo(template, files, seed=7)
    repo = work_dir / name
    shutil.rmtree(repo, ignore_errors=True)
    sh(["git", "clone", "-q", "--no-hardlinks", str(template), str(repo)], work_dir, env)
    return repo


# --- reading the journal ---------------------------------------------------------------------

# The steps of a hand-off, each ending at the named event (of the dependency, then of the
# dependent ticket).
STEPS = (
    ("commit", "dep", "ticket-committed"),
    ("merge", "dep", "ticket-merged"),
    ("dispatch", "own", "ticket-dispatched"),
    ("start", "own", "agent-started"),
)


def event_times(journal: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], float]:
    """(ticket, event) -> the time of its last such event (one attempt each here)."""
    times: dict[tuple[str, str], float] = {}
    for record in journal:
        ticket = record.get("ticket")
        if isinstance(ticket, str):
            times[(ticket, record["event"])] = float(record["t"])
    return times


def handoffs(work: Workload, journal: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median milliseconds of the critical path's hand-offs, in total and by step."""
    times = event_times(journal)
    total: list[float] = []
    steps: dict[str, list[float]] = {name: [] for name, _, _ in STEPS}
    for tid in work.critical_path():
        deps = work.graph[tid]
        if not deps:
            continue
        dep = max(deps, key=lambda d: times[(d, "agent-exited")])
        exited = times[(dep, "agent-exited")]
        total.append(times[(tid, "agent-started")] - exited)
        previous = exited
        for name, whose, event in STEPS:
            at = times[(dep if whose == "dep" else tid, event)]
            steps[name].append(at - previous)
            previous = at
    out = {"handoff_ms": _ms(statistics.median(total))}
    out.update({f"{name}_ms": _ms(statistics.median(v)) for name, v in steps.items()})
    return out


def first_start_s(journal: Sequence[Mapping[str, Any]]) -> float:
    """Seconds from the run's first record to its first agent start."""
    began = next(float(r["t"]) for r in journal if r["event"] == "run-started")
    started = min(float(r["t"]) for r in journal if r["event"] == "agent-started")
    return round(started - began, 3)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# --- the benchmarks --------------------------------------------------------------------------


def bench_a(work_dir: Path, seeds: Sequence[int], tickets: int, files: int) -> dict[str, Any]:
    env = bench_env(work_dir)
    jobs = 8
    repo = new_repo(work_dir, "a", files, env)
    # The pool is made by a first run that keeps every slot busy; the measured runs reuse it.
    write_tickets(repo, sleeps(jobs + 1, 0.3), env)
    gitexec_run(repo, jobs, "warm-up", env)
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        work = random_dag(tickets, seed, prefix=f"S{seed}-")
        write_tickets(repo, work, env)
        run = gitexec_run(repo, jobs, f"seed-{seed}", env)
        make_s = make_run(work, jobs, work_dir / "a-make")
        bound = work.lower_bound(jobs)
        row: dict[str, Any] = {
            "seed": seed,
            "gitexec_s": round(run.wall_s, 2),
            "cpu_s": round(run.cpu_s, 2),
            "engine_busy": _busy(run),
            "make_s": round(make_s, 2),
            "bound_s": round(bound, 2),
            "ratio": round(run.wall_s / make_s, 3),
            "make_over_bound": round(make_s / bound, 3),
            "path_depth": len(work.critical_path()),
            "first_start_s": first_start_s(run.journal),
            **handoffs(work, run.journal),
        }
        print("a", json.dumps(row), flush=True)
        per_seed.append(row)

    def median(key: str) -> float:
        return round(float(statistics.median(r[key] for r in per_seed)), 3)

    return {
        "tickets": tickets,
        "jobs": jobs,
        "files": files,
        "seeds": per_seed,
        "ratio": median("ratio"),
        "cpu_s": median("cpu_s"),
        "engine_busy": (
            median("engine_busy") if all(r["engine_busy"] is not None for r in per_seed) else None
        ),
        "handoff_ms": median("handoff_ms"),
        "first_start_s": median("first_start_s"),
        "goals": {"ratio": "<= 1.0", "handoff_ms": "<= 25", "first_start_s": "<= 0.2"},
    }


def bench_b(work_dir: Path, tickets: int, files: int) -> dict[str, Any]:
    env = bench_env(work_dir)
    jobs = 4
    work = sleeps(tickets, 0.5)
    repo = new_repo(work_dir, "b", files, env)
    write_tickets(repo, work, env)
    first = gitexec_run(repo, jobs, "first", env)
    warm = gitexec_run(repo, jobs, "warm", env)
    make_s = make_run(work, jobs, work_dir / "b-make")
    return {
        "tickets": tickets,
        "jobs": jobs,
        "files": files,
        "gitexec_first_run_s": round(first.wall_s, 2),
        "gitexec_s": round(warm.wall_s, 2),
        "cpu_first_run_s": round(first.cpu_s, 2),
        "cpu_s": round(warm.cpu_s, 2),
        "engine_busy": _busy(warm),
        "make_s": round(make_s, 2),
        "ratio_first_run": round(first.wall_s / make_s, 3),
        "ratio": round(warm.wall_s / make_s, 3),
        "first_start_s": first_start_s(warm.journal),
        "goals": {"ratio": "<= 1.05", "ratio_first_run": "<= 1.3"},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="a,b", help="which benchmarks: a,b")
    parser.add_argument("--seeds", default="1,2,3", help="random DAG seeds for (a)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument("--work", type=Path, help="keep repositories here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write results to this file")
    parser.add_argument("--gitexec", type=Path, help="run the gitexec of this checkout")
    args = parser.parse_args()
    global GITEXEC_DIR
    GITEXEC_DIR = args.gitexec.resolve() if args.gitexec else None
    work_dir = args.work or Path(tempfile.mkdtemp(prefix="gitexec-makespan-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds = seeds[:1]
    quick = args.quick
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "a": lambda: bench_a(work_dir, seeds, 40 if quick else 200, 200 if quick else 2000),
        "b": lambda: bench_b(work_dir, 12 if quick else 60, 2000 if quick else 20000),
    }
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cpus, {sys.platform}",
        "load_before": os.getloadavg()[0],
    }
    for key in args.only.split(","):
        results[key] = runners[key]()
        print(key, json.dumps({k: v for k, v in results[key].items() if k != "seeds"}), flush=True)
    results["load_after"] = os.getloadavg()[0]
    print(f"load average: {results['load_before']:.2f} before, {results['load_after']:.2f} after")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
