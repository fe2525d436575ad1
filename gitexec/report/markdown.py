"""The Markdown report (templates/report.md.j2): verdict, analytics, tickets, diagrams, failures.

It must fit GitHub's 1 MiB step-summary limit whatever the run: it is rendered with
shrinking budgets (log tails first, then detail blocks and diagrams, titles last) until it
fits. The ticket table keeps every row at every budget.
"""

from __future__ import annotations

import functools
import html
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.loaders

from gitexec.errors import UserError
from gitexec.fields import format_duration
from gitexec.report import Outcome, RunReport, Span, kind, outcome
from gitexec.resources import cpu_text, memory_text, resource_summary
from gitexec.runstate import RunStatus, TicketRun, iso
from gitexec.templating import (
    BoundedEnvironment,
    Limits,
    RenderError,
    TemplatePathError,
    read_repository_file,
    render_bounded,
    repository_file,
    template_dir,
)
from gitexec.tickets import TicketState

TEMPLATE = "report.md.j2"
SUMMARY_LIMIT = 1024 * 1024  # GitHub's step-summary limit, in bytes
DEFAULT_LIMIT = SUMMARY_LIMIT - 8 * 1024  # headroom for whatever else a step appends
MERMAID_CHARS = 40_000  # GitHub's Mermaid refuses diagrams over 50,000 characters
MERMAID_EDGES = 450  # ... and over 500 edges


@dataclass(frozen=True)
class Budget:
    """How much of each shrinkable part one rendering may use."""

    log_lines: int
    log_chars: int
    details: int  # failures and conflicts shown in a <details> block
    conflict_chars: int
    diagram_items: int  # Gantt bars and graph nodes (0: no diagrams)
    title_chars: int  # titles in the table
    resources: bool = True  # the table's CPU and memory columns


BUDGETS = (
    Budget(60, 8_000, 50, 8_000, 300, 120),
    Budget(25, 3_000, 30, 3_000, 200, 100),
    Budget(10, 1_000, 20, 1_000, 120, 80),
    Budget(0, 0, 10, 400, 60, 60, resources=False),
    Budget(0, 0, 0, 0, 0, 40, resources=False),
    Budget(0, 0, 0, 0, 0, 16, resources=False),
)

STATUS_ICONS = {
    TicketState.PENDING: "🕓",
    TicketState.READY: "🕓",
    TicketState.RUNNING: "⏳",
    TicketState.VALIDATING: "⏳",
    TicketState.MERGING: "⏳",
    TicketState.COMPLETED: "✅",
    TicketState.FAILED: "❌",
    TicketState.CONFLICT: "💥",
    TicketState.BLOCKED: "⛔",
    TicketState.CANCELLED: "🚫",
}
MERMAID_STYLES = {
    "completed": "fill:#d4edda,stroke:#2da44e,color:#0f3d1c",
    "failed": "fill:#ffd7d5,stroke:#cf222e,color:#5c0a0f",
    "conflict": "fill:#ffd8b5,stroke:#bc4c00,color:#4d1f00",
    "blocked": "fill:#eaeef2,stroke:#6e7781,color:#24292f",
    "cancelled": "fill:#eaeef2,stroke:#6e7781,color:#24292f,stroke-dasharray:3 3",
    "running": "fill:#ddf4ff,stroke:#0969da,color:#0a3069",
    "pending": "fill:#ffffff,stroke:#8c959f,color:#24292f",
}


# --- escaping -------------------------------------------------------------------------------

