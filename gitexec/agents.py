"""Agents: rendering their argv from templates, and running them as supervised processes.

Templated values land in argv elements and never pass through a shell. Running is
`gitexec.process`: `run_process`, `ProcessResult` and `KILL_GRACE_S` are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from gitexec.config import AgentSpec
from gitexec.process import KILL_GRACE_S as KILL_GRACE_S
from gitexec.process import ProcessResult as ProcessResult
from gitexec.process import run_process as run_process
from gitexec.templating import (
    BoundedEnvironment,
    RenderError,
    TemplatePathError,
    read_repository_file,
    render_bounded,
    template_dir,
)
from gitexec.tickets import Ticket


class TemplateError(Exception):
    """An agent command or prompt template failed to render."""


@functools.lru_cache(maxsize=1)
def _sandbox() -> BoundedEnvironment:
    """Where commands and prompts render: sandboxed, bounded in work and output size."""
    env = BoundedEnvironment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        loader=jinja2.FileSystemLoader(str(template_dir())),
    )
    env.globals.pop("lipsum", None)  # text generation on demand: nothing a prompt needs
    return env


@functools.lru_cache(maxsize=256)
def _argument_template(arg: str) -> jinja2.Template:
    """An argv element's compiled template (the same few strings render for every ticket)."""
    return _sandbox().compile_text(arg)


def ticket_context(ticket: Ticket) -> dict[str, Any]:
    """What templates see as `ticket`: plain values, empty strings for unset text."""
    return {
        "id": ticket.id,
        "title": ticket.title,
        "file": ticket.file,
        "run": ticket.run or "",
        "prompt": ticket.prompt or "",
        "paths": list(ticket.paths),
        "depends_on": list(ticket.depends_on),
        "validate": list(ticket.validate),
        "priority": ticket.priority,
        "estimate_s": ticket.estimate_s,
    }


def render_prompt(
    ticket: Ticket,
    *,
    base: str,
    run_id: str,
    conflicts: Sequence[str] = (),
    template_file: Path | None = None,
    root: Path | None = None,
    dependencies: Sequence[Mapping[str, Any]] = (),
    conflict_hunks: Mapping[str, str] | None = None,
) -> str:
    """The prompt for AI agents: `prompt_template` if configured, else prompt.md.j2.

    Besides the ticket, templates see what its dependencies did (`dependencies`, see
    handoff.py) and, on a conflict rerun, the conflicting files and their hunks.

    With `root` (the worktree), `template_file` is repository-relative and must resolve to
    a regular file inside it (see templating.repository_file). Without it, a given
    `template_file` must at least not be a symbolic link.
    """
    env = _sandbox()
    context = {
        "ticket": ticket_context(ticket),
        "base": base,
        "run": run_id,
        "conflicts": list(conflicts),
        "conflict_hunks": dict(conflict_hunks or {}),
        "dependencies": list(dependencies),
    }
    try:
        if template_file is None:
            template = env.get_template("prompt.md.j2")
        else:
            source = read_repository_file(root, template_file, "prompt_template")
            template = env.compile_text(source)
        return render_bounded(template, context).strip() + "\n"
    except (RenderError, TemplatePathError) as exc:
        raise TemplateError(f"prompt template: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"prompt template: {exc}") from exc


def render_command(agent: AgentSpec, context: Mapping[str, Any]) -> tuple[str, ...]:
    """Render each argv element of the agent's command with `context`."""
    out: list[str] = []
    for arg in agent.command:
        try:
            out.append(render_bounded(_argument_template(arg), context))
        except RenderError as exc:
            raise TemplateError(f"agent {agent.name!r}: argument {arg!r}: {exc}") from exc
    return tuple(out)


def agent_environment(
    agent: AgentSpec,
    *,
    run_id: str,
    ticket: Ticket,
    worktree: Path,
    base: str,
    progress_file: Path,
    conflicts: Sequence[str] = (),
) -> dict[str, str]:
    """The GITEXEC_* variables an agent sees (listed in the README), plus its own `env`."""
    env = {
        "GITEXEC_RUN": run_id,
        "GITEXEC_TICKET": ticket.id,
        "GITEXEC_TICKET_FILE": str(worktree / ticket.file),
        "GITEXEC_BASE": base,
        "GITEXEC_WORKTREE": str(worktree),
        "GITEXEC_PROGRESS_FILE": str(progress_file),
        "GITEXEC_CONFLICT_FILES": "\n".join(conflicts),
    }
    env.update(dict(agent.env))
    return env


def read_progress(path: Path) -> float | None:
    """The 0-100 progress an agent wrote to GITEXEC_PROGRESS_FILE, if any."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().rstrip("%")
        value = float(text.split()[-1]) if text else None
    except (OSError, ValueError, IndexError):
        return None
    if value is None:
        return None
    return max(0.0, min(100.0, value))
