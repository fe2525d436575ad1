"""A repository's gitexec project: config, every ticket, the committed plan, all findings."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitexec import fields
from gitexec.cache import ParseCache
from gitexec.config import CONFIG_FILE, Config, ParsedConfig, parse_config
from gitexec.errors import UserError
from gitexec.findings import Finding, Locator, Reporter, Severity
from gitexec.plan import PLAN_FILE, Graph, Plan, check_plan_against, load_plan
from gitexec.tickets import TICKET_SUFFIXES, TICKETS_DIR, ParsedTicket, Ticket, parse_ticket


@dataclass(frozen=True)
class Project:
    root: Path
    config: Config
    tickets: tuple[Ticket, ...]  # every usable ticket, sorted by id
    findings: tuple[Finding, ...]  # sorted by file and position
    plan: Plan | None = None  # the committed plan, when there is one

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    def ticket(self, ticket_id: str) -> Ticket:
        for t in self.tickets:
            if t.id == ticket_id:
                return t
        raise UserError(f"no ticket {ticket_id!r} in {TICKETS_DIR}")

    def require_valid(self) -> None:
        """Refuse to plan or run on tickets with errors, listing them (exit 2)."""
        errors = self.errors
        if errors:
            shown = "\n".join(str(f) for f in errors[:20])
            more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise UserError(f"the tickets have errors (see `git exec check`):\n{shown}{more}")
        if not self.tickets:
            raise UserError(
                f"no tickets in {TICKETS_DIR}/ (create one with `git exec new ID --title ...`)"
            )


def _decode(path: str, data: bytes) -> tuple[str | None, Finding | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return None, Finding(path, line, col, Severity.ERROR, "file is not valid UTF-8")


def _parse_cached(
    root: Path, rel: str, cache: ParseCache[ParsedTicket | ParsedConfig], config: bool
) -> ParsedTicket | ParsedConfig:
    full = root / rel
    st = full.stat()
    hit = cache.get(rel, st, full.read_bytes)
    if hit is not None:
        return hit
    data = full.read_bytes()
    text, problem = _decode(rel, data)
    parsed: ParsedTicket | ParsedConfig
    if config:
        parsed = (
            parse_config(rel, text)
            if text is not None
            else ParsedConfig(Config(), (problem,) if problem else ())
        )
    else:
        parsed = (
            parse_ticket(rel, text)
            if text is not None
            else ParsedTicket(None, (problem,) if problem else ())
        )
    cache.put(rel, st, data, parsed)
    return parsed


def ticket_locator(root: Path, ticket_file: str) -> Locator:
    """A Locator over a ticket file's YAML (front matter for Markdown tickets)."""
    from gitexec.tickets import split_front_matter

    try:
        text = (root / ticket_file).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return Locator("")
    if ticket_file.endswith(".md"):
        split = split_front_matter(text)
        if split is not None:
            return Locator(split[0], split[2])
    return Locator(text)


def load_project(root: Path, *, cache_path: Path | None = None, check_plan: bool = True) -> Project:
    """Load and validate config, tickets and the committed plan; never raises on bad input."""
    cache: ParseCache[ParsedTicket | ParsedConfig] = ParseCache(cache_path, "project")
    findings: list[Finding] = []

    config = Config()
    if (root / CONFIG_FILE).is_file():
        parsed_config = _parse_cached(root, CONFIG_FILE, cache, config=True)
        assert isinstance(parsed_config, ParsedConfig)
        config = parsed_config.config
        findings.extend(parsed_config.findings)

    tickets: list[Ticket] = []
    ticket_dir = root / TICKETS_DIR
    try:
        entries = sorted(os.scandir(ticket_dir), key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    except NotADirectoryError:
        findings.append(Finding(TICKETS_DIR, 1, 1, Severity.ERROR, "expected a directory"))
        entries = []
    for entry in entries:
        rel = f"{TICKETS_DIR}/{entry.name}"
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if not entry.name.endswith(TICKET_SUFFIXES):
            if entry.name.endswith((".yml", ".markdown")):
                findings.append(
                    Finding(
                        rel,
                        1,
                        1,
                        Severity.WARNING,
                        "ignored: ticket files are named <ID>.yaml or <ID>.md",
                    )
                )
            continue
        parsed = _parse_cached(root, rel, cache, config=False)
        assert isinstance(parsed, ParsedTicket)
        findings.extend(parsed.findings)
        if parsed.ticket is not None:
            tickets.append(parsed.ticket)
    cache.save()

    tickets, cross = cross_check(root, tickets, config)
    findings.extend(cross)

    plan: Plan | None = None
    plan_path = root / PLAN_FILE
    if check_plan and plan_path.is_file():
        text = plan_path.read_text(encoding="utf-8", errors="replace")
        plan, plan_findings = load_plan(PLAN_FILE, text)
        findings.extend(plan_findings)
        ticket_errors = any(f.is_error for f in findings)
        if plan is not None and not ticket_errors:
            findings.extend(
                check_plan_against(PLAN_FILE, text, plan, tickets, config.default_estimate_s)
            )
    return Project(root, config, tuple(tickets), tuple(sorted(findings)), plan)


def cross_check(
    root: Path, tickets: Sequence[Ticket], config: Config
) -> tuple[list[Ticket], list[Finding]]:
    """Checks that need every ticket: duplicates, dependencies, cycles, agents."""
    findings: list[Finding] = []
    reporters: dict[str, Reporter] = {}

    def report(ticket: Ticket) -> Reporter:
        if ticket.file not in reporters:
            reporters[ticket.file] = Reporter(ticket.file, ticket_locator(root, ticket.file))
        return reporters[ticket.file]

    unique: dict[str, Ticket] = {}
    for t in tickets:
        first = unique.get(t.id)
        if first is not None:
            report(t).error_at_value(("id",), f"duplicate id {t.id!r} (also in {first.file})")
            continue
        unique[t.id] = t
    known = unique.keys()
    for t in unique.values():
        for i, dep in enumerate(t.depends_on):
            if dep == t.id:
                report(t).error_at_value(("depends_on", i), f"ticket {t.id!r} depends on itself")
            elif dep not in unique:
                report(t).error_at_value(
                    ("depends_on", i), f"unknown dependency {dep!r}{fields.did_you_mean(dep, known)}"
                )
        agent_name = t.agent or config.default_agent
        if agent_name not in config.agents:
            where = ("agent",) if t.agent else ("id",)
            report(t).error_at_value(
                where,
                f"unknown agent {agent_name!r}{fields.did_you_mean(agent_name, config.agents)}"
                f" (agents: {', '.join(sorted(config.agents))})",
            )
        elif _needs_run(config, agent_name) and not t.run:
            report(t).error_at_key(
                ("id",), f"ticket {t.id!r} uses the shell agent but has no 'run' command"
            )

    graph = Graph(unique.values())
    if graph.topological_order() is None:
        for cycle in graph.cycles():
            t = unique[cycle[0]]
            index = t.depends_on.index(cycle[1])
            report(t).error_at_value(
                ("depends_on", index), f"dependency cycle: {' -> '.join(cycle)}"
            )
    for r in reporters.values():
        findings.extend(r.findings)
    return sorted(unique.values(), key=lambda t: t.id), findings


def _needs_run(config: Config, agent_name: str) -> bool:
    """An agent whose command renders `ticket.run` cannot work without one."""
    return any("ticket.run" in arg for arg in config.agents[agent_name].command)


def filter_findings(findings: Iterable[Finding], files: Sequence[str]) -> list[Finding]:
    wanted = set(files)
    return [f for f in findings if f.path in wanted]
