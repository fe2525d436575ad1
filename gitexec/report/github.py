"""GitHub Actions integration: step summary, step outputs, annotations and grouped logs.

Used when GITHUB_ACTIONS=true. Workflow commands are escaped per GitHub's rules (actions/
toolkit `command.ts`), outputs use the heredoc form with a delimiter the value cannot
contain, and ticket logs are printed between `::stop-commands::` markers so that nothing an
agent printed can act as a workflow command.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gitexec.report import Outcome, RunReport, outcome
from gitexec.report.markdown import SUMMARY_LIMIT, render_markdown
from gitexec.runmetrics import metrics
from gitexec.runstate import TicketRun
from gitexec.tickets import TicketState

MAX_ANNOTATIONS = 10  # GitHub shows at most 10 errors and 10 warnings per step
ANNOTATION_LOG_LINES, ANNOTATION_LOG_CHARS = 8, 1_500
GROUP_LOG_LINES, GROUP_LOG_CHARS = 400, 64_000


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether we are running inside a GitHub Actions job."""
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


# --- workflow-command syntax ----------------------------------------------------------------


def escape_data(text: str) -> str:
    """A command's message: %, CR and LF are encoded (toolkit `escapeData`)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A command's property value: as data, plus ':' and ',' (toolkit `escapeProperty`)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str = "", **properties: str | None) -> str:
    """`::name key=value,...::message`; properties whose value is None or '' are left out."""
    props = ",".join(
        f"{key}={escape_property(value)}" for key, value in properties.items() if value
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


def output_entry(name: str, value: str) -> str:
    """One GITHUB_OUTPUT entry in the heredoc form, safe for any (multi-line) value."""
    while True:
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        if delimiter not in value and delimiter not in name:
            break
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


# --- what gets published --------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    level: str  # "error" | "warning"
    title: str
    message: str
    file: str | None = None

    def line(self) -> str:
        return command(self.level, self.message, file=self.file, title=self.title)


def outputs(
    report: RunReport, *, junit: Path | None = None, markdown: Path | None = None
) -> dict[str, str]:
    """The action's outputs (action.yml), plus run-id, total and blocked; `cost-usd` is
    empty when the run's cost is unknown."""
    state = report.state
    m = metrics(state)
    return {
        "run-id": report.text(state.run_id),
        "status": state.status.value,
        "total": str(m["total"]),
        "completed": str(m["completed"]),
        "failed": str(m["failed"] + m["conflict"]),
        "blocked": str(m["blocked"]),
        "integration-branch": report.text(state.integration.removeprefix("refs/heads/")),
        "head": report.text(state.head),
        "junit": str(junit) if junit is not None else "",
        "markdown": str(markdown) if markdown is not None else "",
        "cost-usd": "" if m["cost_usd"] is None else f"{float(m['cost_usd']):.6f}",
        "tokens": str(int(m["input_tokens"]) + int(m["output_tokens"])),
    }


def find_annotations(report: RunReport, *, prefix: str = "") -> list[Annotation]:
    """Errors for failed and conflicting tickets, warnings for blocked and cancelled ones."""
    out: list[Annotation] = []
    for t in report.ordered():
        result = outcome(t)
        if result in (Outcome.FAILURE, Outcome.ERROR):
            level = "error"
        elif t.status in (TicketState.BLOCKED, TicketState.CANCELLED) or t.scope_violations:
            level = "warning"
        else:
            continue
        out.append(
            Annotation(
                level,
                report.text(t.id),
                _annotation_message(report, t),
                prefix + report.text(t.file) if t.file else None,
            )
        )
    return out


