"""`git exec init` and `git exec new`: write config and tickets from templates, validated."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gitexec import fields
from gitexec.config import CONFIG_FILE, AgentSpec
from gitexec.errors import EXIT_OK, UserError
from gitexec.globs import validate_glob
from gitexec.presets import PRESETS
from gitexec.project import FileSource, cross_check
from gitexec.templating import render
from gitexec.tickets import TICKETS_DIR, id_problem, parse_ticket
from gitexec.workspace import Workspace

from .plan import write_atomic

EXAMPLE_ID = "EXAMPLE-1"

_TITLES = {
    "claude": "Claude Code (npm @anthropic-ai/claude-code)",
    "codex": "OpenAI Codex CLI (npm @openai/codex)",
    "gemini": "Gemini CLI (npm @google/gemini-cli)",
    "aider": "aider (pip aider-chat)",
}


def _flow(values: Sequence[str]) -> str:
    """An argv as a YAML flow sequence (JSON strings are YAML)."""
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _preset_context(spec: AgentSpec) -> dict[str, Any]:
    timeout = spec.timeout_s or 0
    return {
        "name": spec.name,
        "title": _TITLES.get(spec.name, spec.name),
        "command": _flow(spec.command),
        "resume_command": _flow(spec.resume_command) if spec.resume_command else None,
        "dialect": spec.dialect.value,
        "env": [(k, json.dumps(v)) for k, v in spec.env],
        "max_parallel": spec.max_parallel,
        "timeout": f"{int(timeout // 60)}m" if timeout % 60 == 0 else f"{timeout:g}s",
    }


def init(ws: Workspace, *, jobs: int = 4) -> int:
    """Scaffold `.gitexec/` with a config and one example ticket; never overwrite."""
    root = ws.root
    config_path = root / CONFIG_FILE
    ticket_dir = root / TICKETS_DIR
    if config_path.exists():
        raise UserError(f"{CONFIG_FILE} already exists; not overwriting it")
    existing = sorted(p.name for p in ticket_dir.glob("*")) if ticket_dir.is_dir() else []
    presets = [_preset_context(spec) for spec in PRESETS.values()]
    write_atomic(config_path, render("config.yaml.j2", jobs=jobs, presets=presets))
    created = [CONFIG_FILE]
    if not existing:
        ticket = render(
            "ticket.yaml.j2",
            id=EXAMPLE_ID,
            title="Say hello",
            agent=None,
            depends_on=[],
            paths=["hello.txt"],
            priority=0,
            estimate="1m",
            run="echo 'hello from gitexec' > hello.txt",
            prompt=None,
            validate=["test -s hello.txt"],
        )
        write_atomic(ticket_dir / f"{EXAMPLE_ID}.yaml", ticket)
        created.append(f"{TICKETS_DIR}/{EXAMPLE_ID}.yaml")
    for name in created:
        print(f"created {name}")
    print("next: `git exec new ID --title ...` to add tickets, `git exec plan`, `git exec run`")
    return EXIT_OK


def new(
    ws: Workspace,
    ticket_id: str,
    *,
    title: str | None,
    depends_on: Sequence[str],
    agent: str | None,
    paths: Sequence[str],
    estimate: str | None,
    priority: int,
    run: str | None,
    prompt: str | None,
    validate: Sequence[str],
) -> int:
    """Write `.gitexec/tickets/<ID>.yaml`, refusing anything `check` would reject."""
    problem = id_problem(ticket_id)
    if problem:
        raise UserError(problem)
    for ext in (".yaml", ".md"):
        if (ws.root / TICKETS_DIR / f"{ticket_id}{ext}").exists():
            raise UserError(f"ticket {ticket_id} already exists: {TICKETS_DIR}/{ticket_id}{ext}")
    for glob in paths:
        glob_problem = validate_glob(glob)
        if glob_problem:
            raise UserError(f"--paths: {glob_problem}")
    if estimate is not None and fields.parse_duration(estimate) is None:
        raise UserError(f"--estimate: invalid duration {estimate!r} (e.g. 30s, 20m, 1h30m)")

    project = ws.load(check_plan=False)
    known = {t.id for t in project.tickets}
    for dep in depends_on:
        if dep not in known:
            raise UserError(
                f"--depends-on: unknown ticket {dep!r}{fields.did_you_mean(dep, known)}"
            )
    if agent is not None and agent not in project.config.agents:
        raise UserError(
            f"--agent: unknown agent {agent!r} (agents: {', '.join(sorted(project.config.agents))})"
        )
    rel = f"{TICKETS_DIR}/{ticket_id}.yaml"
    text = render(
        "ticket.yaml.j2",
        id=ticket_id,
        title=title or ticket_id,
        agent=agent,
        depends_on=list(depends_on),
        paths=list(paths),
        priority=priority,
        estimate=estimate,
        run=run,
        prompt=prompt,
        validate=list(validate),
    )
    parsed = parse_ticket(rel, text)
    errors = [f for f in parsed.findings if f.is_error]
    if parsed.ticket is None or errors:
        raise UserError("the new ticket would not be valid:\n" + "\n".join(map(str, errors)))
    _, cross = cross_check(FileSource(ws.root), [*project.tickets, parsed.ticket], project.config)
    cross = [f for f in cross if f.path == rel and f.is_error]
    if cross:
        raise UserError(
            "the new ticket would not be valid:\n" + "\n".join(f.message for f in cross)
        )
    write_atomic(Path(ws.root / rel), text)
    print(f"created {rel}")
    return EXIT_OK
