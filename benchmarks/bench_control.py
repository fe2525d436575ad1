"""How fast a live engine reacts to control requests (goal: under 200 ms median).

A run with one long ticket is started; then `--requests` pause/resume requests are sent
from this process through the same channel `git exec pause|resume` uses, timing each
round trip (request written -> engine acted and journaled -> answer read).

Run: python benchmarks/bench_control.py [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gitexec import control  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV as ENV  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitexec-control-"))
    repo = work / "repo"
    gate = work / "gate"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=ENV)
    tickets = repo / ".gitexec" / "tickets"
    tickets.mkdir(parents=True)
    (tickets / "LONG.yaml").write_text(
        "id: LONG\ntitle: Wait for the benchmark\n"
        f"run: 'while [ ! -f {gate} ]; do sleep 0.05; done'\n"
    )
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=ENV)
    subprocess.run(["git", "commit", "-q", "-m", "t"], cwd=repo, check=True, env=ENV)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitexec", "run", "--no-monitor", "--run-id", "ctl"],
        cwd=repo,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_dir = repo / ".git" / "gitexec" / "runs" / "ctl"
    deadline = time.monotonic() + 30
    while not (run_dir / "journal.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    latencies: list[float] = []
    try:
        for n in range(args.requests):
            start = time.perf_counter()
            response = control.send(run_dir, "pause" if n % 2 == 0 else "resume")
            latencies.append((time.perf_counter() - start) * 1000)
            if not response.ok:
                raise SystemExit(f"request failed: {response.message}")
    finally:
        gate.touch()
        proc.wait(timeout=60)
    latencies.sort()
    result = {
        "requests": len(latencies),
        "median_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "max_ms": round(latencies[-1], 1),
        "goal": "median < 200 ms",
    }
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
