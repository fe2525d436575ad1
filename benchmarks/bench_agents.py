"""Real agents: what gitexec costs around Claude Code, and quota pools under rate limits.

(a) N tickets, each a real `claude -p` (the built-in preset) against the scripted model
    server writing one file, run by `git exec run --jobs 4`, against what a careful script
    does at the same parallelism: per ticket a fresh `git worktree add`, the same CLI
    command in it, `git add -A && git commit`, `git merge --no-ff` into an integration
    branch, `git worktree remove` (worktree adds, removes and merges serialized: git's own
    locks refuse them concurrently). Reported: wall times, and gitexec's overhead per
    ticket beyond the agents' own time.
(b) 40 tickets with `claude`, jobs 4, against a provider with a rate limit (the scripted
    server's token bucket: beyond `--rate` agent turns per second, HTTP 429 with the
    retry-after until the next one is allowed; about 30 % of requests are refused when
    nothing holds back): one quota pool shared by all tickets (the default for agents of
    one account) against per-ticket waits (each ticket its own agent and pool, the way
    plain retries behave). Reported: tickets completed, wall time, requests sent and
    refused.

Run: python benchmarks/bench_agents.py [--only a,b] [--tickets 12] [--json out.json]
Needs the CLIs from tests/agents/install-clis.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV, gitexec, run_status  # noqa: E402

from gitexec.agents import render_command  # noqa: E402
from gitexec.presets import PRESETS  # noqa: E402
from tests.agents import clis  # noqa: E402
from tests.agents.server import Reply, ScriptedModel, Step, WriteFile  # noqa: E402


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=BENCH_ENV, capture_output=True, text=True, check=True
    ).stdout


def make_repo(path: Path, tickets: dict[str, str], config: str) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("bench\n")
    (path / ".gitexec/tickets").mkdir(parents=True)
    (path / ".gitexec/config.yaml").write_text(config)
    for tid, text in tickets.items():
        (path / f".gitexec/tickets/{tid}.yaml").write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "tickets")
    return path


def claude_env(server: ScriptedModel, home: Path) -> dict[str, str]:
    env = clis.cli_environment("claude", server.url, home)
    bin_dir = home / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "claude"
    if not link.exists():
        link.symlink_to(clis.binary("claude"))
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return env


def ticket(tid: str, agent: str = "claude") -> str:
    return (
        f"id: {tid}\ntitle: Write {tid}\nagent: {agent}\n"
        f"prompt: Write {tid.lower()}.txt saying hello.\n"
    )


def write_steps(n: int) -> list[Step]:
    steps: list[Step] = []
    for i in range(n):
        steps += [WriteFile(f"t{i:03d}.txt", "hello\n"), Reply("Wrote it.")]
    return steps


# --- (a) gitexec around claude vs a script around claude ---------------------------------------


def bench_a(work: Path, n: int, jobs: int) -> dict[str, Any]:
    home = work / "home"
    tickets = {f"T{i:03d}": ticket(f"T{i:03d}") for i in range(n)}
    with ScriptedModel(write_steps(n)) as server:
        env = claude_env(server, home)
        config = f"version: 1\nagents:\n  claude:\n    env: {json.dumps(env)}\n"
        repo = make_repo(work / "gitexec", tickets, config)
        start = time.monotonic()
        done = gitexec(repo, "run", "--no-monitor", "--run-id", "a", "--jobs", str(jobs))
        gitexec_s = time.monotonic() - start
        assert done.returncode == 0, done.stdout + done.stderr
    st = run_status(repo, "a")
    agent_s = sum(t["duration_s"] for t in st["tickets"].values())

    with ScriptedModel(write_steps(n)) as server:
        env = {**os.environ, **BENCH_ENV, **claude_env(server, home), "HOME": str(home)}
        repo = make_repo(work / "script", tickets, "version: 1\n")
        git(repo, "branch", "integration")
        lock = threading.Lock()
        start = time.monotonic()

        def one(tid: str) -> None:
            wt = work / "wt" / tid
            with lock:
                git(repo, "worktree", "add", "-q", "--detach", str(wt), "main")
            argv = render_command(
                PRESETS["claude"], {"prompt": f"Write {tid.lower()}.txt saying hello."}
            )
            subprocess.run(
                list(argv), cwd=wt, env=env, stdin=subprocess.DEVNULL, capture_output=True
            )
            git(wt, "add", "-A")
            git(wt, "commit", "-q", "--allow-empty", "-m", tid)
            commit = git(wt, "rev-parse", "HEAD").strip()
            with lock:
                merge = work / "merge"
                if not merge.exists():
                    git(repo, "worktree", "add", "-q", str(merge), "integration")
                git(merge, "merge", "--no-ff", "-q", "-m", f"Merge {tid}", commit)
                git(repo, "worktree", "remove", "--force", str(wt))

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, sorted(tickets)))
        script_s = time.monotonic() - start
    return {
        "tickets": n,
        "jobs": jobs,
        "gitexec_s": round(gitexec_s, 2),
        "script_s": round(script_s, 2),
        "ratio": round(gitexec_s / script_s, 3),
        "agent_s": round(agent_s, 2),
        "overhead_per_ticket_ms": round(1000 * (gitexec_s - agent_s / jobs) / n, 1),
    }


# --- (b) rate limits: one shared pool vs per-ticket waits --------------------------------------


def bench_b(work: Path, n: int, jobs: int, rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {"tickets": n, "jobs": jobs, "rate_per_s": rate}
    for mode in ("pool", "per-ticket"):
        with ScriptedModel([], rate=rate) as server:
            env = claude_env(server, work / f"home-{mode}")
            if mode == "pool":
                agents = f"  claude:\n    env: {json.dumps(env)}\n"
                tickets = {f"T{i:03d}": ticket(f"T{i:03d}") for i in range(n)}
            else:  # each ticket its own agent and quota pool: waits are per ticket
                agents = "".join(
                    f"  c{i:03d}:\n    command: {json.dumps(list(PRESETS['claude'].command))}\n"
                    f"    dialect: claude-json\n    quota: q{i:03d}\n"
                    f"    env: {json.dumps({**dict(PRESETS['claude'].env), **env})}\n"
                    for i in range(n)
                )
                tickets = {f"T{i:03d}": ticket(f"T{i:03d}", f"c{i:03d}") for i in range(n)}
            config = f"version: 1\nretry_backoff: 1s\nagents:\n{agents}"
            repo = make_repo(work / mode, tickets, config)
            start = time.monotonic()
            done = gitexec(repo, "run", "--no-monitor", "--run-id", "b", "--jobs", str(jobs))
            wall = time.monotonic() - start
            st = run_status(repo, "b")
            out[mode] = {
                "completed": st["metrics"]["completed"],
                "failed_attempts": sum(t["failed_attempts"] for t in st["tickets"].values()),
                "wall_s": round(wall, 2),
                "requests": len(server.main_requests()),
                "throttled_requests": server.throttled,
                "exit": done.returncode,
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="a,b")
    parser.add_argument("--tickets", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.5, help="agent turns per second")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gitexec-bench-agents-") as tmp:
        work = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # the pools go away with it
        if "a" in args.only:
            results["a"] = bench_a(work / "a", args.tickets, args.jobs)
            print(json.dumps({"a": results["a"]}))
        if "b" in args.only:
            results["b"] = bench_b(work / "b", 40, args.jobs, args.rate)
            print(json.dumps({"b": results["b"]}))
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
