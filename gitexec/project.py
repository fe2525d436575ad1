"""A repository's gitexec project: config, every ticket, the committed plan, all findings."""

from __future__ import annotations

import gc
import hashlib
import os
import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from gitexec import fields
from gitexec.cache import ParseCache, is_racy, stat_key
from gitexec.config import CONFIG_FILE, AgentSpec, Config, ParsedConfig, parse_config
from gitexec.errors import UserError
from gitexec.findings import Finding, Locator, Position, Reporter, Severity
from gitexec.plan import Graph
from gitexec.planfile import PLAN_FILE, Plan, check_plan_against, load_plan
from gitexec.repopath import RepositoryPathError, repository_file
from gitexec.tickets import (
    TICKET_SUFFIXES,
    TICKETS_DIR,
    ParsedTicket,
    Ticket,
    parse_ticket,
    split_front_matter,
)

if TYPE_CHECKING:  # `check` must not pay for importing pygit2
    import pygit2


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


class Unreadable(Exception):
    """A project file exists but cannot be read; the message says why."""


class Source(Protocol):
    """Where project files come from: the working tree, or a commit's tree."""

    def ticket_names(self) -> list[str] | None:
        """Names in the tickets directory (None: it is not a directory)."""

    def problem(self, rel: str) -> str | None:
        """Why an existing file cannot be a project file (a symbolic link), or None."""

    def file_problem(self, rel: str) -> str | None:
        """Why `rel` (a template the config names) is not a regular file of the repository
        reached without a symbolic link, or None."""

    def read(self, rel: str) -> bytes | None:
        """A file's content, or None when it does not exist; Unreadable when it cannot be read."""

    def cache_key(self, rel: str) -> tuple[Hashable, bool] | None:
        """(key that changes when the content does, racy?), or None when missing."""


_LINK_MODE = 0o120000


def symlink_problem(root: Path | None, link: str, target: str, rel: str | None = None) -> str:
    """Why a symbolic link cannot be (or hold) a project file: git stores the link, not the
    file. With the work tree's `root`, says whether the link leads out of the repository;
    `rel` is the file when `link` is a directory above it."""
    where = ""
    if root is not None:
        resolved = os.path.realpath(os.path.join(root, os.path.dirname(link), target))
        inside = os.path.commonpath([resolved, os.path.realpath(root)]) == os.path.realpath(root)
        where = "" if inside else ", outside the repository"
    what = "a symbolic link" if rel in (None, link) else f"inside the symbolic link {link!r}"
    return (
        f"{what} (to {target!r}{where}): gitexec reads only regular files here, "
        "since git stores the link rather than the file"
    )


class FileSource:
    """Files in a work tree; cache keys are file stats (one scan of the tickets directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._base = os.fspath(root)
        self._stats: dict[str, os.stat_result] = {}
        self._links: dict[str, str] = {}  # symbolic links in the tickets directory -> target
        self._names: list[str] | None = None
        self._scanned = False

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        directory = os.path.join(self._base, TICKETS_DIR)
        if any(os.path.islink(os.path.join(self._base, d)) for d in (".gitexec", TICKETS_DIR)):
            self._names = None  # git would store the link, not the tickets
            return
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    rel = f"{TICKETS_DIR}/{entry.name}"
                    if entry.is_symlink():
                        self._links[rel] = os.readlink(entry.path)
                        self._stats[rel] = entry.stat(follow_symlinks=False)
                    elif entry.is_file():
                        self._stats[rel] = entry.stat()
            self._names = sorted(name.rsplit("/", 1)[1] for name in self._stats)
        except FileNotFoundError:
            self._names = []
        except NotADirectoryError:
            self._names = None

    def ticket_names(self) -> list[str] | None:
        self._scan()
        return self._names

    def problem(self, rel: str) -> str | None:
        self._scan()
        if rel in self._links:
            return symlink_problem(self.root, rel, self._links[rel])
        if rel.startswith(f"{TICKETS_DIR}/"):
            return None  # the scan saw every link in the tickets directory
        parts = rel.split("/")
        for n in range(1, len(parts) + 1):  # .gitexec itself may be the link
            link = "/".join(parts[:n])
            path = os.path.join(self._base, link)
            if os.path.islink(path):
                return symlink_problem(self.root, link, os.readlink(path), rel)
        return None

    def file_problem(self, rel: str) -> str | None:
        try:
            repository_file(self.root, rel)
        except RepositoryPathError as exc:
            return str(exc)
        return None

    def read(self, rel: str) -> bytes | None:
        try:
            with open(os.path.join(self._base, rel), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise Unreadable(f"cannot read the file: {exc.strerror or exc}") from None

    def _stat(self, rel: str) -> os.stat_result | None:
        self._scan()
        st = self._stats.get(rel)
        if st is None:
            try:
                st = self._stats[rel] = os.stat(os.path.join(self._base, rel))
            except OSError:
                return None
        return st

    def cache_key(self, rel: str) -> tuple[Hashable, bool] | None:
        st = self._stat(rel)
        if st is None:
            return None
        return stat_key(st), is_racy(st)

    def signature(self) -> bytes | None:
        """A digest of every project file's stat; None while any file is racy."""
        self._scan()
        h = hashlib.sha256()
        for rel in sorted([*self._stats, CONFIG_FILE, PLAN_FILE]):
            st = self._stat(rel)
            if st is None:
                h.update(f"{rel}\0-\n".encode())
                continue
            if is_racy(st):
                return None
            h.update(f"{rel}\0{stat_key(st)}\n".encode())
        return h.digest()


