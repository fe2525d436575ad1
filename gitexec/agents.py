"""Agents: rendering their argv from templates, and running them as supervised processes.

Templated values land in argv elements and never pass through a shell. Each agent runs in
its own session (process group), so a timeout or a forced stop ends everything it spawned.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from gitexec.config import AgentSpec
from gitexec.gitutil import scrubbed_env
from gitexec.templating import (
    BoundedEnvironment,
    RenderError,
    TemplatePathError,
    read_repository_file,
    render_bounded,
    template_dir,
)
from gitexec.tickets import Ticket

KILL_GRACE_S = 5.0


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
) -> str:
    """The prompt for AI agents: `prompt_template` if configured, else prompt.md.j2.

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


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int
    timed_out: bool
    cancelled: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout_s: float | None,
    cancel: threading.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
    header: str | None = None,
    grace_s: float = KILL_GRACE_S,
) -> ProcessResult:
    """Run `argv` in its own process group, output appended to `log`.

    On timeout or cancel: SIGTERM to the group, SIGKILL after `grace_s`. Whatever the
    command leaves running in its group when it exits is killed too.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log.open("ab") as out:
        if header:
            out.write(header.encode("utf-8", "replace"))
            out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=scrubbed_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            out.write(f"gitexec: cannot start {argv[0]!r}: {exc.strerror or exc}\n".encode())
            return ProcessResult(127, False, False, time.monotonic() - start)
        pgid = proc.pid
        if on_start is not None:
            on_start(proc.pid, pgid)
        deadline = start + timeout_s if timeout_s else None
        timed_out = cancelled = False
        terminate_at: float | None = None
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if terminate_at is None:
                if deadline is not None and now >= deadline:
                    timed_out = True
                elif cancel is not None and cancel.is_set():
                    cancelled = True
                if timed_out or cancelled:
                    _signal_group(pgid, signal.SIGTERM)
                    terminate_at = now
            elif now - terminate_at >= grace_s:
                _signal_group(pgid, signal.SIGKILL)
        _signal_group(pgid, signal.SIGKILL)  # stragglers the command left behind
        duration = time.monotonic() - start
        if timed_out:
            out.write(f"\ngitexec: timed out after {timeout_s:g}s; process group killed\n".encode())
        elif cancelled:
            out.write(b"\ngitexec: stopped; process group killed\n")
    return ProcessResult(code, timed_out, cancelled, duration)


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
    """The GITEXEC_* variables of DESIGN.md §5, plus the agent's own `env`."""
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
