"""Benchmark planning: `make_plan` per strategy at 10,000 and 100,000 tickets, and the CLI.

In process, for each size N (benchmarks/_tickets.py: a layered DAG with a few long chains):
- linear walk: one pass reading each ticket's priority and dependencies, the linear
  reference (what "linear" costs on this machine once the tickets outgrow the CPU caches);
- graph+topo: `Graph(tickets)` + `topological_order()`, the least any plan must do;
- `make_plan(tickets, strategy, jobs, 600 s)` for every strategy, and `render_yaml` of it.
Each figure is the median of `--repeat` rounds (round-robin over strategies; a full
`gc.collect()` before each timing, the collector left on as in the CLI). Every plan is
checked (each ticket once, after its dependencies, at most `jobs` per group where capped).

The scaling table gives time(largest N) / time(smallest N) and the exponent k of
time ~ N^k: from 10,000 to 100,000, a ratio of 10 (k = 1.0) is linear, 12.5 (k = 1.1)
n log n, 100 (k = 2) quadratic. Ratios are also shown relative to the linear walk's ratio, which
factors out what the machine does with a 10x bigger heap: 10,000 tickets (~14 MB) fit in
a 32 MB L3 cache, 100,000 do not, so even the walk grows more than 10x.

End to end: `python -m gitexec plan --strategy balanced --jobs 8 -o FILE` on a committed
`--cli-size` ticket repository, with the parse cache removed (cold) and present (warm),
plus the bare `python -c "import gitexec.cli"` cost. FILE is a scratch file in the work
directory, not /dev/null: `plan -o` replaces its target (temp file + rename), which as
root would replace the /dev/null device node with a regular file.

    python benchmarks/bench_plan.py                           # N = 10,000 and 100,000
    python benchmarks/bench_plan.py --sizes 10000 30000 100000 --json plan.json
    python benchmarks/bench_plan.py --profile balanced --cli-size 0   # per-function scaling
    python benchmarks/bench_plan.py --scope shared --sizes 2000 20000 --strategies conservative

`--scope shared` gives every ticket the same broad scope (`src/**`), the worst case for the
conservative strategy's overlap separation (one ticket per group).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from _tickets import Runner, cache_dir, generate, hermetic_env, make_repo

import gitexec
from gitexec.config import Strategy
from gitexec.plan import Graph, make_plan
from gitexec.planfile import Plan, render_yaml
from gitexec.tickets import Ticket

T = TypeVar("T")
DEFAULT_ESTIMATE_S = 600.0
LINEAR = "linear walk"
GRAPH = "graph+topo"
WALK_PASSES = 10  # the walk is short; time several passes per sample
SHARED_SCOPE = ("src/**",)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def validate(plan: Plan, tickets: Sequence[Ticket], cap: int | None) -> None:
    """Raise SystemExit unless `plan` is a valid grouping of `tickets`."""
    group_of: dict[str, int] = {}
    for g in plan.groups:
        if cap is not None and len(g.tickets) > cap:
            sys.exit(f"{plan.strategy.value}: group {g.id} has {len(g.tickets)} > {cap} tickets")
        for tid in g.tickets:
            if tid in group_of:
                sys.exit(f"{plan.strategy.value}: {tid} planned twice")
            group_of[tid] = g.id
    if len(group_of) != len(tickets):
        sys.exit(f"{plan.strategy.value}: {len(group_of)} of {len(tickets)} tickets planned")
    for t in tickets:
        for dep in t.depends_on:
            if group_of[dep] >= group_of[t.id]:
                sys.exit(f"{plan.strategy.value}: {t.id} is not planned after {dep}")


def group_cap(strategy: Strategy, jobs: int) -> int | None:
    if strategy is Strategy.MAX_PARALLEL:
        return None
    return max(1, jobs // 2) if strategy is Strategy.CONSERVATIVE else jobs


def bench_size(
    tickets: list[Ticket], strategies: Sequence[Strategy], jobs: int, repeat: int
) -> dict[str, Any]:
    """Median timings for one ticket set: the references, then make_plan/render per strategy."""
    samples: dict[str, list[float]] = {LINEAR: [], GRAPH: []}
    render: dict[str, list[float]] = {}
    shape: dict[str, dict[str, Any]] = {}
    for s in strategies:
        samples[s.value], render[s.value] = [], []

    def walk() -> int:
        total = 0
        for _ in range(WALK_PASSES):
            for t in tickets:
                total += t.priority + len(t.depends_on)
        return total

    def graph() -> list[int] | None:
        return Graph(tickets).topological_order()

    for r in range(repeat):
        samples[LINEAR].append(timed(walk)[0] / WALK_PASSES)
        samples[GRAPH].append(timed(graph)[0])
        for s in strategies:
            seconds, plan = timed(
                functools.partial(make_plan, tickets, s, jobs, DEFAULT_ESTIMATE_S)
            )
            samples[s.value].append(seconds)
            render[s.value].append(timed(functools.partial(render_yaml, plan))[0])
            if r == 0:
                validate(plan, tickets, group_cap(s, jobs))
                shape[s.value] = {
                    "groups": len(plan.groups),
                    "critical_path": len(plan.critical_path),
                    "makespan_s": plan.makespan_s,
                    "parallelism": plan.parallelism,
                }
    out: dict[str, Any] = {"n": len(tickets), "results": {}}
    for name, times in samples.items():
        entry: dict[str, Any] = {"median_s": statistics.median(times), "samples": times}
        if name in render:
            entry["render_median_s"] = statistics.median(render[name])
            entry.update(shape[name])
        out["results"][name] = entry
    return out


def scaling(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """time(largest)/time(smallest) per row, its exponent, and relative to the linear walk."""
    small, large = rows[0], rows[-1]
    size_ratio = large["n"] / small["n"]
    out: dict[str, dict[str, float]] = {}
    for name in small["results"]:
        for kind in ("median_s", "render_median_s"):
            if kind not in small["results"][name]:
                continue
            ratio = large["results"][name][kind] / small["results"][name][kind]
            label = name if kind == "median_s" else f"{name} render_yaml"
            out[label] = {"ratio": ratio, "exponent": math.log(ratio) / math.log(size_ratio)}
    base = out[LINEAR]["ratio"]
    for entry in out.values():
        entry["vs_linear"] = entry["ratio"] / base
    return out


def table(header: Sequence[str], lines: Sequence[Sequence[str]], left: int = 1) -> None:
    """Print aligned columns: the first `left` left-aligned, the rest right-aligned."""
    rows = [tuple(header), *(tuple(line) for line in lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = zip(r, widths, strict=True)
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(cells)))


def print_results(rows: list[dict[str, Any]], scale: dict[str, dict[str, float]]) -> None:
    print("\nmake_plan and render_yaml, median seconds (jobs as given)")
    lines = []
    for row in rows:
        for name, e in row["results"].items():
            lines.append(
                (
                    f"{row['n']:,}",
                    name,
                    f"{e['median_s']:.4f}",
                    f"{e['render_median_s']:.3f}" if "render_median_s" in e else "-",
                    str(e.get("groups", "-")),
                    str(e.get("critical_path", "-")),
                    f"{e['makespan_s'] / 3600:.0f}h" if "makespan_s" in e else "-",
                )
            )
    table(("N", "strategy", "plan s", "render s", "groups", "crit.path", "makespan"), lines, 2)
    if scale:
        small, large = rows[0]["n"], rows[-1]["n"]
        x = large / small
        nlogn = x * math.log(large) / math.log(small)
        print(
            f"\nscaling {large:,} / {small:,}: linear would be x{x:g}, n log n x{nlogn:.1f}, "
            f"quadratic x{x * x:g}"
        )
        table(
            ("what", "ratio", "exponent", "ratio / linear walk ratio"),
            [
                (name, f"{e['ratio']:.1f}", f"{e['exponent']:.2f}", f"{e['vs_linear']:.2f}")
                for name, e in scale.items()
            ],
        )


def _name(code: str | types.CodeType) -> str:
    if isinstance(code, str):
        return code  # a built-in, e.g. "<built-in method _heapq.heappop>"
    return f"{Path(code.co_filename).name}:{code.co_firstlineno}({code.co_name})"


def profile(
    sizes: Sequence[int],
    make_tickets: Callable[[int], list[Ticket]],
    strategy: Strategy,
    jobs: int,
    limit: int,
) -> list[dict[str, Any]]:
    """cProfile make_plan at each size; show each hot function's growth between sizes."""
    per_size: list[dict[str, tuple[int, float]]] = []
    for n in sizes:
        tickets = make_tickets(n)
        gc.collect()
        prof = cProfile.Profile()
        prof.runcall(make_plan, tickets, strategy, jobs, DEFAULT_ESTIMATE_S)
        per_size.append({_name(e.code): (e.callcount, e.inlinetime) for e in prof.getstats()})
    small, large = per_size[0], per_size[-1]
    hot = sorted(large, key=lambda f: -large[f][1])[:limit]
    print(f"\ncProfile of make_plan({strategy.value}), own time per function")
    size_ratio = sizes[-1] / sizes[0]
    lines = []
    out = []
    for f in hot:
        tt_s = small.get(f, (0, 0.0))[1]
        calls_l, tt_l = large[f]
        ratio = tt_l / tt_s if tt_s > 0 else math.inf
        exponent = math.log(ratio) / math.log(size_ratio) if 0 < ratio < math.inf else math.nan
        lines.append(
            (
                f[:60],
                f"{calls_l:,}",
                f"{tt_s:.3f}",
                f"{tt_l:.3f}",
                f"{ratio:.1f}",
                f"{exponent:.2f}",
            )
        )
        out.append({"function": f, "calls": calls_l, "small_s": tt_s, "large_s": tt_l})
    table(("function", "calls", f"{sizes[0]:,} s", f"{sizes[-1]:,} s", "ratio", "exp"), lines)
    return out