class TreeSource:
    """Files in a commit (what a run executes); cache keys are blob ids.

    Each directory is read once (through `gitexec.treecache`), so looking up every ticket
    of a large `.gitexec/tickets/` costs a dictionary lookup each, not a tree parse."""

    def __init__(self, repo: pygit2.Repository, tree: pygit2.Tree) -> None:
        from gitexec import treecache  # pygit2 is loaded by now; `check` never gets here

        self.repo = repo
        self.tree = tree
        self._trees = treecache

    def _entry(self, rel: str) -> tuple[pygit2.Oid, int] | None:
        return self._trees.lookup(self.repo, self.tree.id, rel)

    def _blob(self, rel: str) -> pygit2.Oid | None:
        entry = self._entry(rel)
        return entry[0] if entry is not None and self._trees.is_blob(entry) else None

    def ticket_names(self) -> list[str] | None:
        entry = self._entry(TICKETS_DIR)
        if entry is None:
            return []
        if entry[1] != self._trees.TREE:
            return None
        return sorted(
            name.decode("utf-8", "surrogateescape")
            for name, found in self._trees.entries(self.repo, entry[0]).items()
            if self._trees.is_blob(found) and name
        )

    def problem(self, rel: str) -> str | None:
        entry = self._entry(rel)
        if entry is None or entry[1] != _LINK_MODE:
            return None
        target = self.repo[entry[0]].data.decode("utf-8", "replace")  # type: ignore[attr-defined]
        return symlink_problem(None, rel, target)

    def file_problem(self, rel: str) -> str | None:
        node = (self.tree.id, self._trees.TREE)
        for part in rel.split("/"):
            found = None
            if part and node[1] == self._trees.TREE:
                key = part.encode("utf-8", "surrogateescape")
                found = self._trees.entries(self.repo, node[0]).get(key)
            if found is None:
                return f"{rel!r} does not exist in the repository"
            if found[1] == _LINK_MODE:
                return (
                    f"{rel!r} goes through a symbolic link: gitexec reads only regular files "
                    "in the repository here"
                )
            node = found
        return None if self._trees.is_blob(node) else f"{rel!r} is not a regular file"

    def read(self, rel: str) -> bytes | None:
        oid = self._blob(rel)
        return None if oid is None else self.repo[oid].data  # type: ignore[attr-defined]

    def cache_key(self, rel: str) -> tuple[Hashable, bool] | None:
        oid = self._blob(rel)
        return None if oid is None else (str(oid), False)


def _parse_cached(
    source: Source, rel: str, cache: ParseCache[ParsedTicket | ParsedConfig], config: bool
) -> ParsedTicket | ParsedConfig | None:
    found = source.cache_key(rel)
    if found is None:
        return None
    unusable = source.problem(rel)
    if unusable is None:
        key, racy = found
        try:
            hit, data = cache.lookup(rel, key, racy, lambda: source.read(rel))
        except Unreadable as exc:
            unusable = str(exc)
    if unusable is not None:
        finding = Finding(rel, 1, 1, Severity.ERROR, unusable)
        return ParsedConfig(Config(), (finding,)) if config else ParsedTicket(None, (finding,))
    if hit is not None:
        return hit
    if data is None:
        return None
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
    cache.put(rel, key, racy, data, parsed)
    return parsed


