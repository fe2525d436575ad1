"""JUnit XML for CI: one <testsuite> per plan group, one <testcase> per ticket, its
usage and cost as <properties> of the test case.

Built with junit-xml's model, with its gaps closed here: every string is cleaned before it
goes in (junit-xml writes lone surrogates as invalid character references), every
testcase gets a `time` (junit-xml drops a zero), and every failure, error and skip carries
a message (junit-xml silently drops a failure that has neither message nor output).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from junit_xml import TestCase, TestSuite

from gitexec.report import Outcome, RunReport, clean_text, kind, outcome
from gitexec.runstate import TicketRun, iso

OUT_LINES, OUT_CHARS = 200, 64_000  # <system-out>
DETAIL_LINES, DETAIL_CHARS = 50, 16_000  # the text of <failure> / <error>
CONFLICT_CHARS = 16_000


def junit_xml(report: RunReport) -> str:
    """The whole report as a well-formed XML 1.0 document (a str; write it as UTF-8)."""
    groups = report.by_group()
    suites = [_suite(report, group, tickets) for group, tickets in groups]
    root = ET.Element("testsuites", {"name": f"gitexec run {report.text(report.run_id)}"})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "disabled": 0}
    seconds = 0.0
    for suite, (_, tickets) in zip(suites, groups, strict=True):
        element = suite.build_xml_doc()
        cases = zip(suite.test_cases, tickets, element.iter("testcase"), strict=True)
        for case, ticket, node in cases:
            node.set("time", _seconds(case.elapsed_sec))
            _case_properties(report, node, ticket)
        suite_s = sum(c.elapsed_sec or 0.0 for c in suite.test_cases)
        element.set("time", _seconds(suite_s))
        element.set("skipped", str(sum(1 for c in suite.test_cases if c.is_skipped())))
        for key in totals:
            totals[key] += int(element.get(key, "0"))
        seconds += suite_s
        root.append(element)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(seconds))
    if report.state.started_at:
        root.set("timestamp", iso(report.state.started_at) or "")
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    # Belt and braces: nothing outside XML 1.0 can have slipped past the cleaning above.
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + clean_text(body) + "\n"


def _case_properties(report: RunReport, node: ET.Element, t: TicketRun) -> None:
    """What the ticket's agent used and cost, as <properties> of its testcase (the first
    child, as pytest's record_property writes them)."""
    values = {
        "gitexec.agent": t.agent,
        "gitexec.attempts": str(t.attempts),
        "gitexec.failed_attempts": str(t.failed_attempts),
        "gitexec.throttled": str(t.throttles),
        "gitexec.model": t.model,
        "gitexec.cost_usd": None if t.total_cost_usd is None else f"{t.total_cost_usd:.6f}",
        "gitexec.input_tokens": str(t.usage.input_tokens) if t.usage else None,
        "gitexec.output_tokens": str(t.usage.output_tokens) if t.usage else None,
        "gitexec.session_id": t.session_id,
        "gitexec.cpu_s": f"{t.cpu_s:.3f}" if t.cpu_s > 0 else None,
        "gitexec.peak_rss_mb": None if t.peak_rss_mb is None else f"{t.peak_rss_mb:.1f}",
    }
    properties = ET.Element("properties")
    for name, value in values.items():
        if value is not None:
            ET.SubElement(properties, "property", {"name": name, "value": report.text(value)})
    node.insert(0, properties)


def write_junit(report: RunReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report), encoding="utf-8")
    return path


def _seconds(value: float | None) -> str:
    return f"{max(0.0, value or 0.0):.3f}"


def _suite(report: RunReport, group: int, tickets: list[TicketRun]) -> TestSuite:
    state = report.state
    starts = [t.started_at for t in tickets if t.started_at is not None]
    properties = {
        "gitexec.run": state.run_id,
        "gitexec.status": state.status.value,
        "gitexec.base": state.base,
        "gitexec.base_rev": state.base_rev,
        "gitexec.head": state.head,
        "gitexec.integration": state.integration,
        "gitexec.jobs": str(state.jobs),
        "gitexec.group": str(group),
    }
    return TestSuite(
        f"gitexec.{group}",
        [_case(report, t) for t in tickets],
        id=str(group),
        package="gitexec",
        timestamp=iso(min(starts) if starts else state.started_at or None),
        properties={k: report.text(v) for k, v in properties.items()},
    )


def _case(report: RunReport, t: TicketRun) -> TestCase:
    tail = report.log_tail(t.id, max_lines=OUT_LINES, max_chars=OUT_CHARS)
    stamp = t.started_at if t.started_at is not None else t.finished_at
    case = TestCase(
        report.text(f"{t.id}: {t.title}"),
        classname=f"gitexec.{t.group}",
        elapsed_sec=round(t.agent_s, 3),
        timestamp=iso(stamp),
        file=report.text(t.file) or None,
        stdout=tail or None,
    )
    result = outcome(t)
    reason = report.text(t.reason)
    cause = kind(t)
    if result is Outcome.FAILURE:
        detail = report.log_tail(t.id, max_lines=DETAIL_LINES, max_chars=DETAIL_CHARS)
        case.add_failure_info(
            message=reason or "ticket failed", output=detail or reason, failure_type=cause
        )
        assert case.is_failure()
    elif result is Outcome.ERROR:
        case.add_error_info(
            message=reason or f"ticket {cause}", output=_error_output(report, t), error_type=cause
        )
        assert case.is_error()
    elif result is Outcome.SKIPPED:
        if not t.status.terminal:
            reason = f"not finished: {t.status.value} when the run was {report.state.status.value}"
        case.add_skipped_info(message=reason or t.status.value, output=None)
    return case


def _error_output(report: RunReport, t: TicketRun) -> str:
    parts: list[str] = []
    for path in t.conflicts:
        text = report.text(t.conflict_text.get(path, ""))
        if len(text) > CONFLICT_CHARS:
            text = text[:CONFLICT_CHARS] + "\n[... conflict text shortened ...]"
        head = f"conflict in {report.text(path)}"
        if t.conflict_with:
            head += f" (collided with {report.text(', '.join(t.conflict_with))})"
        parts.append(head + (":\n" + text if text else ""))
    tail = report.log_tail(t.id, max_lines=DETAIL_LINES, max_chars=DETAIL_CHARS)
    if tail:
        parts.append("log:\n" + tail)
    return "\n\n".join(parts) or report.text(t.reason) or kind(t)