# What can start Markdown syntax inside a line (GitHub's flavour included): code, emphasis,
# links and images, HTML and autolinks, table cells, strikethrough, math; `_` only at a
# word's edge (inside a word it never emphasises); entities; mentions and email, URL and
# www autolinks. Everything else (`:`, `;`, `/`, `.`, `-`, `(`) stays as written.
_MD_INLINE = re.compile(
    r"""[\\`*\[\]<|~$]
    | (?<![A-Za-z0-9])_ | _(?![A-Za-z0-9])
    | &(?=\#?[A-Za-z0-9]+;)
    | @(?=\w)
    | :(?=//)
    | (?<=\bwww)\.
    """,
    re.VERBOSE,
)
# ... and what starts a block at the beginning of a line: quotes, headings, list items,
# setext underlines, ordered list items (`1. x` or `1) x`).
_MD_LINE_START = re.compile(r"^(?:>|#{1,6}(?=\s|$)|[-+](?=\s|$)|[-=]+$|\d{1,9}(?=[.)](?:\s|$)))")
_BACKTICKS = re.compile(r"`+")
_HEX = re.compile(r"[0-9a-f]{4,64}")


def md(value: object) -> str:
    """Inline Markdown text on one line, escaped only where Markdown would read syntax, so
    the raw file reads well too.

    `<` cannot open HTML or an autolink, `|` cannot split a table cell, `*`, `_`, `[`,
    `~` and `` ` `` cannot format or link, `@` cannot mention, and a leading `#`, `>` or
    `-` cannot start a block.
    """
    text = " ".join(str(value if value is not None else "").split())
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(0), text)
    m = _MD_LINE_START.match(text)
    if m is None:
        return text
    if m.group(0)[0].isdigit():  # `1.` and `1)`: escape the punctuation after the number
        end = m.end()
        return text[:end] + "\\" + text[end:]
    return "\\" + text


def html_text(value: object) -> str:
    """Text inside raw HTML (a <summary>), one line."""
    return html.escape(" ".join(str(value if value is not None else "").split()), quote=True)


def code_block(value: object, lang: str = "") -> str:
    """A fenced code block longer than any backtick run inside, so nothing can close it."""
    text = str(value if value is not None else "").rstrip("\n")
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def shorten(value: object, limit: int) -> str:
    text = " ".join(str(value if value is not None else "").split())
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"


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


# --- context --------------------------------------------------------------------------------


def markdown_context(report: RunReport, budget: Budget = BUDGETS[0]) -> dict[str, Any]:
    """What report.md.j2 (or a user's report.template) is rendered with; all text clean."""
    return _Context(report).build(budget)


class _Context:
    """The parts of the context that do not depend on the budget, computed once."""

    def __init__(self, report: RunReport) -> None:
        self.report = report
        state = report.state
        text = report.text
        m = state.metrics()
        self.tickets = report.ordered()
        self.rows = [_row(report, t) for t in self.tickets]
        self.problems = [t for t in self.tickets if outcome(t) in (Outcome.FAILURE, Outcome.ERROR)]
        self.measured = any(t.cpu_s > 0 or t.peak_rss_mb for t in self.tickets)
        self.fixed = {
            "run": {
                "id": text(state.run_id),
                "status": state.status.value,
                "base": text(state.base),
                "base_rev": text(state.base_rev),
                "head": text(state.head),
                "integration": text(state.integration),
                "branch": text(state.integration.removeprefix("refs/heads/")),
                "jobs": state.jobs,
                "strategy": text(state.strategy),
                "started_at": iso(state.started_at or None),
                "finished_at": iso(state.finished_at),
                "wall": format_duration(m["wall_s"]),
                "gates": format_duration(m["gate_s"]) if m["gate_s"] else "",
                "logs": f".git/gitexec/runs/{text(state.run_id)}/logs/",
            },
            "verdict": _verdict(report, m),
            "metrics": m,
            "analytics": _analytics(report, m),
            "warnings": [text(w) for w in state.warnings[:20]],
            "spend": _spend(m),
        }

    def build(self, budget: Budget) -> dict[str, Any]:
        report = self.report
        shown = self.problems[: budget.details]
        return {
            **self.fixed,
            "tickets": [{**r, "title": shorten(r["title"], budget.title_chars)} for r in self.rows],
            "gantt": _gantt(report, budget.diagram_items),
            "graph": _graph(report, self.tickets, budget.diagram_items),
            "problems": [_problem(report, t, budget) for t in shown],
            "more_problems": [report.text(t.id) for t in self.problems[len(shown) :]],
            "shortened": budget != BUDGETS[0],
            "resources": self.measured and budget.resources,
        }


