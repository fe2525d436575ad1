"""The report's Mermaid diagrams: a Gantt chart of the run and the DAG coloured by status.

GitHub renders Mermaid only under its size limits, so both shrink to the budget given.
"""

from __future__ import annotations

import re
import time

from gitexec.report import RunReport, Span
from gitexec.report.escape import shorten
from gitexec.runstate import TicketRun
from gitexec.tickets import TicketState

MERMAID_CHARS = 40_000  # GitHub's Mermaid refuses diagrams over 50,000 characters
MERMAID_EDGES = 450  # ... and over 500 edges
MERMAID_STYLES = {
    "completed": "fill:#d4edda,stroke:#2da44e,color:#0f3d1c",
    "failed": "fill:#ffd7d5,stroke:#cf222e,color:#5c0a0f",
    "conflict": "fill:#ffd8b5,stroke:#bc4c00,color:#4d1f00",
    "blocked": "fill:#eaeef2,stroke:#6e7781,color:#24292f",
    "cancelled": "fill:#eaeef2,stroke:#6e7781,color:#24292f,stroke-dasharray:3 3",
    "running": "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    "pending": "fill:#ffffff,stroke:#8c959f,color:#24292f",
}


def mermaid_label(value: object, limit: int = 60) -> str:
    """Text for a quoted Mermaid label, with Mermaid's entity codes for unsafe characters."""
    text = shorten(value, limit)
    for char, code in (
        ("#", "#35;"),
        ("&", "#38;"),
        ('"', "#quot;"),
        ("<", "#lt;"),
        (">", "#gt;"),
        ("`", "#96;"),
    ):
        text = text.replace(char, code)
    return text


def _gantt_name(value: str) -> str:
    """A Gantt task name: no ':' (ends the name), '#' or ';' (entities, statements)."""
    return " ".join(re.sub(r"[^\w .\-/+=@()]", " ", value).split()) or "ticket"


def gantt(report: RunReport, limit: int) -> str:
    """A Gantt chart of the actual run: one section per slot, one bar per attempt, and one
    for the integration gates (a bar per gate run)."""
    spans = report.spans[:limit]
    gates = report.gates[: max(0, limit - len(spans))]
    if not spans and not gates:
        return ""
    state = report.state
    now = state.finished_at or state.last_event_at or time.time()
    by_slot: dict[int | None, list[Span]] = {}
    for s in spans:
        by_slot.setdefault(s.slot, []).append(s)
    last_attempt = {s.ticket: s for s in report.spans}
    lines = ["gantt", "    dateFormat x", "    axisFormat %H:%M:%S", "    todayMarker off"]
    n = 0
    for slot in sorted(by_slot, key=lambda k: (k is None, k or 0)):
        lines.append(f"    section {'slot ' + str(slot) if slot is not None else 'no slot'}")
        for s in by_slot[slot]:
            t = state.tickets.get(s.ticket)
            status = t.status if t is not None else TicketState.PENDING
            tags = []
            final = last_attempt.get(s.ticket) is s
            if s.ok is False or (final and status in (TicketState.FAILED, TicketState.CONFLICT)):
                tags.append("crit")
            tags.append("active" if s.end is None else "done")
            start = round(s.start * 1000)
            end = max(start + 1, round((s.end if s.end is not None else now) * 1000))
            name = _gantt_name(report.text(s.ticket) + (f" #{s.attempt}" if s.attempt > 1 else ""))
            line = f"    {name} :{', '.join(tags)}, a{n}, {start}, {end}"
            n += 1
            lines.append(line)
    if gates:
        lines.append("    section gates")
    for g in gates:
        tags = ["crit"] if g.ok is False else []
        tags.append("active" if g.end is None else "done")
        start = round(g.start * 1000)
        end = max(start + 1, round((g.end if g.end is not None else now) * 1000))
        shown = ", ".join(g.tickets[:3]) + (" …" if len(g.tickets) > 3 else "")
        name = _gantt_name("gate " + report.text(shown))
        lines.append(f"    {name} :{', '.join(tags)}, a{n}, {start}, {end}")
        n += 1
    return "\n".join(lines)


def _status_class(t: TicketRun) -> str:
    if t.status in (TicketState.RUNNING, TicketState.VALIDATING, TicketState.MERGING):
        return "running"
    if t.status in (TicketState.PENDING, TicketState.READY, TicketState.THROTTLED):
        return "pending"  # a throttled ticket waits for its quota pool
    return str(t.status.value)


def graph(report: RunReport, tickets: list[TicketRun], limit: int) -> str:
    """The DAG coloured by status; past `limit` tickets, the plan groups instead."""
    if limit <= 0 or not tickets:
        return ""
    index = {t.id: f"t{i}" for i, t in enumerate(tickets)}
    edges = [(index[d], index[t.id]) for t in tickets for d in t.depends_on if d in index]
    if len(tickets) <= limit and len(edges) <= MERMAID_EDGES:
        lines = ["graph LR"]
        for t in tickets:
            label = mermaid_label(report.text(f"{t.id}: {t.title}"), 48)
            lines.append(f'    {index[t.id]}["{label}"]')
        lines.extend(f"    {a} --> {b}" for a, b in edges)
        classes: dict[str, list[str]] = {}
        for t in tickets:
            classes.setdefault(_status_class(t), []).append(index[t.id])
    else:
        lines, classes = _group_graph(report)
    for name, members in classes.items():
        lines.append(f"    classDef {name} {MERMAID_STYLES[name]}")
        lines.append(f"    class {','.join(members)} {name}")
    text = "\n".join(lines)
    return text if len(text) <= MERMAID_CHARS else ""


_SEVERITY = ("failed", "conflict", "running", "blocked", "cancelled", "pending", "completed")


def _group_graph(report: RunReport) -> tuple[list[str], dict[str, list[str]]]:
    groups = report.by_group()[:200]
    lines = ["graph LR"]
    classes: dict[str, list[str]] = {}
    for n, (group, tickets) in enumerate(groups):
        counts: dict[str, int] = {}
        for t in tickets:
            counts[_status_class(t)] = counts.get(_status_class(t), 0) + 1
        summary = ", ".join(f"{counts[k]} {k}" for k in _SEVERITY if k in counts)
        lines.append(f'    g{n}["group {group}: {len(tickets)} tickets<br/>{summary}"]')
        if n:
            lines.append(f"    g{n - 1} --> g{n}")
        worst = next(k for k in _SEVERITY if k in counts)
        classes.setdefault(worst, []).append(f"g{n}")
    return lines, classes