def _annotation_message(report: RunReport, t: TicketRun) -> str:
    lines = [report.text(f"{t.title}: {t.status.value}: {t.reason or t.status.value}")]
    if t.scope_violations:
        lines.append("outside its declared paths: " + report.text(", ".join(t.scope_violations)))
    if t.conflicts:
        where = report.text(", ".join(t.conflicts))
        with_ = report.text(", ".join(t.conflict_with))
        lines.append(f"conflicting paths: {where}" + (f" (with {with_})" if with_ else ""))
    if outcome(t) is Outcome.FAILURE:
        tail = report.log_tail(t.id, max_lines=ANNOTATION_LOG_LINES, max_chars=ANNOTATION_LOG_CHARS)
        if tail:
            lines.append(tail)
    return "\n".join(lines)


def limited(found: list[Annotation]) -> tuple[list[Annotation], dict[str, int]]:
    """At most MAX_ANNOTATIONS per level, and how many of each level were left out."""
    kept: list[Annotation] = []
    left: dict[str, int] = {}
    seen: dict[str, int] = {}
    for a in found:
        seen[a.level] = seen.get(a.level, 0) + 1
        if seen[a.level] <= MAX_ANNOTATIONS:
            kept.append(a)
        else:
            left[a.level] = left.get(a.level, 0) + 1
    return kept, left


def annotation_lines(report: RunReport, *, prefix: str = "") -> list[str]:
    """Workflow commands: the annotations, then one notice for those over the limit."""
    kept, left = limited(find_annotations(report, prefix=prefix))
    lines = [a.line() for a in kept]
    if left:
        counts = " and ".join(
            f"{n} more {'error' if level == 'error' else 'warning'}{'s' if n > 1 else ''}"
            for level, n in sorted(left.items())
        )
        lines.append(
            command(
                "notice",
                f"{counts} not annotated (GitHub shows {MAX_ANNOTATIONS} per kind); "
                "see the job summary for every ticket",
                title=f"gitexec run {report.text(report.run_id)}",
            )
        )
    return lines


def log_groups(report: RunReport) -> Iterator[str]:
    """A collapsible `::group::` per failed ticket log, with workflow commands disabled."""
    for t in report.ordered():
        if outcome(t) not in (Outcome.FAILURE, Outcome.ERROR):
            continue
        tail = report.log_tail(t.id, max_lines=GROUP_LOG_LINES, max_chars=GROUP_LOG_CHARS)
        yield command("group", report.text(f"gitexec {t.id}: {t.status.value} ({t.reason})"))
        token = secrets.token_hex(16)
        yield command("stop-commands", token)
        yield from (tail or "(no log)").split("\n")
        yield f"::{token}::"
        yield command("endgroup")


# --- the entry point ------------------------------------------------------------------------


def publish(
    report: RunReport,
    *,
    junit: Path | None = None,
    markdown: Path | None = None,
    template: Path | None = None,
    repo_root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> None:
    """Append the summary, write the outputs, print annotations and failed logs."""
    env = os.environ if environ is None else environ
    out = sys.stdout if stream is None else stream
    summary = env.get("GITHUB_STEP_SUMMARY")
    if summary:
        path = Path(summary)
        used = path.stat().st_size if path.exists() else 0
        room = max(4096, SUMMARY_LIMIT - used - 1024)
        text = render_markdown(report, template=template, limit=room)
        with path.open("a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    output = env.get("GITHUB_OUTPUT")
    if output:
        with Path(output).open("a", encoding="utf-8") as f:
            for name, value in outputs(report, junit=junit, markdown=markdown).items():
                f.write(output_entry(name, value))
    prefix = _workspace_prefix(repo_root, env.get("GITHUB_WORKSPACE"))
    for line in [*annotation_lines(report, prefix=prefix), *log_groups(report)]:
        print(line, file=out)
    out.flush()


def _workspace_prefix(repo_root: Path | None, workspace: str | None) -> str:
    """Annotations name files relative to the workspace: a repo checked out below it."""
    if repo_root is None or not workspace:
        return ""
    try:
        rel = repo_root.resolve().relative_to(Path(workspace).resolve())
    except ValueError:
        return ""
    return "" if str(rel) == "." else rel.as_posix() + "/"
