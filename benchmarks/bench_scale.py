"""How gitexec's cost grows with the number of tickets and the size of the repository.

Every figure comes from the real CLI (`python -m gitexec ...` as a subprocess); each goal is
a ratio of two figures measured in the same run.

  run     no-op tickets (`run: "true"`, no dependencies), `run --jobs 4`, on a 200-file
          repository, at 200 and 2,000 tickets (after a one-ticket run that creates the slot
          pool): wall and CPU per ticket and peak memory, then `status` and `report` of
          that run. CPU is user + system time of the whole process tree (the engine, git,
          the agents), from wait4(). Goal: per-ticket wall and CPU at 2,000 <= 1.3x those
          at 200; `status` and `report` linear.
  static  `run --dry-run`, `plan` and `check` on 10,000 and 100,000 tickets (the layered
          DAG of benchmarks/_tickets.py), cold (parse cache removed) and warm.
          Goal: 100k / 10k <= 12x.
  files   warm per-ticket time on a 2,000- and a 20,000-file repository: 60 no-op tickets,
          jobs 4, the pool already made; median of 3 runs. Goal: <= 1.3x.

    python benchmarks/bench_scale.py                        # everything (~15 minutes)
    python benchmarks/bench_scale.py --quick                # smaller sizes, one repeat
    python benchmarks/bench_scale.py --only run --tickets 200 2000 --json scale.json
    python benchmarks/bench_scale.py --gitexec /path/to/other/checkout   # compare a version

`--gitexec DIR` puts DIR first on PYTHONPATH, so the same script measures another checkout
(e.g. the commit before a change). A command that runs past `--timeout` is stopped and
reported as such (its figure is then a lower bound).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _repo import make_repo as make_file_repo
from _tickets import cache_dir, hermetic_env
from _tickets import make_repo as make_ticket_repo

import gitexec

CONFIG_YAML = "version: 1\ndefault_agent: shell\n"


@dataclass(frozen=True)
class Timing:
    """One command: wall seconds, CPU seconds of its process tree, peak RSS, output."""

    wall_s: float
    cpu_s: float
    maxrss_mb: float
    stdout: str
    timed_out: bool = False


class Cli:
    """Runs `python -m gitexec` in a repository and measures it with wait4()."""

    def __init__(self, python: str, env: dict[str, str], timeout: float) -> None:
        self.python = python
        self.env = env
        self.timeout = timeout

    def run(self, repo: Path, *args: str, check: bool = True) -> Timing:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [self.python, "-m", "gitexec", *args],
                cwd=repo,
                env=self.env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            expired = threading.Event()

            def stop() -> None:
                expired.set()
                os.killpg(proc.pid, signal.SIGKILL)

            timer = threading.Timer(self.timeout, stop)
            timer.start()
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        if expired.is_set():
            print(f"  `{' '.join(args)}` stopped after {self.timeout:.0f} s", flush=True)
            return Timing(wall, usage.ru_utime + usage.ru_stime, 0.0, "", timed_out=True)
        if check and proc.returncode != 0:
            sys.exit(f"`gitexec {' '.join(args)}` exited {proc.returncode} in {repo}:\n{stderr}")
        return Timing(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout)


def git(repo: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def noop_repo(work: Path, name: str, files: int, tickets: int, env: dict[str, str]) -> Path:
    """A `files`-file repository (cloned from a template) with `tickets` no-op tickets."""
    template = work / f"files-{files}"
    if not template.exists():
        make_file_repo(template, files, seed=7)
    repo = work / name
    if repo.exists():
        shutil.rmtree(repo)
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", str(template), str(repo)],
        env=env,
        check=True,
        capture_output=True,
    )
    folder = repo / ".gitexec" / "tickets"
    folder.mkdir(parents=True)
    (repo / ".gitexec" / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    for i in range(tickets):
        tid = f"T{i:05d}"
        (folder / f"{tid}.yaml").write_text(
            f'id: {tid}\ntitle: "No-op {i}"\nrun: "true"\n', encoding="utf-8"
        )
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", f"{tickets} no-op tickets")
    return repo


def completed(cli: Cli, repo: Path, run_id: str) -> tuple[Timing, int]:
    """`status --format json` of a run and how many of its tickets completed."""
    timing = cli.run(repo, "status", "--run", run_id, "--format", "json")
    data = json.loads(timing.stdout)
    tickets = data.get("tickets", [])
    if isinstance(tickets, dict):
        tickets = list(tickets.values())
    done = sum(1 for t in tickets if t.get("status") == "completed")
    return timing, done


def per_ticket(t: Timing, n: int) -> dict[str, float]:
    return {
        "wall_ms_per_ticket": round(t.wall_s * 1000 / n, 2),
        "cpu_ms_per_ticket": round(t.cpu_s * 1000 / n, 2),
    }


def bench_run(cli: Cli, work: Path, sizes: Sequence[int], jobs: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        repo = noop_repo(work, f"run-{n}", 200, n, cli.env)
        cli.run(
            repo, "run", "--no-monitor", "--jobs", str(jobs), "--run-id", "warm", "--only", "T00000"
        )
        timing = cli.run(repo, "run", "--no-monitor", "--jobs", str(jobs), "--run-id", "scale")
        status, done = completed(cli, repo, "scale")
        if done != n:
            sys.exit(f"{done} of {n} tickets completed in {repo}")
        report = cli.run(repo, "report", "--run", "scale", "--markdown", str(work / f"r{n}.md"))
        row = {
            "tickets": n,
            "wall_s": round(timing.wall_s, 2),
            "cpu_s": round(timing.cpu_s, 2),
            **per_ticket(timing, n),
            "maxrss_mb": round(timing.maxrss_mb, 1),
            "status_s": round(status.wall_s, 3),
            "report_s": round(report.wall_s, 3),
        }
        rows.append(row)
        print("run", json.dumps(row), flush=True)
    small, large = rows[0], rows[-1]
    ratios = {
        "wall_per_ticket": large["wall_ms_per_ticket"] / small["wall_ms_per_ticket"],
        "cpu_per_ticket": large["cpu_ms_per_ticket"] / small["cpu_ms_per_ticket"],
        "status": large["status_s"] / small["status_s"],
        "report": large["report_s"] / small["report_s"],
        "tickets": large["tickets"] / small["tickets"],
    }
    return {"jobs": jobs, "files": 200, "rows": rows, "ratios": _rounded(ratios), "goal": "<= 1.3"}


STATIC = {
    "dry-run": ("run", "--dry-run", "--jobs", "8"),
    "plan": ("plan", "--strategy", "balanced", "--jobs", "8", "-o", "{work}/plan-{n}.yaml"),
    "check": ("check",),
}


def bench_static(
    cli: Cli, work: Path, sizes: Sequence[int], commands: Sequence[str] = tuple(STATIC)
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for n in sizes:
        repo = work / f"static-{n}"
        start = time.perf_counter()
        make_ticket_repo(repo, n, 0, cli.env)
        print(f"static: {n} tickets committed in {time.perf_counter() - start:.0f} s", flush=True)
        row: dict[str, Any] = {"tickets": n}
        for name in commands:
            args = [a.format(work=work, n=n) for a in STATIC[name]]
            shutil.rmtree(cache_dir(repo), ignore_errors=True)
            cold = cli.run(repo, *args)
            warm = cli.run(repo, *args)
            row[f"{name}_cold_s"] = round(cold.wall_s, 2) if not cold.timed_out else None
            row[f"{name}_warm_s"] = round(warm.wall_s, 2) if not warm.timed_out else None
            row[f"{name}_maxrss_mb"] = round(max(cold.maxrss_mb, warm.maxrss_mb), 1)
            # CPU seconds too: on a busy machine they say more than wall time.
            row[f"{name}_cold_cpu"] = round(cold.cpu_s, 2) if not cold.timed_out else None
            row[f"{name}_warm_cpu"] = round(warm.cpu_s, 2) if not warm.timed_out else None
            print(
                f"static {n} {name}: cold {cold.wall_s:.2f} s ({cold.cpu_s:.2f} s CPU), "
                f"warm {warm.wall_s:.2f} s ({warm.cpu_s:.2f} s CPU)",
                flush=True,
            )
        rows.append(row)
        shutil.rmtree(repo, ignore_errors=True)
    small, large = rows[0], rows[-1]
    ratios: dict[str, float | None] = {}
    for key in small:
        if key.endswith(("_s", "_cpu")):
            a, b = small[key], large[key]
            ratios[key.removesuffix("_s")] = round(b / a, 2) if a and b else None
    return {
        "rows": rows,
        "ratios": ratios,
        "goal": f"<= {1.2 * large['tickets'] / small['tickets']:g}",
    }


def bench_files(
    cli: Cli, work: Path, sizes: Sequence[int], tickets: int, jobs: int, repeat: int
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for files in sizes:
        repo = noop_repo(work, f"files-{files}-run", files, tickets, cli.env)
        cli.run(
            repo, "run", "--no-monitor", "--jobs", str(jobs), "--run-id", "warm", "--only", "T00000"
        )
        walls, cpus = [], []
        for k in range(repeat):
            t = cli.run(repo, "run", "--no-monitor", "--jobs", str(jobs), "--run-id", f"r{k}")
            walls.append(t.wall_s)
            cpus.append(t.cpu_s)
        row = {
            "files": files,
            "tickets": tickets,
            "wall_ms_per_ticket": round(statistics.median(walls) * 1000 / tickets, 2),
            "cpu_ms_per_ticket": round(statistics.median(cpus) * 1000 / tickets, 2),
            "walls_s": [round(w, 2) for w in walls],
        }
        rows.append(row)
        print("files", json.dumps(row), flush=True)
        shutil.rmtree(repo, ignore_errors=True)
    small, large = rows[0], rows[-1]
    ratios = {
        "wall_per_ticket": large["wall_ms_per_ticket"] / small["wall_ms_per_ticket"],
        "cpu_per_ticket": large["cpu_ms_per_ticket"] / small["cpu_ms_per_ticket"],
    }
    return {"jobs": jobs, "rows": rows, "ratios": _rounded(ratios), "goal": "<= 1.3"}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in values.items()}


def print_summary(results: dict[str, Any]) -> None:
    print()
    if "run" in results:
        print("run: no-op tickets, jobs 4, 200 files (ms per ticket; status/report in s)")
        print(f"{'tickets':>8} {'wall':>8} {'cpu':>8} {'rss MB':>8} {'status':>8} {'report':>8}")
        for r in results["run"]["rows"]:
            print(
                f"{r['tickets']:>8} {r['wall_ms_per_ticket']:>8.1f} {r['cpu_ms_per_ticket']:>8.1f} "
                f"{r['maxrss_mb']:>8.0f} {r['status_s']:>8.2f} {r['report_s']:>8.2f}"
            )
        print(f"ratios (large/small, per ticket): {results['run']['ratios']}")
    if "static" in results:
        print("\nstatic: seconds, wall and CPU (cold = parse cache removed)")
        rows = results["static"]["rows"]
        keys = [k for k in rows[0] if k.endswith(("_s", "_cpu"))]
        print(f"{'tickets':>8} " + " ".join(f"{k.removesuffix('_s'):>14}" for k in keys))
        for r in rows:
            cells = " ".join(f"{'-' if r[k] is None else f'{r[k]:.2f}':>14}" for k in keys)
            print(f"{r['tickets']:>8} {cells}")
        print(f"ratios (large/small): {results['static']['ratios']}")
    if "files" in results:
        print("\nfiles: warm per-ticket ms")
        for r in results["files"]["rows"]:
            print(
                f"{r['files']:>8} files {r['wall_ms_per_ticket']:>8.1f} wall "
                f"{r['cpu_ms_per_ticket']:>8.1f} cpu"
            )
        print(f"ratios (large/small): {results['files']['ratios']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default="run,static,files", help="parts to run: run,static,files")
    p.add_argument(
        "--quick", action="store_true", help="100/1,000 tickets; 2k/20k static; 1 repeat"
    )
    p.add_argument("--tickets", type=int, nargs=2, metavar=("SMALL", "LARGE"))
    p.add_argument("--static", type=int, nargs=2, metavar=("SMALL", "LARGE"))
    p.add_argument(
        "--static-commands", default=",".join(STATIC), help="of static: dry-run,plan,check"
    )
    p.add_argument("--files", type=int, nargs=2, metavar=("SMALL", "LARGE"), default=(2000, 20000))
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--repeat", type=int, help="runs per repository size in `files` (default 3)")
    p.add_argument("--timeout", type=float, default=1800.0, help="stop a command after this")
    p.add_argument("--gitexec", type=Path, help="run gitexec from this source tree")
    p.add_argument("--python", default=sys.executable, help="interpreter running gitexec")
    p.add_argument("--work", type=Path, help="keep repositories here (default: a temp dir)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tickets = args.tickets or ((100, 1000) if args.quick else (200, 2000))
    static = args.static or ((2000, 20000) if args.quick else (10000, 100000))
    repeat = args.repeat or (1 if args.quick else 3)
    results: dict[str, Any] = {
        "benchmark": "scale",
        "gitexec": str(args.gitexec or Path(gitexec.__file__).parent.parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="gitexec-bench-scale-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = hermetic_env(work)
        if args.gitexec is not None:
            env["PYTHONPATH"] = str(args.gitexec.resolve())
        cli = Cli(args.python, env, args.timeout)
        parts = args.only.split(",")
        if "run" in parts:
            results["run"] = bench_run(cli, work, tickets, args.jobs)
        if "static" in parts:
            commands = args.static_commands.split(",")
            results["static"] = bench_static(cli, work, static, commands)
        if "files" in parts:
            results["files"] = bench_files(cli, work, args.files, 60, args.jobs, repeat)
    results["load_after"] = os.getloadavg()
    print_summary(results)
    print(f"\nload average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
