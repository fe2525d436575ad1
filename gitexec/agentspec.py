"""What an agent is: an argv template rendered per ticket (never through a shell), and how
to read what it prints. Config, the built-in presets and the worker share this type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitexec import fields
from gitexec.dialects import Dialect

MIN_MEMORY = 16 * 1024 * 1024  # below this an agent CLI cannot even start


@dataclass(frozen=True)
class AgentLimits:
    """`agents.<name>.limits`: at most this much memory (bytes) and CPU (cores) for each of
    the agent's attempts, everything it starts included (enforced with cgroups v2)."""

    memory: int | None = None
    cpu: float | None = None

    @classmethod
    def read(cls, value: Any) -> AgentLimits:
        """From `{memory: 4G, cpu: 2}`; fields.Invalid points at the key that is wrong."""
        m = fields.mapping(value)
        out: dict[str, Any] = {}
        for key, raw in m.items():
            try:
                if key == "memory":
                    out["memory"] = fields.size(raw, minimum=MIN_MEMORY)
                elif key == "cpu":
                    out["cpu"] = fields.number(raw, minimum=0.01, maximum=fields.MAX_JOBS)
                else:
                    hint = fields.did_you_mean(str(key), ("memory", "cpu"))
                    raise fields.Invalid(f"unknown limit {key!r}{hint} (limits: memory, cpu)")
            except fields.Invalid as exc:
                raise fields.Invalid(f"{key}: {exc.message}", str(key)) from None
        if not out:
            raise fields.Invalid("name a limit: {memory: 4G, cpu: 2}")
        return cls(**out)


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
    limits: AgentLimits | None = None  # memory and CPU per attempt (cgroups v2)


SHELL_AGENT = AgentSpec("shell", ("sh", "-c", "{{ ticket.run }}"))