def locator_for(source: Source, ticket_file: str) -> Locator:
    """A Locator over a ticket file's YAML (front matter for Markdown tickets)."""
    try:
        text = (source.read(ticket_file) or b"").decode("utf-8-sig")
    except (UnicodeDecodeError, Unreadable):
        return Locator("")
    if ticket_file.endswith(".md"):
        split = split_front_matter(text)
        if split is not None:
            return Locator(split[0], split[2])
    return Locator(text)


def load_config(root: Path) -> Config:
    """The work tree's config alone (what is wrong with it, a full load reports)."""
    parsed = _parse_cached(FileSource(root), CONFIG_FILE, ParseCache(None, "project"), config=True)
    return parsed.config if isinstance(parsed, ParsedConfig) else Config()


def load_project(
    root: Path,
    *,
    cache_path: Path | None = None,
    check_plan: bool = True,
    source: Source | None = None,
) -> Project:
    """Load and validate config, tickets and the committed plan; never raises on bad input.

    Files come from the work tree at `root` unless another `source` (a commit) is given.
    """
    # Everything made here lives as long as the command: a collection pass while it is
    # made would walk all of it made so far (at 100,000 tickets, 15% of the load's time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_project(root, cache_path, check_plan, source or FileSource(root))
    finally:
        if collecting:
            gc.enable()


def _load_project(root: Path, cache_path: Path | None, check_plan: bool, source: Source) -> Project:
    cache: ParseCache[ParsedTicket | ParsedConfig] = ParseCache(cache_path, "project")
    findings: list[Finding] = []

    config = Config()
    parsed_config = _parse_cached(source, CONFIG_FILE, cache, config=True)
    if isinstance(parsed_config, ParsedConfig):
        config = parsed_config.config
        findings.extend(parsed_config.findings)
        findings.extend(_template_findings(source, config))

    tickets: list[Ticket] = []
    names = source.ticket_names()
    if names is None:
        problem = source.problem(TICKETS_DIR) or "expected a directory"
        findings.append(Finding(TICKETS_DIR, 1, 1, Severity.ERROR, problem))
        names = []
    for name in names:
        rel = f"{TICKETS_DIR}/{name}"
        if name.startswith("."):
            if name.endswith(TICKET_SUFFIXES) and not name.startswith(".#"):  # .# : editor locks
                findings.append(
                    Finding(
                        rel,
                        1,
                        1,
                        Severity.WARNING,
                        "ignored: a hidden file (its name starts with '.'); "
                        "ticket files are named <ID>.yaml or <ID>.md",
                    )
                )
            continue
        if not name.endswith(TICKET_SUFFIXES):
            if name.endswith((".yml", ".markdown")):
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
        parsed = _parse_cached(source, rel, cache, config=False)
        if isinstance(parsed, ParsedTicket):
            findings.extend(parsed.findings)
            if parsed.ticket is not None:
                tickets.append(parsed.ticket)
    cache.save()

    tickets, cross = cross_check(source, tickets, config)
    findings.extend(cross)

    plan: Plan | None = None
    plan_data, plan_problem = _read_plan(source) if check_plan else (None, None)
    if plan_problem is not None:
        findings.append(plan_problem)
    if plan_data is not None:
        text = plan_data.decode("utf-8", errors="replace")
        plan, plan_findings = load_plan(PLAN_FILE, text)
        findings.extend(plan_findings)
        ticket_errors = any(f.is_error for f in findings)
        if plan is not None and not ticket_errors:
            findings.extend(
                check_plan_against(PLAN_FILE, text, plan, tickets, config.default_estimate_s)
            )
    return Project(root, config, tuple(tickets), tuple(sorted(findings)), plan)


def template_paths(config: Config) -> list[tuple[tuple[str, ...], str]]:
    """The templates a config names: (keys in config.yaml, repository-relative path)."""
    found: list[tuple[tuple[str, ...], str | None]] = [
        (("report", "template"), config.report_template)
    ]
    found += [
        (("agents", a.name, "prompt_template"), a.prompt_template) for a in config.agents.values()
    ]
    return [(keys, rel) for keys, rel in found if rel]