def _verdict(report: RunReport, m: dict[str, Any]) -> dict[str, Any]:
    status = report.state.status
    done, total = m["completed"], m["total"]
    bad = ", ".join(f"{m[k]} {k}" for k in ("failed", "conflict", "blocked", "cancelled") if m[k])
    wall = format_duration(m["wall_s"])
    branch = report.text(report.state.integration.removeprefix("refs/heads/"))
    if status is RunStatus.COMPLETED:
        return {
            "ok": True,
            "icon": "✅",
            "text": f"all {total} tickets completed in {wall}; the result is on {branch}",
        }
    if status in (RunStatus.RUNNING, RunStatus.PAUSED):
        return {
            "ok": None,
            "icon": "⏳",
            "text": f"{status.value}: {done} of {total} tickets completed so far"
            + (f" ({bad})" if bad else ""),
        }
    icon = {RunStatus.FAILED: "❌", RunStatus.STOPPED: "⏹️", RunStatus.CRASHED: "💥"}[status]
    text = f"{status.value}: {done} of {total} tickets completed" + (f"; {bad}" if bad else "")
    if status is RunStatus.CRASHED:
        text += f"; the engine is gone: git exec resume --run {report.text(report.run_id)}"
    return {"ok": False, "icon": icon, "text": text}


def _percent(fraction: float) -> str:
    pct = 100 * fraction
    return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def _analytics(report: RunReport, m: dict[str, Any]) -> list[dict[str, Any]]:
    target = report.target_parallelism()
    factor = float(m["parallelism_factor"])
    seen, resolved = int(m["conflicts"]), int(m["conflicts_auto_resolved"])
    wall, gate_only = float(m["wall_s"]), float(m["gate_only_s"])
    # Slots cannot be busy while only a gate runs: the targets leave that time out.
    open_share = (wall - gate_only) / wall if wall > 0 else 1.0
    utilization = float(m["resource_utilization"])
    gated = f", less the {format_duration(gate_only)} only gates ran" if gate_only else ""
    rows: list[dict[str, Any]] = [
        {
            "name": "Parallelism factor",
            "value": f"{factor:g}×",
            "target": f"{target:g}× (work ÷ the shortest wall time for it: critical path "
            f"or work ÷ slots{', plus gate time' if gate_only else ''})",
            "ok": factor >= 0.8 * target,
        },
        {
            "name": "Resource utilization",
            "value": _percent(utilization),
            "target": f"≥ 70% of slot time busy{gated}",
            "ok": utilization >= 0.7 * open_share,
        },
        {
            "name": "Coordination efficiency",
            "value": f"{100 * float(m['coordination_efficiency']):.0f}%",
            "target": "≥ 90% agent time vs engine overhead",
            "ok": float(m["coordination_efficiency"]) >= 0.9,
        },
        {
            "name": "Conflicts auto-resolved",
            "value": f"{resolved}/{seen} ({m['conflicts_auto_resolved_pct']}%)"
            if seen
            else "no conflicts",
            "target": "100%",
            "ok": resolved >= seen,
        },
        {
            "name": "Wall time",
            "value": format_duration(m["wall_s"]),
            "target": f"critical path {format_duration(m['critical_path_s'])}"
            + (f" + gates {format_duration(gate_only)}" if gate_only else ""),
            "ok": None,
        },
        *(
            [{"name": "Agent resources", "value": report.text(used), "target": "", "ok": None}]
            if (used := resource_summary(report.state.tickets.values()))
            else []
        ),
    ]
    if m["gate_runs"] or m["gate_s"]:
        rows.append(
            {
                "name": "Gate time",
                "value": f"{format_duration(m['gate_s'])} in {m['gate_runs']} run(s)",
                "target": f"{format_duration(gate_only)} of the wall time with nothing else "
                "running",
                "ok": None,
            }
        )
    return rows


