"""Benchmark `gitexec check`, the pre-commit hook, through the real CLI.

For each size N it builds a committed repository of N valid tickets (benchmarks/_tickets.py)
and times `python -m gitexec check` as a subprocess, the way pre-commit runs it:

- cold: `<repo>/.git/gitexec/cache` removed before every run (every ticket parsed);
- warm: cache present, files unchanged (the common case on a commit);
- warm, racy: like warm, but the cache was filled while the files looked freshly modified.

The interpreter + `import gitexec.cli` cost is timed too, so the check's own cost shows
("own" = median over rounds of check time minus that round's import time). Every figure is
a median over `--repeat` rounds; a round times every size and kind once, round-robin, so
load from other processes on a shared machine hits all of them alike. "Cold" still means
a warm OS page cache (each repository is checked once before timing, which also verifies
that it is valid and has exactly N tickets).

The racy-entry rule (gitexec/cache.py): a file whose mtime is within 2 s of "now" when it
is parsed could change again without its stat changing ("racy git"), so its cache entry
also keeps a content digest, and every later hit re-reads and hashes the file. That is
correct but slower, and nothing upgrades such an entry once the file has aged. The ticket
files are therefore aged by 10 s (os.utime) before any timing, so "warm" measures the
stat-only path; "warm, racy" sets mtimes into the future before filling the cache, so every
entry carries a digest, and shows what that path costs.

    python benchmarks/bench_check.py                       # N = 50 and 5000
    python benchmarks/bench_check.py --sizes 50 500 5000 --repeat 15 --json check.json
    python benchmarks/bench_check.py --work /tmp/bench --profile   # keep repos; cProfile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _tickets import Runner, age_files, cache_dir, hermetic_env, make_repo, ticket_files

import gitexec

CHECK = ("-m", "gitexec", "check")
IMPORT = ("-c", "import gitexec.cli")
KINDS = ("import", "cold", "warm", "warm_racy")


@dataclass
class Case:
    """One ticket-set size: its repositories and the timings collected so far."""

    n: int
    repo: Path
    racy_repo: Path | None  # same tickets, cache filled while the files looked fresh
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


def verify(runner: Runner, repo: Path, n: int) -> None:
    """The repository checks clean with exactly `n` tickets (and the page cache is warm)."""
    _, out = runner.run(repo, (*CHECK, "--no-cache", "--format", "json"))
    result = json.loads(out)
    if not result["ok"] or result["tickets"] != n or result["findings"]:
        sys.exit(f"unexpected check result in {repo}: {out[:2000]}")


def prepare(runner: Runner, work: Path, n: int, args: argparse.Namespace) -> Case:
    start = time.perf_counter()
    repo = work / f"check-{n}"
    make_repo(repo, n, args.seed, runner.env)
    verify(runner, repo, n)
    racy_repo = None
    if args.racy:
        racy_repo = work / f"check-{n}-racy"
        make_repo(racy_repo, n, args.seed, runner.env)
        # mtimes 60 s in the future are inside the racy window however long the fill takes;
        # the entries keep their digests afterwards, so every later hit re-reads the file.
        age_files(ticket_files(racy_repo), -60.0)
        runner.run(racy_repo, CHECK)
    print(f"N={n}: repositories built and verified in {time.perf_counter() - start:.1f}s")
    return Case(n, repo, racy_repo)


def measure(runner: Runner, cases: list[Case], repeat: int) -> None:
    """Round-robin over sizes and kinds, so load drift on a shared machine hits all alike."""
    for r in range(repeat):
        for case in cases:
            case.samples["import"].append(runner.run(case.repo, IMPORT)[0])
            shutil.rmtree(cache_dir(case.repo), ignore_errors=True)
            case.samples["cold"].append(runner.run(case.repo, CHECK)[0])
            if r == 0 and not any(cache_dir(case.repo).iterdir()):
                sys.exit(f"check wrote no cache under {cache_dir(case.repo)}")
            case.samples["warm"].append(runner.run(case.repo, CHECK)[0])
            if case.racy_repo is not None:
                case.samples["warm_racy"].append(runner.run(case.racy_repo, CHECK)[0])
        print(f"round {r + 1}/{repeat} done", flush=True)


def summarize(case: Case) -> dict[str, Any]:
    row: dict[str, Any] = {"n": case.n}
    for kind, times in case.samples.items():
        if times:
            row[f"{kind}_s"] = statistics.median(times)
            row[f"{kind}_min_s"] = min(times)
    # Own cost: the median of per-round differences (each round times both back to back).
    base = case.samples["import"]
    for kind in KINDS[1:]:
        times = case.samples[kind]
        if times:
            own = [t - b for t, b in zip(times, base, strict=True)]
            row[f"{kind}_own_s"] = statistics.median(own)
    row["samples"] = {k: v for k, v in case.samples.items() if v}
    return row


def profile(runner: Runner, case: Case) -> str:
    """cProfile one warm check (the cache is warm after `measure`)."""
    prof = case.repo.parent / f"check-warm-{case.n}.prof"
    runner.run(case.repo, ("-m", "cProfile", "-o", str(prof), *CHECK))
    return str(prof)


def print_table(rows: list[dict[str, Any]]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}"

    header = ("N", "import", "cold", "warm", "warm racy", "cold own", "warm own", "racy own")
    lines = [header]
    for r in rows:
        lines.append(
            (
                str(r["n"]),
                ms(r["import_s"]),
                ms(r["cold_s"]),
                ms(r["warm_s"]),
                ms(r.get("warm_racy_s")),
                ms(r["cold_own_s"]),
                ms(r["warm_own_s"]),
                ms(r.get("warm_racy_own_s")),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("median wall time in ms ('own' = minus interpreter + import gitexec.cli)")
    for line in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)))


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    small, large = rows[0], rows[-1]
    out = {
        "size_ratio": large["n"] / small["n"],
        "warm_ratio": large["warm_s"] / small["warm_s"],
        "warm_min_ratio": large["warm_min_s"] / small["warm_min_s"],
        "warm_own_ratio": large["warm_own_s"] / max(small["warm_own_s"], 1e-3),
        "cold_ratio": large["cold_s"] / small["cold_s"],
    }
    a, b = large["n"], small["n"]
    print(
        f"warm({a})/warm({b}) = {out['warm_ratio']:.2f} (of minimums: "
        f"{out['warm_min_ratio']:.2f}); own warm cost {large['warm_own_s'] * 1000:.0f} ms vs "
        f"{small['warm_own_s'] * 1000:.0f} ms; cold({a})/cold({b}) = {out['cold_ratio']:.1f}; "
        f"size ratio {out['size_ratio']:g}"
    )
    return out


def print_profiles(rows: list[dict[str, Any]], limit: int) -> None:
    """gitexec's own functions by cumulative time, then the hottest functions overall."""
    for r in rows:
        if "profile" in r:
            print(f"\n--- cProfile of a warm check, N={r['n']} ({r['profile']}) ---")
            stats = pstats.Stats(r["profile"], stream=sys.stdout).strip_dirs()
            own = r"^(project|cache|plan|workspace|check)\.py"
            stats.sort_stats("cumulative").print_stats(own, limit)
            stats.sort_stats("tottime").print_stats(limit)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 5000], metavar="N")
    p.add_argument("--repeat", type=int, default=10, help="rounds (samples per median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="keep repositories here (default: a temp dir)")
    p.add_argument("--python", default=sys.executable, help="interpreter running gitexec")
    p.add_argument(
        "--racy", action=argparse.BooleanOptionalAction, default=True, help="time racy entries"
    )
    p.add_argument("--profile", action="store_true", help="cProfile a warm check, largest N")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted(set(args.sizes))
    with tempfile.TemporaryDirectory(prefix="gitexec-bench-check-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        runner = Runner(args.python, hermetic_env(work))
        cases = [prepare(runner, work, n, args) for n in sizes]
        measure(runner, cases, args.repeat)
        rows = [summarize(c) for c in cases]
        if args.profile:
            rows[-1]["profile"] = profile(runner, cases[-1])
        print()
        print_table(rows)
        summary = ratios(rows) if len(rows) > 1 else {}
        print_profiles(rows, 15)
    if args.json:
        meta = {
            "benchmark": "check",
            "gitexec": gitexec.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "repeat": args.repeat,
            "seed": args.seed,
        }
        args.json.write_text(
            json.dumps({**meta, "rows": rows, "ratios": summary}, indent=2) + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
