"""`git exec status`, `agents` and `monitor`: a run as its journal tells it, live or after."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from gitexec.agents import read_progress
from gitexec.dashboard import remaining_s, snapshot, spend_text, status_word
from gitexec.errors import EXIT_OK, UserError
from gitexec.fields import format_duration
from gitexec.journal import JOURNAL, load_events, lock_holder
from gitexec.resources import cpu_text, live_usage, memory_text
from gitexec.runstate import RUNS_DIR, RunState, RunStatus, list_runs, load_run
from gitexec.tickets import TicketState
from gitexec.workspace import Workspace


def pick_run(ws: Workspace, run_id: str | None) -> str:
    """The run named, else the live one, else the newest."""
    ws.require_readable(ws.state_dir / RUNS_DIR)
    runs = list_runs(ws.state_dir)
    if run_id is not None:
        if run_id not in runs:
            raise UserError(f"no run {run_id!r} (runs: {', '.join(runs[-5:]) or 'none'})")
        return run_id
    holder = lock_holder(ws.state_dir)
    if holder and holder.startswith("run "):
        live = holder[4:].split(",", 1)[0]
        if live in runs:
            return live
    if not runs:
        raise UserError("no runs yet in this repository (start one with `git exec run`)")
    return runs[-1]


def journal_warnings(ws: Workspace, run_id: str, problems: Sequence[str]) -> None:
    """Name the journal lines a reader skipped, on stderr; the command goes on."""
    if not problems:
        return
    where = ws.shown(ws.state_dir / RUNS_DIR / run_id / JOURNAL)
    for problem in problems[:_SHOWN_PROBLEMS]:
        print(f"gitexec: warning: {where}: {problem}", file=sys.stderr)
    if len(problems) > _SHOWN_PROBLEMS:
        more = len(problems) - _SHOWN_PROBLEMS
        print(f"gitexec: warning: {where}: {more} more line(s) skipped", file=sys.stderr)


_SHOWN_PROBLEMS = 20


def load_checked(ws: Workspace, run_id: str) -> RunState:
    """A run as its journal tells it, with the lines that did not fit named on stderr."""
    state = load_run(ws.state_dir, run_id)
    journal_warnings(ws, run_id, state.problems)
    return state


def _progress_of(ws: Workspace, run_id: str) -> Callable[[str], float | None]:
    base = ws.state_dir / RUNS_DIR / run_id / "progress"
    return lambda tid: read_progress(base / tid)


def status(ws: Workspace, *, run_id: str | None, fmt: str) -> int:
    rid = pick_run(ws, run_id)
    state = load_checked(ws, rid)
    now = time.time() if state.status in (RunStatus.RUNNING, RunStatus.PAUSED) else None
    if fmt == "json":
        data = state.to_json(now)
        for tid, t in state.tickets.items():
            usage = live_usage(state, t)
            if usage is not None:  # running agents: what they use now
                data["tickets"][tid].update(cpu_percent=usage.cpu_percent, rss_mb=usage.rss_mb)
        print(json.dumps(data, indent=2))
        return EXIT_OK
    m = state.metrics(now)
    print(
        f"run {state.run_id}: {state.status.value}"
        + (" (paused)" if state.paused and state.status is not RunStatus.PAUSED else "")
    )
    print(
        f"  base {state.base_rev} ({state.base[:12]}), "
        f"head {state.head[:12]} on {state.integration}"
    )
    print(
        f"  {m['completed']}/{m['total']} completed, {m['running']} running, {m['pending']} pending"
        + "".join(f", {m[k]} {k}" for k in ("failed", "conflict", "blocked", "cancelled") if m[k])
        + f"; wall {format_duration(m['wall_s'])}, parallelism {m['parallelism_factor']:g}x"
        + (f", gates {format_duration(m['gate_s'])}" if m["gate_s"] else "")
        + (f"; spent {spend_text(m)}" if spend_text(m) != "-" else "")
    )
    if state.status in (RunStatus.RUNNING, RunStatus.PAUSED):
        eta = remaining_s(state, state.jobs, _progress_of(ws, rid))
        print(f"  ETA {format_duration(eta)}")
    if state.status is RunStatus.CRASHED:
        print("  the engine is gone: `git exec resume` continues this run")
    width = max([len(t) for t in state.tickets] + [6])
    print(
        f"  {'ticket':<{width}}  {'status':<10} {'try':>3}  {'agent':<8} {'slot':>4}  "
        f"{'time':>7}  detail"
    )
    for tid, t in sorted(state.tickets.items()):
        detail = t.reason or t.note or (t.merge_commit or t.commit or "")[:12]
        slot = str(t.slot) if t.slot else "-"
        took = t.agent_s + (now - t.agent_started_at if now and t.agent_started_at else 0.0)
        print(
            f"  {tid:<{width}}  {status_word(t):<10} {t.attempts:>3}  {t.agent:<8} {slot:>4}  "
            f"{format_duration(took):>7}  {detail}"
        )
    for w in state.warnings:
        print(f"  warning: {w}")
    return EXIT_OK


def agent_rows(state: RunState, progress: Callable[[str], float | None]) -> list[dict[str, Any]]:
    snap = snapshot(state, jobs=state.jobs, progress=progress, eta_s=None)
    rows = []
    for r in snap.rows:
        t = state.tickets.get(r.ticket)
        usage = live_usage(state, t) if t is not None and r.agent_id != "-" else None
        rows.append(
            {
                "agent_id": r.agent_id,
                "ticket": r.ticket,
                "status": r.status,
                "progress": None if r.progress is None else round(r.progress),
                "eta": r.eta,
                "cpu_percent": None if usage is None else usage.cpu_percent,
                "rss_mb": None if usage is None else usage.rss_mb,
            }
        )
    return rows


def agent_metrics(state: RunState) -> dict[str, dict[str, Any]]:
    """Per agent (claude, shell, ...): how its tickets went."""
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "tickets": 0,
            "completed": 0,
            "failed": 0,
            "attempts": 0,
            "agent_s": 0.0,
            "throttled": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "cpu_s": 0.0,
            "peak_rss_mb": None,
        }
    )
    for t in state.tickets.values():
        m = out[t.agent]
        m["tickets"] += 1
        m["cpu_s"] += t.cpu_s
        if t.peak_rss_mb is not None:
            m["peak_rss_mb"] = max(m["peak_rss_mb"] or 0.0, t.peak_rss_mb)
        m["attempts"] += t.attempts
        m["agent_s"] += t.agent_s
        m["throttled"] += t.throttles
        if t.usage is not None:
            m["input_tokens"] += t.usage.input_tokens
            m["output_tokens"] += t.usage.output_tokens
        cost = t.total_cost_usd
        if m["cost_usd"] is not None:
            m["cost_usd"] = None if t.cost_unknown else m["cost_usd"] + (cost or 0.0)
        if t.status is TicketState.COMPLETED:
            m["completed"] += 1
        elif t.status in (TicketState.FAILED, TicketState.CONFLICT):
            m["failed"] += 1
    for m in out.values():
        m["average_s"] = round(m["agent_s"] / m["completed"], 3) if m["completed"] else None
        m["agent_s"] = round(m["agent_s"], 3)
        m["cpu_s"] = round(m["cpu_s"], 3)
        if m["cost_usd"] is not None:
            m["cost_usd"] = round(m["cost_usd"], 6)
    return dict(sorted(out.items()))


def agents(ws: Workspace, *, run_id: str | None, fmt: str, include_metrics: bool) -> int:
    rid = pick_run(ws, run_id)
    state = load_checked(ws, rid)
    rows = agent_rows(state, _progress_of(ws, rid))
    metrics = agent_metrics(state) if include_metrics else None
    if fmt == "json":
        out: dict[str, Any] = {"run": rid, "state": state.status.value, "agents": rows}
        if metrics is not None:
            out["metrics"] = metrics
        print(json.dumps(out, indent=2))
        return EXIT_OK
    head = f"{'Agent ID':<12} | {'Ticket':<14} | {'Status':<11} | {'Progress':>8} | {'ETA':<7}"
    print(f"{head} | CPU/RSS")
    print(f"{'-' * 12}-+-{'-' * 14}-+-{'-' * 11}-+-{'-' * 8}-+-{'-' * 7}-+--------")
    for r in rows:
        p = "-" if r["progress"] is None else f"{r['progress']}%"
        usage = "-"
        if r["cpu_percent"] is not None:
            usage = f"{r['cpu_percent']:.0f}% {memory_text(r['rss_mb'])}"
        print(
            f"{r['agent_id']:<12} | {r['ticket']:<14} | {r['status']:<11} | {p:>8} | "
            f"{r['eta']:<7} | {usage}"
        )
    if metrics:
        print()
        print(
            f"{'agent':<10} {'tickets':>7} {'done':>5} {'failed':>6} {'tries':>5} {'avg':>8} "
            f"{'tokens':>9} {'cost':>10} {'cpu':>8} {'peak rss':>8}"
        )
        for name, m in metrics.items():
            avg = format_duration(m["average_s"]) if m["average_s"] is not None else "-"
            tokens = m["input_tokens"] + m["output_tokens"]
            cost = "unknown" if m["cost_usd"] is None else f"${m['cost_usd']:.4f}"
            print(
                f"{name:<10} {m['tickets']:>7} {m['completed']:>5} {m['failed']:>6} "
                f"{m['attempts']:>5} {avg:>8} {tokens:>9} {cost:>10} "
                f"{cpu_text(m['cpu_s']):>8} {memory_text(m['peak_rss_mb']):>8}"
            )
    return EXIT_OK


def monitor(ws: Workspace, *, run_id: str | None, refresh_s: float, dashboard: bool | None) -> int:
    """Follow a run from another terminal until it finishes (Ctrl-C to leave)."""
    from gitexec.dashboard import describe, render
    from gitexec.runstate import replay

    rid = pick_run(ws, run_id)
    path = ws.state_dir / RUNS_DIR / rid / JOURNAL
    progress = _progress_of(ws, rid)
    use_rich = dashboard if dashboard is not None else sys.stdout.isatty()
    seen = warned = 0
    lines: list[str] = []
    live = None
    if use_rich:
        from rich.console import Console
        from rich.live import Live

        live = Live(console=Console(), refresh_per_second=4)
        live.start()
    try:
        while True:
            loaded = load_events(path)
            journal_warnings(ws, rid, loaded.problems[warned:])
            warned = len(loaded.problems)
            events = loaded.events
            state = replay(rid, events)
            for e in events[seen:]:
                line = describe(e, state)
                if line:
                    lines.append(line)
                    if live is None:
                        print(line, flush=True)
            seen = len(events)
            current = load_run(ws.state_dir, rid)
            state.status = current.status
            if live is not None:
                from collections import deque

                snap = snapshot(
                    state,
                    jobs=state.jobs,
                    progress=progress,
                    eta_s=remaining_s(state, state.jobs, progress),
                )
                live.update(render(snap, deque(lines[-8:], maxlen=8)))
            if state.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
                break
            time.sleep(refresh_s)
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return EXIT_OK