def _row(report: RunReport, t: TicketRun) -> dict[str, Any]:
    commit = t.merge_commit or t.commit or ""
    return {
        "id": report.text(t.id),
        "title": report.text(t.title),
        "agent": report.text(t.agent),
        "status": t.status.value,
        "icon": STATUS_ICONS[t.status],
        "attempts": t.attempts,
        "duration": format_duration(t.agent_s),
        "cost": _cost(t.total_cost_usd, t.usage is not None, t.cost_unknown),
        "commit": commit[:10] if _HEX.fullmatch(commit) else "",
        "cpu": cpu_text(t.cpu_s),
        "memory": memory_text(t.peak_rss_mb),
        "group": t.group,
        "file": report.text(t.file),
        "reason": report.text(t.reason),
        "outcome": outcome(t).value,
    }


def _cost(cost_usd: float | None, used_tokens: bool, unknown: bool) -> str:
    if unknown or (cost_usd is None and used_tokens):
        return "unknown"
    if cost_usd is None:
        return "-"
    return f"${cost_usd:.4f}"


def _spend(m: dict[str, Any]) -> str:
    """The run's spend for the report's summary ("" when no agent reported any)."""
    tokens = int(m["input_tokens"]) + int(m["output_tokens"])
    if not tokens and not m["cost_usd"]:
        return ""
    money = "unknown" if m["cost_usd"] is None else f"${float(m['cost_usd']):.4f}"
    return f"{money} ({m['input_tokens']:,} input and {m['output_tokens']:,} output tokens)"


def _problem(report: RunReport, t: TicketRun, budget: Budget) -> dict[str, Any]:
    conflicts = []
    for path in t.conflicts:
        hunks = conflict_hunks(report.text(t.conflict_text.get(path, "")))
        if len(hunks) > budget.conflict_chars:
            hunks = hunks[: budget.conflict_chars] + "\n[... shortened ...]"
        conflicts.append(
            {
                "path": report.text(path),
                "with": [report.text(w) for w in t.conflict_with],
                "hunks": hunks,
            }
        )
    return {
        "id": report.text(t.id),
        "title": report.text(t.title),
        "status": t.status.value,
        "icon": STATUS_ICONS[t.status],
        "kind": kind(t),
        "reason": report.text(t.reason),
        "file": report.text(t.file),
        "agent": report.text(t.agent),
        "attempts": t.attempts,
        "cpu": cpu_text(t.cpu_s),
        "memory": memory_text(t.peak_rss_mb),
        "conflicts": conflicts,
        "log": report.log_tail(t.id, max_lines=budget.log_lines, max_chars=budget.log_chars),
    }


def conflict_hunks(text: str, context: int = 3) -> str:
    """Only the diff3 conflict regions of a file with markers, with a little context."""
    lines = text.split("\n")
    regions: list[tuple[int, int]] = []
    start: int | None = None
    for i, line in enumerate(lines):
        if line.startswith("<<<<<<<") and start is None:
            start = i
        elif line.startswith(">>>>>>>") and start is not None:
            lo, hi = max(0, start - context), min(len(lines), i + context + 1)
            if regions and lo <= regions[-1][1]:
                regions[-1] = (regions[-1][0], hi)
            else:
                regions.append((lo, hi))
            start = None
    if not regions:
        return text
    return "\n".join(f"@@ line {lo + 1} @@\n" + "\n".join(lines[lo:hi]) for lo, hi in regions)


# --- Mermaid --------------------------------------------------------------------------------


def _gantt(report: RunReport, limit: int) -> str:
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
    if t.status in (TicketState.PENDING, TicketState.READY):
        return "pending"
    return str(t.status.value)


def _graph(report: RunReport, tickets: list[TicketRun], limit: int) -> str:
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


# --- rendering ------------------------------------------------------------------------------


