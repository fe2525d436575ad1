"""`git exec history`: what past runs of this repository tell (slowest, flaky, conflict hot
spots, agents), or one ticket's past runs."""

from __future__ import annotations

import json
from typing import Any

from gitexec.errors import EXIT_OK, UserError
from gitexec.history import HISTORY_FILE, History
from gitexec.patterns import advice, analyze, render_text, ticket_lines
from gitexec.workspace import Workspace


def history(ws: Workspace, *, fmt: str, ticket: str | None, limit: int | None) -> int:
    past = History.load(ws.state_dir, limit=limit)
    where = str(ws.state_dir / HISTORY_FILE)
    if ticket is not None:
        rows = [(r.run, t) for r, t in past.of_ticket(ticket)]
        if not rows and not past.runs:
            raise UserError("no run history yet: it is recorded when a run finishes")
        if fmt == "json":
            runs = [{"run": r, **t.to_json()} for r, t in rows]
            print(json.dumps({"ticket": ticket, "runs": runs}, indent=2))
            return EXIT_OK
        if not rows:
            print(f"{ticket} ran in none of the {len(past.runs)} run(s) of the history")
            return EXIT_OK
        print(f"{ticket}: {len(rows)} run(s)")
        print("\n".join(ticket_lines(rows)))
        return EXIT_OK
    patterns = analyze(past)
    if fmt == "json":
        out: dict[str, Any] = {"file": where, "skipped_lines": past.skipped, **patterns.to_json()}
        print(json.dumps({**out, "advice": advice(patterns)}, indent=2))
        return EXIT_OK
    if not past.runs:
        print(f"no run history yet ({where}): it is recorded when a run finishes")
        return EXIT_OK
    print("\n".join(render_text(patterns, file=where)))
    tips = advice(patterns)
    if tips:
        print("Advice:")
        print("\n".join(f"  - {line}" for line in tips))
    return EXIT_OK
