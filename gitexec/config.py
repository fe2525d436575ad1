"""`.gitexec/config.yaml`: the value type, parsing with positions, and setting resolution.

Settings resolve: command-line flag > GITEXEC_* environment > `git config gitexec.*` >
config.yaml > built-in default (DESIGN.md §2).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gitexec import fields
from gitexec.errors import UserError
from gitexec.findings import Finding, Locator, Reporter
from gitexec.tickets import LADDER_STEPS

CONFIG_FILE = ".gitexec/config.yaml"


class Strategy(enum.Enum):
    """How `plan` groups tickets (see plan.py)."""

    BALANCED = "balanced"
    MAX_PARALLEL = "max-parallel"
    CONSERVATIVE = "conservative"
    CRITICAL_PATH = "critical-path"


class Scope(enum.Enum):
    """What to do when a ticket changes paths outside its declared `paths`."""

    ENFORCE = "enforce"
    WARN = "warn"
    OFF = "off"


class MergeOrder(enum.Enum):
    COMPLETION = "completion"
    PLAN = "plan"


RULE_STRATEGIES = ("union", "ours", "theirs")


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


SHELL_AGENT = AgentSpec("shell", ("sh", "-c", "{{ ticket.run }}"))


@dataclass(frozen=True)
class MergeRuleSpec:
    paths: tuple[str, ...]
    strategy: str  # one of RULE_STRATEGIES


@dataclass(frozen=True)
class MergeSettings:
    order: MergeOrder = MergeOrder.COMPLETION
    on_conflict: tuple[str, ...] = ("rules", "rerun", "sequential", "fail")
    max_reruns: int = 1
    rules: tuple[MergeRuleSpec, ...] = ()


@dataclass(frozen=True)
class GateSettings:
    integration: tuple[str, ...] = ()
    every: int = 1
    timeout_s: float | None = None


@dataclass(frozen=True)
class Config:
    version: int = 1
    base: str = "HEAD"
    jobs: int = 4
    default_agent: str = "shell"
    strategy: Strategy = Strategy.BALANCED
    default_estimate_s: float = 600.0
    timeout_s: float | None = None
    retries: int = 0
    retry_backoff_s: float = 2.0
    agents: Mapping[str, AgentSpec] = field(default_factory=lambda: {"shell": SHELL_AGENT})
    setup: tuple[str, ...] = ()
    worktree_dir: str | None = None  # where the pool lives (None: the user's cache dir)
    scope: Scope = Scope.WARN
    merge: MergeSettings = MergeSettings()
    gates: GateSettings = GateSettings()
    report_template: str | None = None

    def agent(self, name: str | None) -> AgentSpec:
        return self.agents[name or self.default_agent]


@dataclass(frozen=True)
class ParsedConfig:
    config: Config
    findings: tuple[Finding, ...]


# --- parsing -------------------------------------------------------------------------------


def _jinja_problem(template: str) -> str | None:
    if "{{" not in template and "{%" not in template:
        return None
    import jinja2

    try:
        jinja2.Environment().parse(template)  # noqa: S701 - argv elements, not HTML
    except jinja2.TemplateSyntaxError as exc:
        return f"invalid template {template!r}: {exc.message}"
    return None


def _command(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise fields.Invalid(
            "must be a list of arguments (argv), e.g. [claude, -p, '{{ prompt }}']; "
            "values are never passed through a shell"
        )
    argv = fields.text_list(value)
    if not argv:
        raise fields.Invalid("must not be empty")
    for i, arg in enumerate(argv):
        problem = _jinja_problem(arg)
        if problem:
            raise fields.Invalid(problem, i)
    return argv


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for k, v in fields.mapping(value).items():
        if not isinstance(k, str) or not k or "=" in k:
            raise fields.Invalid(f"invalid environment variable name {k!r}")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise fields.Invalid(f"{k}: expected a string, got {fields.type_name(v)}", k)
        out.append((k, str(v)))
    return tuple(out)


_AGENT_READERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "command": ("command", _command),
    "max_parallel": ("max_parallel", lambda v: fields.integer(v, minimum=1)),
    "timeout": ("timeout_s", fields.duration),
    "retries": ("retries", lambda v: fields.integer(v, minimum=0)),
    "fallback": ("fallback", fields.text),
    "env": ("env", _env),
    "prompt_template": ("prompt_template", fields.text),
}


def _rule(value: Any) -> MergeRuleSpec:
    m = fields.mapping(value)
    unknown = sorted(set(m) - {"paths", "strategy"})
    if unknown:
        raise fields.Invalid(f"unknown key {unknown[0]!r} (a rule has 'paths' and 'strategy')")
    if "paths" not in m or "strategy" not in m:
        raise fields.Invalid("a rule needs both 'paths' and 'strategy'")
    try:
        paths = fields.globs(m["paths"])
    except fields.Invalid as exc:
        raise fields.Invalid(f"paths: {exc.message}") from None
    if not paths:
        raise fields.Invalid("paths: must name at least one glob")
    try:
        strategy = fields.choice(m["strategy"], RULE_STRATEGIES)
    except fields.Invalid as exc:
        raise fields.Invalid(f"strategy: {exc.message}") from None
    return MergeRuleSpec(paths, strategy)


def _version(value: Any) -> int:
    if fields.integer(value) != 1:
        raise fields.Invalid(f"unsupported version {value}; this gitexec reads version 1")
    return 1


def _ladder(value: Any) -> tuple[str, ...]:
    steps = fields.each(value, lambda v: fields.choice(v, LADDER_STEPS))
    if not steps:
        raise fields.Invalid("must list at least one step")
    return steps


# Scalar settings: config path -> (Config field, reader). Also resolvable from the
# environment and git config (see SETTINGS below).
def _enum_reader(kind: type[enum.Enum]) -> Callable[[Any], Any]:
    return lambda v: kind(fields.choice(v, [m.value for m in kind]))


_TOP: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "version": ("version", _version),
    "base": ("base", fields.text),
    "jobs": ("jobs", lambda v: fields.integer(v, minimum=1)),
    "default_agent": ("default_agent", fields.text),
    "timeout": ("timeout_s", fields.duration),
    "retries": ("retries", lambda v: fields.integer(v, minimum=0)),
    "retry_backoff": ("retry_backoff_s", fields.duration),
    "scope": ("scope", _enum_reader(Scope)),
}
_SECTIONS: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "plan": {
        "strategy": ("strategy", _enum_reader(Strategy)),
        "default_estimate": ("default_estimate_s", fields.duration),
    },
    "worktree": {"setup": ("setup", fields.text_list), "dir": ("worktree_dir", fields.text)},
    "merge": {
        "order": ("merge.order", _enum_reader(MergeOrder)),
        "on_conflict": ("merge.on_conflict", _ladder),
        "max_reruns": ("merge.max_reruns", lambda v: fields.integer(v, minimum=0)),
        "rules": ("merge.rules", lambda v: fields.each(v, _rule)),
    },
    "gates": {
        "integration": ("gates.integration", fields.text_list),
        "every": ("gates.every", lambda v: fields.integer(v, minimum=1)),
        "timeout": ("gates.timeout_s", fields.duration),
    },
    "report": {"template": ("report_template", fields.text)},
}
CONFIG_KEYS = (*_TOP, "agents", *_SECTIONS)

_SAFE = YAML(typ="safe")


def parse_config(path: str, text: str) -> ParsedConfig:
    """Parse config.yaml text, reporting every problem with its position."""
    locator = Locator(text)
    report = Reporter(path, locator)
    try:
        data = _SAFE.load(text)
    except YAMLError as exc:
        report.yaml_error(exc)
        return ParsedConfig(Config(), tuple(report.findings))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        report.at((1, 1), f"the config must be a YAML mapping, not {fields.type_name(data)}")
        return ParsedConfig(Config(), tuple(report.findings))

    values: dict[str, Any] = {}

    def read(keys: tuple[str, ...], raw: Any, attr: str, reader: Callable[[Any], Any]) -> None:
        try:
            values[attr] = reader(raw)
        except fields.Invalid as exc:
            where: tuple[str | int, ...] = keys if exc.at is None else (*keys, exc.at)
            report.error_at_value(where, f"{'.'.join(keys)}: {exc.message}")

    for key, raw in data.items():
        if key in _TOP:
            read((key,), raw, *_TOP[key])
        elif key in _SECTIONS:
            if not isinstance(raw, dict):
                report.error_at_value(
                    (key,), f"{key}: expected a mapping, got {fields.type_name(raw)}"
                )
                continue
            for sub, sub_raw in raw.items():
                spec = _SECTIONS[key].get(str(sub))
                if spec is None:
                    known = _SECTIONS[key]
                    report.warn_at_key(
                        (key, sub),
                        f"unknown key '{key}.{sub}'{fields.did_you_mean(str(sub), known)}",
                    )
                    continue
                read((key, str(sub)), sub_raw, *spec)
        elif key == "agents":
            values["agents"] = _parse_agents(raw, report)
        else:
            report.warn_at_key(
                (key,), f"unknown key {key!r}{fields.did_you_mean(str(key), CONFIG_KEYS)}"
            )

    config = _build(values)
    _cross_check(config, report)
    return ParsedConfig(config, tuple(report.findings))


def _parse_agents(raw: Any, report: Reporter) -> dict[str, AgentSpec]:
    agents: dict[str, AgentSpec] = {"shell": SHELL_AGENT}
    if not isinstance(raw, dict):
        report.error_at_value(
            ("agents",), f"agents: expected a mapping, got {fields.type_name(raw)}"
        )
        return agents
    for name, spec in raw.items():
        if not isinstance(name, str) or not _valid_agent_name(name):
            report.error_at_key(("agents", name), f"agents: invalid agent name {name!r}")
            continue
        if not isinstance(spec, dict):
            report.error_at_value(
                ("agents", name),
                f"agents.{name}: expected a mapping with a 'command', got {fields.type_name(spec)}",
            )
            continue
        attrs: dict[str, Any] = {}
        for key, value in spec.items():
            entry = _AGENT_READERS.get(str(key))
            if entry is None:
                hint = fields.did_you_mean(str(key), _AGENT_READERS)
                report.warn_at_key(
                    ("agents", name, key), f"unknown key 'agents.{name}.{key}'{hint}"
                )
                continue
            attr, reader = entry
            try:
                attrs[attr] = reader(value)
            except fields.Invalid as exc:
                where: tuple[str | int, ...] = ("agents", name, key)
                if exc.at is not None:
                    where = (*where, exc.at)
                report.error_at_value(where, f"agents.{name}.{key}: {exc.message}")
        if "command" not in attrs:
            if "command" not in spec:
                report.error_at_key(("agents", name), f"agents.{name}: missing 'command'")
            continue
        agents[name] = AgentSpec(name=name, **attrs)
    return agents


def _valid_agent_name(name: str) -> bool:
    return bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def _build(values: Mapping[str, Any]) -> Config:
    top = {k: v for k, v in values.items() if "." not in k}
    merge = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("merge.")}
    gates = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("gates.")}
    return Config(**top, merge=MergeSettings(**merge), gates=GateSettings(**gates))


def _cross_check(config: Config, report: Reporter) -> None:
    if config.default_agent not in config.agents:
        report.error_at_value(
            ("default_agent",),
            f"default_agent: unknown agent {config.default_agent!r}"
            f"{fields.did_you_mean(config.default_agent, config.agents)}",
        )
    for name, agent in config.agents.items():
        if agent.fallback is not None and agent.fallback not in config.agents:
            report.error_at_value(
                ("agents", name, "fallback"),
                f"agents.{name}.fallback: unknown agent {agent.fallback!r}"
                f"{fields.did_you_mean(agent.fallback, config.agents)}",
            )
        if agent.fallback == name:
            report.error_at_value(
                ("agents", name, "fallback"),
                f"agents.{name}.fallback: an agent cannot fall back to itself",
            )


# --- resolution: flag > environment > git config > config.yaml > default -------------------


@dataclass(frozen=True)
class Setting:
    """A scalar setting that can also come from the environment and git config."""

    attr: str
    yaml_key: str
    env: str
    git_key: str
    reader: Callable[[Any], Any]
    help: str


def _from_text(reader: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def read(raw: Any) -> Any:
        if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            return reader(int(raw))
        return reader(raw)

    return read


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "base", "base", "GITEXEC_BASE", "gitexec.base", fields.text, "revision tickets start from"
    ),
    Setting(
        "jobs",
        "jobs",
        "GITEXEC_JOBS",
        "gitexec.jobs",
        _from_text(lambda v: fields.integer(v, minimum=1)),
        "agent slots (pooled worktrees)",
    ),
    Setting(
        "default_agent",
        "default_agent",
        "GITEXEC_DEFAULT_AGENT",
        "gitexec.defaultAgent",
        fields.text,
        "agent for tickets that name none",
    ),
    Setting(
        "strategy",
        "plan.strategy",
        "GITEXEC_STRATEGY",
        "gitexec.strategy",
        _enum_reader(Strategy),
        "planning strategy",
    ),
    Setting(
        "default_estimate_s",
        "plan.default_estimate",
        "GITEXEC_DEFAULT_ESTIMATE",
        "gitexec.defaultEstimate",
        fields.duration,
        "estimate for tickets without one",
    ),
    Setting(
        "scope",
        "scope",
        "GITEXEC_SCOPE",
        "gitexec.scope",
        _enum_reader(Scope),
        "changes outside a ticket's paths: enforce, warn or off",
    ),
    Setting(
        "timeout_s",
        "timeout",
        "GITEXEC_TIMEOUT",
        "gitexec.timeout",
        fields.duration,
        "default ticket timeout",
    ),
    Setting(
        "worktree_dir",
        "worktree.dir",
        "GITEXEC_WORKTREE_DIR",
        "gitexec.worktreeDir",
        fields.text,
        "directory for the pooled worktrees",
    ),
)


def resolve(
    config: Config,
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    git_config: Mapping[str, str] | None = None,
) -> Config:
    """Apply overrides in precedence order; a bad override is a UserError naming its source."""
    env = os.environ if env is None else env
    git_config = git_config or {}
    flags = flags or {}
    changes: dict[str, Any] = {}
    for s in SETTINGS:
        if flags.get(s.attr) is not None:
            changes[s.attr] = flags[s.attr]
            continue
        for source, raw in (
            (s.env, env.get(s.env)),
            (s.git_key, git_config.get(s.git_key.lower())),
        ):
            if raw is None or raw == "":
                continue
            try:
                changes[s.attr] = s.reader(raw)
            except fields.Invalid as exc:
                raise UserError(f"{source}={raw!r}: {exc.message}") from None
            break
    if not changes:
        return config
    resolved = replace(config, **changes)
    if resolved.default_agent not in resolved.agents:
        raise UserError(
            f"unknown default agent {resolved.default_agent!r} "
            f"(known: {', '.join(sorted(resolved.agents))})"
        )
    return resolved