# A report renders every ticket: its budget grows with the run, not with a prompt's size.
REPORT_LIMITS = Limits(steps=50_000_000, work=4 << 30, output=256 << 20)


class _RepositoryLoader(jinja2.BaseLoader):
    """A user template's directory: what it includes must be regular files below it,
    reached without a symbolic link (so never `/proc/self/environ`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        rel = "/".join(jinja2.loaders.split_template_path(template))
        try:
            path = repository_file(self.directory, rel)
        except TemplatePathError:
            raise jinja2.TemplateNotFound(template) from None
        source = read_repository_file(None, path, "report template")
        mtime = path.stat().st_mtime
        return source, str(path), lambda: path.stat().st_mtime == mtime


def _environment(extra_dir: Path | None) -> jinja2.Environment:
    builtin = jinja2.FileSystemLoader(str(template_dir()))
    loaders: list[jinja2.BaseLoader] = [jinja2.PrefixLoader({"gitexec": builtin})]
    loaders.insert(0 if extra_dir is None else 1, builtin)
    if extra_dir is not None:
        loaders.insert(0, _RepositoryLoader(extra_dir))
    env = BoundedEnvironment(
        limits=REPORT_LIMITS,
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown: escaped explicitly with the filters below
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals.pop("lipsum", None)
    env.filters.update(md=md, html=html_text, code=code_block, shorten=shorten)
    return env


@functools.lru_cache(maxsize=1)
def _default_template() -> jinja2.Template:
    return _environment(None).get_template(TEMPLATE)


def load_template(path: Path | None) -> jinja2.Template:
    """The built-in template, or a user's (`report.template`).

    A user's template may `{% extends "gitexec/report.md.j2" %}` and override its blocks.
    """
    if path is None:
        return _default_template()
    try:
        return _environment(path.parent).get_template(path.name)
    except jinja2.TemplateNotFound:
        raise UserError(f"report.template: {path} does not exist") from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserError(f"{path}:{exc.lineno}: report template: {exc.message}") from None
    except (jinja2.TemplateError, RecursionError, ValueError) as exc:
        raise UserError(f"{path}: report template: {exc}") from None


def render_markdown(
    report: RunReport,
    *,
    template: Path | None = None,
    limit: int = DEFAULT_LIMIT,
    budgets: Sequence[Budget] = BUDGETS,
) -> str:
    """The report, at the first budget that fits in `limit` bytes of UTF-8."""
    tmpl = load_template(template)
    context = _Context(report)
    rendered: dict[int, str] = {}

    def fits(i: int) -> bool:
        rendered[i] = _render(tmpl, context.build(budgets[i]), template)
        return len(rendered[i].encode("utf-8")) <= limit

    if fits(0):
        return rendered[0]
    # The sizes shrink from budget to budget: find the first that fits by bisection.
    lo, hi = 1, len(budgets) - 1
    if not fits(hi):
        return _cut(rendered[hi], limit, report)
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return rendered[hi]


def _render(tmpl: jinja2.Template, context: dict[str, Any], path: Path | None) -> str:
    try:
        return render_bounded(tmpl, context)
    except RenderError as exc:
        where = f"{path}: " if path is not None else ""
        raise UserError(f"{where}report template: {exc}") from None


def _cut(text: str, limit: int, report: RunReport) -> str:
    """Last resort (a user template, or a table over the limit): cut at a line."""
    note = (
        f"\n\n> [!WARNING]\n> This report was cut to stay under {limit // 1024} KiB; "
        f"git exec status --run {md(report.run_id)} lists every ticket.\n"
    )
    room = limit - len(note.encode("utf-8"))
    data = text.encode("utf-8")[: max(0, room)]
    cut = data.rfind(b"\n")
    return data[: max(0, cut)].decode("utf-8", "ignore") + note


def write_markdown(
    report: RunReport, path: Path, *, template: Path | None = None, limit: int = DEFAULT_LIMIT
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(report, template=template, limit=limit), encoding="utf-8")
    return path