def _template_findings(source: Source, config: Config) -> list[Finding]:
    """Templates must be regular files in the repository: not missing, not behind a link."""
    wanted = template_paths(config)
    if not wanted:
        return []
    report = Reporter(CONFIG_FILE, locator_for(source, CONFIG_FILE))
    for keys, rel in wanted:
        problem = source.file_problem(rel)
        if problem is not None:
            report.error_at_value(keys, f"{'.'.join(keys)}: {problem}")
    return report.findings


def _read_plan(source: Source) -> tuple[bytes | None, Finding | None]:
    """The committed plan's content, or the finding that stops it from being read."""
    if source.cache_key(PLAN_FILE) is None:
        return None, None
    problem = source.problem(PLAN_FILE)
    data: bytes | None = None
    if problem is None:
        try:
            data = source.read(PLAN_FILE)
        except Unreadable as exc:
            problem = str(exc)
    if problem is None:
        return data, None
    return None, Finding(PLAN_FILE, 1, 1, Severity.ERROR, problem)


def cross_check(
    source: Source, tickets: Sequence[Ticket], config: Config
) -> tuple[list[Ticket], list[Finding]]:
    """Checks that need every ticket: duplicates, dependencies, cycles, agents."""
    findings: list[Finding] = []
    reporters: dict[str, Reporter] = {}

    def report(ticket: Ticket) -> Reporter:
        if ticket.file not in reporters:
            reporters[ticket.file] = Reporter(ticket.file, locator_for(source, ticket.file))
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
                    ("depends_on", i),
                    f"unknown dependency {dep!r}{fields.did_you_mean(dep, known)}",
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
        elif t.prompt and len(t.prompt) > PROMPT_ARG_WARNING // 4:
            _check_prompt_size(source, t, config.agents[agent_name], report(t))

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


# Linux refuses a single command-line argument of MAX_ARG_STRLEN (32 pages: 128 KiB) or
# more with E2BIG. The prompt template adds a little to the ticket's prompt.
MAX_ARG_STRLEN = 128 * 1024
PROMPT_ARG_WARNING = MAX_ARG_STRLEN - 2048
_PROMPT_IN_ARG = re.compile(r"(\{\{|\{%)(?:(?!\}\}|%\}).)*\bprompt\b", re.DOTALL)


def _check_prompt_size(source: Source, ticket: Ticket, agent: AgentSpec, report: Reporter) -> None:
    """Warn when a prompt the agent takes in argv cannot fit in one argument."""
    size = len((ticket.prompt or "").encode("utf-8"))
    if size <= PROMPT_ARG_WARNING or not any(_PROMPT_IN_ARG.search(a) for a in agent.command):
        return
    report.at(
        _prompt_position(source, ticket, report.locator),
        f"prompt: {size / 1024:.0f} KiB is too long for one command-line argument (at most "
        f"{MAX_ARG_STRLEN // 1024} KiB on Linux), and agent {agent.name!r} passes "
        "{{ prompt }} in its command: give the agent `stdin: prompt` (and drop {{ prompt }} "
        "from its command), or pass {{ prompt_file }} instead",
        Severity.WARNING,
    )


def _prompt_position(source: Source, ticket: Ticket, locator: Locator) -> Position:
    """Where a ticket's prompt is: its `prompt` key, or a Markdown ticket's body."""
    position = locator.key("prompt")
    if position != locator.start() or not ticket.file.endswith(".md"):
        return position
    try:
        text = (source.read(ticket.file) or b"").decode("utf-8-sig")
    except (UnicodeDecodeError, Unreadable):
        return position
    split = split_front_matter(text)
    if split is None:
        return position
    front, _, offset = split
    return (offset + front.count("\n") + 2, 1)


def _needs_run(config: Config, agent_name: str) -> bool:
    """An agent whose command renders `ticket.run` cannot work without one."""
    return any("ticket.run" in arg for arg in config.agents[agent_name].command)


def filter_findings(findings: Iterable[Finding], files: Sequence[str]) -> list[Finding]:
    wanted = set(files)
    return [f for f in findings if f.path in wanted]
