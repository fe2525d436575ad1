"""`git exec runs`: the runs of this repository, oldest first, as their journals tell them."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from gitexec.errors import EXIT_OK
from gitexec.fields import format_duration
from gitexec.runstate import RUNS_DIR, iso, list_runs, load_run
from gitexec.tickets import TicketState
from gitexec.workspace import Workspace


def run_rows(ws: Workspace, now: float) -> list[dict[str, Any]]:
    """One row per run: id, state, start, age, tickets completed of total, branch."""
    rows = []
    ws.require_readable(ws.state_dir / RUNS_DIR)
    for run_id in list_runs(ws.state_dir):
        state = load_run(ws.state_dir, run_id)
        if state.problems:
            print(
                f"gitexec: warning: run {run_id}: {len(state.problems)} line(s) of its journal "
                f"do not fit and are skipped (`git exec status --run {run_id}` names them)",
                file=sys.stderr,
            )
        started = state.started_at or None
        rows.append(
            {
                "run": run_id,
                "state": state.status.value,
                "started_at": iso(started),
                "age_s": round(now - started, 3) if started else None,
                "completed": sum(
                    1 for t in state.tickets.values() if t.status is TicketState.COMPLETED
                ),
                "total": len(state.tickets),
                "integration": state.integration,
                "head": state.head,
            }
        )
    return rows


def runs(ws: Workspace, *, fmt: str) -> int:
    rows = run_rows(ws, time.time())
    if fmt == "json":
        print(json.dumps({"runs": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print("no runs yet in this repository (start one with `git exec run`)")
        return EXIT_OK
    table = [("run", "state", "started", "age", "tickets", "branch")]
    for r in rows:
        table.append(
            (
                r["run"],
                r["state"],
                r["started_at"] or "-",
                format_duration(r["age_s"]) if r["age_s"] is not None else "-",
                f"{r['completed']}/{r['total']}",
                r["integration"].removeprefix("refs/heads/") or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    return EXIT_OK
