"""A conflict-heavy workload: the conflict ladder against giving up at the first conflict.

40 tickets, jobs 4. A third of them also append a line to shared files (a registry both
sides append to, which git cannot merge; a CHANGELOG, which the union rule settles); the
rest write files of their own. The same workload runs with
`merge.on_conflict: [rules, rerun, sequential, fail]` and with `[fail]` (rules off too),
reporting completed tickets, conflicts seen, auto-resolved % and wall time.

Run: python benchmarks/bench_conflicts.py [--tickets 40] [--jobs 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _repo import BENCH_ENV as ENV
from _repo import gitexec, run_status

LADDERS = {
    "ladder": "[rules, rerun, sequential, fail]",
    "fail-only": "[fail]",
}


def make_repo(path: Path, tickets: int, ladder: str) -> None:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True, env=ENV)
    (path / "shared").mkdir()
    (path / "shared" / "registry.txt").write_text("# registry\n")
    (path / "CHANGELOG.md").write_text("# Changes\n")
    config = (
        "version: 1\n"
        "merge:\n"
        f"  on_conflict: {ladder}\n"
        "  max_reruns: 2\n"
        "  rules:\n"
        "    - {paths: [CHANGELOG.md], strategy: union}\n"
    )
    (path / ".gitexec" / "tickets").mkdir(parents=True)
    (path / ".gitexec" / "config.yaml").write_text(config)
    for i in range(tickets):
        tid = f"T{i:02d}"
        run = f"sleep 0.2; mkdir -p own; echo {tid} > own/{tid}.txt"
        if i % 3 == 0:
            # Appends at the same place as the other third: a textual conflict on merge.
            run += f"; echo {tid} >> shared/registry.txt; echo '- {tid}' >> CHANGELOG.md"
        (path / ".gitexec" / "tickets" / f"{tid}.yaml").write_text(
            f"id: {tid}\ntitle: Ticket {tid}\nestimate: 1s\nrun: {json.dumps(run)}\n"
        )
    subprocess.run(["git", "add", "-A"], cwd=path, check=True, env=ENV)
    subprocess.run(["git", "commit", "-q", "-m", "workload"], cwd=path, check=True, env=ENV)


def measure(work: Path, name: str, ladder: str, tickets: int, jobs: int) -> dict[str, Any]:
    repo = work / name
    make_repo(repo, tickets, ladder)
    start = time.perf_counter()
    proc = gitexec(repo, "run", "--no-monitor", "--run-id", name, "--jobs", str(jobs))
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{name}: gitexec run failed:\n{proc.stdout}{proc.stderr}")
    status = run_status(repo, name)
    m = status["metrics"]
    registry = subprocess.run(
        ["git", "show", f"gitexec/{name}:shared/registry.txt"],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        "on_conflict": ladder,
        "completed": m["completed"],
        "total": m["total"],
        "conflict": m["conflict"],
        "conflicts_seen": m["conflicts"],
        "auto_resolved": m["conflicts_auto_resolved"],
        "auto_resolved_pct": m["conflicts_auto_resolved_pct"],
        "registry_lines": len(registry.splitlines()) - 1,
        "wall_s": round(wall, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitexec-conflicts-"))
    results = {
        name: measure(work, name, ladder, args.tickets, args.jobs)
        for name, ladder in LADDERS.items()
    }
    print(f"{'':10} {'completed':>9} {'conflicts':>9} {'resolved':>8} {'wall s':>7}")
    for name, r in results.items():
        print(
            f"{name:10} {r['completed']:>4}/{r['total']:<4} {r['conflicts_seen']:>9} "
            f"{r['auto_resolved_pct']:>7}% {r['wall_s']:>7}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
