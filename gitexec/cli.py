"""Command-line interface: argparse in, typed calls into gitexec.commands out."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gitexec import __version__, cliargs
from gitexec.config import Strategy
from gitexec.errors import EXIT_OK, run_guarded, tolerant_output
from gitexec.workspace import Workspace

Handler = Callable[[argparse.Namespace, Workspace], int]


def _comma_list(values: Sequence[str] | None) -> list[str]:
    """`--x a,b --x c` -> [a, b, c]."""
    return [v for item in values or () for v in item.split(",") if v.strip()]


# --- handlers: Namespace -> typed call ------------------------------------------------------


def _check(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.check import check

    return check(ws, a.files, fmt=a.format, use_cache=not a.no_cache, strict=a.strict)


def _plan(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands import plan

    if a.update:
        return plan.update(ws, strategy=a.strategy, jobs=a.jobs)
    return plan.plan(
        ws,
        strategy=a.strategy,
        jobs=a.jobs,
        output=a.output,
        fmt=a.format,
        history=a.history,
    )


def _diagnose(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.diagnose import diagnose

    return diagnose(
        ws,
        conflicts=a.check_conflicts,
        bottlenecks=a.analyze_bottlenecks,
        strategy=a.strategy,
        jobs=a.jobs,
        fmt=a.format,
    )


def _init(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scaffold import init

    return init(ws, jobs=a.jobs)


def _new(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scaffold import new

    return new(
        ws,
        a.id,
        title=a.title,
        depends_on=_comma_list(a.depends_on),
        agent=a.agent,
        paths=_comma_list(a.paths),
        estimate=a.estimate,
        priority=a.priority,
        run=a.run,
        prompt=a.prompt,
        validate=a.validate or [],
    )


def _run(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.run import RunRequest, run

    return run(
        ws,
        RunRequest(
            plan_file=a.plan,
            jobs=a.jobs,
            base=a.base,
            run_id=a.run_id,
            only=tuple(_comma_list(a.only)),
            with_deps=a.with_deps,
            dry_run=a.dry_run,
            barrier=a.barrier,
            allow_overlap=a.allow_overlap,
            into=a.into,
            monitor=a.monitor,
            strategy=a.strategy,
            junit=a.junit,
            markdown=a.markdown,
            validate=a.validate,
            budget_usd=a.budget_usd,
        ),
    )


def _report(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.report import report

    return report(ws, run_id=a.run, junit=a.junit, markdown=a.markdown, github=a.github)


def _status(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.status import status

    return status(ws, run_id=a.run, fmt=a.format)


def _runs(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.runs import runs

    return runs(ws, fmt=a.format)


def _history(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.history import history

    return history(ws, fmt=a.format, ticket=a.ticket, limit=a.limit)


def _agents(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.status import agents

    return agents(ws, run_id=a.run, fmt=a.format, include_metrics=a.include_metrics)


def _monitor(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.status import monitor

    return monitor(ws, run_id=a.run, refresh_s=a.refresh, dashboard=a.dashboard)


def _clean(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.clean import clean

    return clean(ws, run_id=a.run, everything=a.all)


def _pause(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import pause

    return pause(ws, run_id=a.run, wait=a.wait_for_completion)


def _resume(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import resume

    return resume(
        ws,
        run_id=a.run,
        validate_state=a.validate_state,
        monitor=a.monitor,
        junit=a.junit,
        markdown=a.markdown,
        onto=a.onto,
        budget_usd=a.budget_usd,
    )


def _stop(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import stop

    return stop(ws, run_id=a.run, force=a.force, preserve_state=a.preserve_state)


def _adjust(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import adjust

    delta = a.increase_parallelism - a.decrease_parallelism
    return adjust(
        ws,
        run_id=a.run,
        jobs=a.jobs,
        delta=delta,
        priorities=dict(a.priority or []),
        quotas=dict(a.quota or []),
        resources=dict(a.resource or []),
        agents=dict(a.agent or []),
    )


def _enqueue(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.replan import enqueue

    return enqueue(ws, run_id=a.run, items=a.tickets, rev=a.rev)


def _cancel(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.replan import cancel

    return cancel(ws, run_id=a.run, tickets=a.ids, force=a.force)


def _retry(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import retry

    return retry(ws, run_id=a.run, ticket=a.id, keep_worktree=a.keep_worktree)


def _reassign(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import reassign

    return reassign(ws, run_id=a.run, ticket=a.id, agent=a.agent)


def _fallback_sequential(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.control import fallback_sequential

    return fallback_sequential(ws, run_id=a.run, group=a.group)


def _matrix(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scale import matrix

    return matrix(ws, wave=a.wave, count=a.count)


def _run_ticket(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scale import run_ticket

    return run_ticket(ws, a.id, base=a.base, out=a.out, run_id=a.run_id, state=a.state)


def _collect(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scale import collect

    return collect(
        ws,
        a.dirs,
        run_id=a.run_id,
        base=a.base,
        out=a.out,
        junit=a.junit,
        markdown=a.markdown,
        keep_going=a.keep_going,
    )


def _workflow(a: argparse.Namespace, ws: Workspace) -> int:
    from gitexec.commands.scale import workflow

    return workflow(ws, output=a.output, install=a.install, runs_on=a.runs_on)


# --- parser ---------------------------------------------------------------------------------


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategy",
        type=cliargs.strategy,
        metavar="{" + ",".join(s.value for s in Strategy) + "}",
        help="planning strategy (default: plan.strategy in config, else balanced)",
    )
    p.add_argument("--jobs", "-j", type=cliargs.positive_int, metavar="N", help="agent slots")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="git exec",
        description="Run a repository's tickets in parallel git worktrees and merge the results.",
        epilog="`git exec COMMAND -h` shows a command's options; `git exec --help` the manual.",
    )
    parser.add_argument("--version", action="version", version=f"gitexec {__version__}")
    parser.add_argument(
        "-C",
        dest="directory",
        metavar="DIR",
        default=".",
        help="run as if started in DIR (like git -C)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = command("demo", _init, "run the whole pipeline on an embedded example project")
    p.add_argument("--dir", metavar="DIR", help="where to create it (default: a temp dir)")
    p.add_argument("--jobs", "-j", type=cliargs.positive_int, metavar="N")
    p.add_argument("--monitor", action=argparse.BooleanOptionalAction, default=None)

    p = command("init", _init, "scaffold .gitexec/ with a config and an example ticket")
    p.add_argument("--jobs", "-j", type=cliargs.positive_int, default=4, metavar="N")

    p = command("new", _new, "add a ticket file")
    p.add_argument("id", metavar="ID")
    p.add_argument("--title")
    p.add_argument("--depends-on", action="append", metavar="IDS", help="comma-separated")
    p.add_argument("--agent")
    p.add_argument("--paths", action="append", metavar="GLOBS", help="declared scope")
    p.add_argument("--estimate", metavar="DURATION", help="e.g. 30m")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--run", metavar="CMD", help="command for the shell agent")
    p.add_argument("--prompt", help="task description for AI agents")
    p.add_argument("--validate", action="append", metavar="CMD", help="quality gate command")

    p = command("check", _check, "validate tickets, config and the committed plan")
    p.add_argument("files", nargs="*", metavar="FILE", help="only report on these files")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--no-cache", action="store_true", help="parse every file again")
    p.add_argument("--strict", action="store_true", help="warnings are errors too (exit 1)")

    p = command("plan", _plan, "group tickets for parallel execution")
    _add_plan_options(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the plan to FILE")
    p.add_argument("--format", choices=("yaml", "json", "mermaid"))
    p.add_argument(
        "--update",
        action="store_true",
        help=".gitexec/plan.yaml: regenerate it if present; exit 1 when it changed (hook mode)",
    )
    p.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="estimate tickets without an `estimate` from past runs (default; never for "
        "the committed .gitexec/plan.yaml)",
    )

    p = command("run", _run, "run tickets in pooled worktrees and merge their results")
    p.add_argument("plan", nargs="?", metavar="PLAN", help="a plan file (default: plan now)")
    _add_plan_options(p)
    p.add_argument("--base", metavar="REV", help="revision to start from (default: HEAD)")
    p.add_argument("--run-id", metavar="ID", help="name of the run (default: date-time-random)")
    p.add_argument("--only", action="append", metavar="IDS", help="run only these tickets")
    p.add_argument("--with-deps", action="store_true", help="with --only: also their dependencies")
    p.add_argument("--dry-run", action="store_true", help="show what would run, where, when")
    p.add_argument("--barrier", action="store_true", help="run plan groups one after another")
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="let tickets with overlapping declared paths run at the same time",
    )
    p.add_argument("--into", metavar="BRANCH", help="merge the result into BRANCH at the end")
    p.add_argument(
        "--budget-usd",
        type=cliargs.usd,
        metavar="USD",
        help="stop starting tickets once agents have spent this much (config: budget.run_usd)",
    )
    p.add_argument(
        "--monitor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live dashboard (default: on a terminal); --no-monitor: summary only",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="at the end, check that ticket files record the outcome and the gates pass",
    )
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")

    p = command("report", _report, "JUnit and Markdown reports of a run (any state)")
    p.add_argument("--run", metavar="ID", help="default: the running run, else the newest")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report (default: print it)")
    p.add_argument(
        "--github",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="publish to GitHub Actions (default: when GITHUB_ACTIONS=true)",
    )

    p = command("status", _status, "state of a run (while it runs and after)")
    p.add_argument("--run", metavar="ID", help="default: the running run, else the newest")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command("runs", _runs, "list the runs of this repository: state, age, tickets, branch")
    p.add_argument("--format", choices=("table", "json"), default="table")

    p = command(
        "history", _history, "what past runs tell: slowest, flaky, conflict hot spots, agents"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--ticket", metavar="ID", help="this ticket's past runs")
    p.add_argument("--limit", type=cliargs.positive_int, metavar="N", help="only the newest N runs")

    p = command("agents", _agents, "agent status matrix of a run")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--include-metrics", action="store_true", help="per-agent totals")

    p = command("monitor", _monitor, "follow a running run from another terminal")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--refresh", type=cliargs.duration, default=1.0, metavar="DURATION")
    p.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rich dashboard (default on a terminal) or one line per event",
    )

    p = command("clean", _clean, "remove pooled worktrees, result refs and old runs")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--run", metavar="ID", help="remove this run entirely")
    group.add_argument("--all", action="store_true", help="remove every run and its branch")

    p = command("pause", _pause, "stop starting new tickets in a live run")
    p.add_argument("--run", metavar="ID")
    p.add_argument(
        "--wait-for-completion", action="store_true", help="return when running tickets finished"
    )

    p = command("resume", _resume, "resume a paused run, or continue a crashed or stopped one")
    p.add_argument("--run", metavar="ID")
    p.add_argument(
        "--validate-state",
        action="store_true",
        help="check journal, refs and worktrees first (repairing what is safe)",
    )
    p.add_argument(
        "--budget-usd", type=cliargs.usd, metavar="USD", help="a new budget for the run's spend"
    )
    p.add_argument(
        "--onto",
        choices=("journal", "current"),
        help="when someone else moved the integration branch: put it back where the run "
        "left it (journal; what it pointed at is kept under refs/gitexec-displaced/), or "
        "continue from where it is now (current; tickets missing from it merge again)",
    )
    p.add_argument("--monitor", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")

    p = command("stop", _stop, "stop a live run")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--force", action="store_true", help="kill running agents")
    p.add_argument(
        "--preserve-state", action="store_true", help="keep the run resumable (else cancel)"
    )

    p = command("adjust", _adjust, "change a live run: parallelism, priorities")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--jobs", "-j", type=cliargs.positive_int, metavar="N")
    p.add_argument("--increase-parallelism", action="count", default=0, help="one more slot")
    p.add_argument("--decrease-parallelism", action="count", default=0, help="one slot fewer")
    p.add_argument("--priority", action="append", type=cliargs.priority, metavar="ID=N")
    p.add_argument(
        "--quota",
        action="append",
        type=cliargs.quota,
        metavar="POOL=N",
        help="agents of POOL at once",
    )
    p.add_argument(
        "--resource",
        action="append",
        type=cliargs.capacity,
        metavar="NAME=N",
        help="a resource's capacity",
    )
    p.add_argument(
        "--agent",
        action="append",
        type=cliargs.quota,
        metavar="NAME=N",
        help="an agent's max_parallel",
    )

    p = command("retry", _retry, "requeue a failed ticket and the tickets it blocked")
    p.add_argument("id", metavar="ID")
    p.add_argument("--run", metavar="ID")
    p.add_argument(
        "--keep-worktree",
        action="store_true",
        help="start from what the failed attempt left in its worktree, not afresh",
    )

    p = command("enqueue", _enqueue, "add tickets to a live, paused or resumable run")
    p.add_argument("tickets", nargs="+", metavar="FILE|ID")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--rev", metavar="REV", help="read the tickets from this revision")

    p = command("cancel", _cancel, "cancel pending tickets of a run (running ones with --force)")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--run", metavar="ID")
    p.add_argument("--force", action="store_true", help="also stop running tickets' agents")

    p = command("reassign", _reassign, "run a ticket with another agent")
    p.add_argument("id", metavar="ID")
    p.add_argument("--agent", required=True, metavar="NAME")
    p.add_argument("--run", metavar="ID")

    p = command(
        "fallback-sequential", _fallback_sequential, "run a plan group's tickets one at a time"
    )
    p.add_argument("group", type=int, metavar="GROUP")
    p.add_argument("--run", metavar="ID")

    p = command("matrix", _matrix, "a plan wave as a GitHub Actions matrix (scale-out)")
    p.add_argument("--wave", type=cliargs.positive_int, metavar="N", help="plan group N (1-based)")
    p.add_argument("--count", action="store_true", help="print the number of waves")

    p = command("run-ticket", _run_ticket, "run one ticket and write a bundle + result")
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", required=True, metavar="DIR", help="where <ID>.json|.bundle go")
    p.add_argument("--base", metavar="REV", help="start from REV (default: HEAD)")
    p.add_argument("--state", metavar="DIR", help="start from a collect's exported state")
    p.add_argument("--run-id", metavar="ID", help="the run this ticket belongs to")

    p = command("collect", _collect, "merge run-ticket results into a run, in plan order")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="result and state directories")
    p.add_argument("--run-id", required=True, metavar="ID")
    p.add_argument("--base", metavar="REV", help="for the first collect of a run")
    p.add_argument("--out", metavar="DIR", help="export the run's state for the next wave")
    p.add_argument(
        "--keep-going", action="store_true", help="exit 0 even if tickets failed (middle waves)"
    )
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")

    p = command("workflow", _workflow, "generate a GitHub Actions workflow: one job per wave")
    p.add_argument("-o", "--output", metavar="FILE", help="write it here (default: print)")
    p.add_argument(
        "--install",
        default="gitexec",
        metavar="SPEC",
        help="pip requirement that installs gitexec on the runners",
    )
    p.add_argument("--runs-on", default="ubuntu-latest", metavar="LABEL")

    p = command("diagnose", _diagnose, "predicted conflicts, bottlenecks and advice")
    p.add_argument("--check-conflicts", action="store_true")
    p.add_argument("--analyze-bottlenecks", action="store_true")
    _add_plan_options(p)
    p.add_argument("--format", choices=("text", "json"), default="text")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse: usage error (2) or -h/--version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_OK

    def call() -> int:
        if args.command == "demo":
            from gitexec.commands.demo import demo

            return demo(args.dir, jobs=args.jobs, monitor=args.monitor)
        ws = Workspace.find(Path(args.directory))
        result: int = args.handler(args, ws)
        return result

    with tolerant_output():
        return run_guarded(call, args_list)
