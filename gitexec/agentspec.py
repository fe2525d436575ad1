"""What an agent is: an argv template rendered per ticket (never through a shell), and how
to read what it prints. Config, the built-in presets and the worker share this type."""

from __future__ import annotations

from dataclasses import dataclass

from gitexec.dialects import Dialect


@dataclass(frozen=True)
class AgentSpec:
    """How to start one kind of agent: an argv template rendered per ticket (never a shell)."""

    name: str
    command: tuple[str, ...]
    max_parallel: int | None = None
    timeout_s: float | None = None
    retries: int | None = None
    fallback: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    prompt_template: str | None = None  # repository-relative jinja2 template for `prompt`
    dialect: Dialect = Dialect.PLAIN  # how its output reads (gitexec.dialects)
    quota: str | None = None  # agents sharing one provider account name the same quota
    resume_command: tuple[str, ...] | None = None  # argv to continue `{{ session_id }}`
    stdin: str | None = None  # "prompt": the prompt goes to the agent's stdin


SHELL_AGENT = AgentSpec("shell", ("sh", "-c", "{{ ticket.run }}"))