def bench_cli(runner: Runner, work: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Median wall time of `python -m gitexec plan` on a committed n-ticket repository."""
    repo = work / f"plan-{n}"
    start = time.perf_counter()
    make_repo(repo, n, args.seed, runner.env)
    out = work / "plan-out.yaml"
    strategy, jobs = args.cli_strategy.value, str(args.jobs)
    cmd = ("-m", "gitexec", "plan", "--strategy", strategy, "--jobs", jobs, "-o", str(out))
    runner.run(repo, cmd)  # warms the page cache; the plan must be complete
    if out.read_text(encoding="utf-8").count("tickets: [") == 0:
        sys.exit(f"plan wrote no groups to {out}")
    print(f"CLI: {n:,}-ticket repository built in {time.perf_counter() - start:.1f}s", flush=True)
    samples: dict[str, list[float]] = {"import": [], "cold": [], "warm": []}
    for _ in range(args.cli_repeat):  # round-robin, like bench_check
        samples["import"].append(runner.run(repo, ("-c", "import gitexec.cli"))[0])
        shutil.rmtree(cache_dir(repo), ignore_errors=True)
        samples["cold"].append(runner.run(repo, cmd)[0])
        samples["warm"].append(runner.run(repo, cmd)[0])
    result: dict[str, Any] = {"n": n, "strategy": strategy, "jobs": args.jobs}
    for kind, times in samples.items():
        result[f"{kind}_s"] = statistics.median(times)
        if kind != "import":  # own cost: median of per-round differences
            own = [t - b for t, b in zip(times, samples["import"], strict=True)]
            result[f"{kind}_own_s"] = statistics.median(own)
    result["samples"] = samples
    print(
        f"\n`python -m gitexec plan --strategy {strategy} --jobs {jobs} -o FILE`, "
        f"{n:,} tickets, median seconds ('own' = minus interpreter + import gitexec.cli)"
    )
    keys = ("import_s", "cold_s", "warm_s", "cold_own_s", "warm_own_s")
    table(
        ("import gitexec.cli", "cold cache", "warm cache", "cold own", "warm own"),
        [tuple(f"{result[k]:.3f}" for k in keys)],
    )
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], metavar="N")
    p.add_argument(
        "--strategies",
        nargs="+",
        type=Strategy,
        default=list(Strategy),
        metavar="S",
        help="default: " + " ".join(s.value for s in Strategy),
    )
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5, help="rounds per make_plan median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--scope",
        choices=("realistic", "shared"),
        default="realistic",
        help="ticket paths as generated, or src/** for every ticket (in-process only)",
    )
    p.add_argument("--cli-size", type=int, default=10_000, help="0 skips the CLI timing")
    p.add_argument("--cli-repeat", type=int, default=3, help="rounds per CLI median")
    p.add_argument("--cli-strategy", type=Strategy, default=Strategy.BALANCED, metavar="S")
    p.add_argument("--work", type=Path, help="keep the CLI repository here (default: temp dir)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the CLI")
    p.add_argument(
        "--profile",
        type=Strategy,
        metavar="S",
        help="also cProfile make_plan(S) at the smallest and largest size",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted(set(args.sizes))
    report: dict[str, Any] = {
        "benchmark": "plan",
        "gitexec": gitexec.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "repeat": args.repeat,
        "seed": args.seed,
        "scope": args.scope,
    }

    def make_tickets(n: int) -> list[Ticket]:
        tickets = generate(n, args.seed)
        if args.scope == "shared":
            tickets = [dataclasses.replace(t, paths=SHARED_SCOPE) for t in tickets]
        return tickets

    rows = []
    for n in sizes:
        start = time.perf_counter()
        tickets = make_tickets(n)
        print(f"N={n:,}: tickets generated in {time.perf_counter() - start:.1f}s", flush=True)
        rows.append(bench_size(tickets, args.strategies, args.jobs, args.repeat))
        del tickets
    scale = scaling(rows) if len(rows) > 1 else {}
    print_results(rows, scale)
    report.update(rows=rows, scaling=scale)

    if args.profile is not None:
        report["profile"] = profile(sizes, make_tickets, args.profile, args.jobs, 15)

    if args.cli_size:
        with tempfile.TemporaryDirectory(prefix="gitexec-bench-plan-") as tmp:
            work = (args.work or Path(tmp)).resolve()
            work.mkdir(parents=True, exist_ok=True)
            runner = Runner(args.python, hermetic_env(work))
            report["cli"] = bench_cli(runner, work, args.cli_size, args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
