"""`.gitexec/config.yaml`: the value type, parsing with positions, and setting resolution.

Settings resolve: command-line flag > GITEXEC_* environment > `git config gitexec.*` >
config.yaml > built-in default.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gitexec import fields
from gitexec.agentspec import SHELL_AGENT as SHELL_AGENT
from gitexec.agentspec import AgentLimits
from gitexec.agentspec import AgentSpec as AgentSpec
from gitexec.dialects import Dialect, Price
from gitexec.errors import UserError
from gitexec.fields import MAX_JOBS, MAX_RETRIES
from gitexec.findings import Finding, Locator, Reporter
from gitexec.notifyspec import NotifySpec, parse_notify
from gitexec.presets import PRESETS
from gitexec.repopath import path_problem
from gitexec.spending import Budget, QuotaPolicy, parse_budget, parse_pricing, parse_quotas
from gitexec.tickets import DEFAULT_LADDER, ConflictStep, ladder, unknown_key

CONFIG_FILE = ".gitexec/config.yaml"
MAX_BACKOFF_S = 3600.0  # doubled per retry: 1h * 2**(MAX_RETRIES - 1) is already 3 weeks
MAX_GATE_BATCH = 1000


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
AGENT_STDIN = ("prompt",)  # what an agent may read on stdin (default: nothing)


def builtin_agents() -> dict[str, AgentSpec]:
    """The agents every project has: `shell` and the AI CLI presets."""
    return {"shell": SHELL_AGENT, **PRESETS}


@dataclass(frozen=True)
class MergeRuleSpec:
    paths: tuple[str, ...]
    strategy: str  # one of RULE_STRATEGIES


@dataclass(frozen=True)
class MergeSettings:
    order: MergeOrder = MergeOrder.COMPLETION
    on_conflict: tuple[ConflictStep, ...] = DEFAULT_LADDER
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
    agents: Mapping[str, AgentSpec] = field(default_factory=builtin_agents)
    setup: tuple[str, ...] = ()
    worktree_dir: str | None = None  # where the pool lives (None: the user's cache dir)
    scope: Scope = Scope.WARN
    merge: MergeSettings = MergeSettings()
    gates: GateSettings = GateSettings()
    report_template: str | None = None
    log_max_bytes: int = 50 * 1024 * 1024  # each ticket's log keeps its head and tail
    pricing: Mapping[str, Price] = field(default_factory=dict)  # model -> USD per 1M tokens
    quotas: Mapping[str, QuotaPolicy] = field(default_factory=dict)  # pool -> its limits
    budget: Budget = field(default_factory=Budget)
    resume_sessions: bool = True  # retries and reruns continue the agent's session
    notify: tuple[NotifySpec, ...] = ()  # commands run on run-finished, ticket-failed, ...

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
    import jinja2  # slow to import: only for configs with templates

    from gitexec.templating import BoundedEnvironment

    shown = template if len(template) <= 80 else template[:77] + "..."
    try:
        BoundedEnvironment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return f"invalid template {shown!r}: {exc.message}"
    except RecursionError:
        return f"invalid template {shown!r}: nested too deeply"
    except ValueError:  # an integer literal Python will not convert
        return f"invalid template {shown!r}: a number is too long"
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


def _repository_path(value: Any) -> str:
    """A path to a file in the repository (a template): relative, never leaving it."""
    problem = path_problem(fields.text(value))
    if problem is not None:
        raise fields.Invalid(problem)
    return str(value)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for k, v in fields.mapping(value).items():
        if not isinstance(k, str) or not k or "=" in k:
            raise fields.Invalid(f"invalid environment variable name {k!r}")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise fields.Invalid(f"{k}: expected a string, got {fields.type_name(v)}", k)
        out.append((k, str(v)))
    return tuple(out)


def _optional_command(value: Any) -> tuple[str, ...] | None:
    return None if value is None else _command(value)


def _dialect(value: Any) -> Dialect:
    return Dialect(fields.choice(value, [d.value for d in Dialect]))


_AGENT_READERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "command": ("command", _command),
    "max_parallel": ("max_parallel", lambda v: fields.integer(v, minimum=1, maximum=MAX_JOBS)),
    "timeout": ("timeout_s", fields.duration),
    "retries": ("retries", lambda v: fields.integer(v, minimum=0, maximum=MAX_RETRIES)),
    "fallback": ("fallback", fields.text),
    "env": ("env", _env),
    "prompt_template": ("prompt_template", _repository_path),
    "stdin": ("stdin", lambda v: fields.choice(v, AGENT_STDIN)),
    "dialect": ("dialect", _dialect),
    "quota": ("quota", fields.text),
    "resume_command": ("resume_command", _optional_command),
    "limits": ("limits", AgentLimits.read),
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


# Scalar settings: config path -> (Config field, reader). Also resolvable from the
# environment and git config (see SETTINGS below).
def _enum_reader(kind: type[enum.Enum]) -> Callable[[Any], Any]:
    return lambda v: kind(fields.choice(v, [m.value for m in kind]))


_TOP: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "version": ("version", _version),
    "base": ("base", fields.text),
    "jobs": ("jobs", lambda v: fields.integer(v, minimum=1, maximum=MAX_JOBS)),
    "default_agent": ("default_agent", fields.text),
    "timeout": ("timeout_s", fields.duration),
    "retries": ("retries", lambda v: fields.integer(v, minimum=0, maximum=MAX_RETRIES)),
    "retry_backoff": ("retry_backoff_s", lambda v: fields.duration(v, maximum=MAX_BACKOFF_S)),
    "scope": ("scope", _enum_reader(Scope)),
    "resume_sessions": ("resume_sessions", fields.boolean),
}
_SECTIONS: dict[str, dict[str, tuple[str, Callable[[Any], Any]]]] = {
    "plan": {
        "strategy": ("strategy", _enum_reader(Strategy)),
        "default_estimate": ("default_estimate_s", fields.duration),
    },
    "worktree": {"setup": ("setup", fields.text_list), "dir": ("worktree_dir", fields.text)},
    "merge": {
        "order": ("merge.order", _enum_reader(MergeOrder)),
        "on_conflict": ("merge.on_conflict", ladder),
        "max_reruns": (
            "merge.max_reruns",
            lambda v: fields.integer(v, minimum=0, maximum=MAX_RETRIES),
        ),
        "rules": ("merge.rules", lambda v: fields.each(v, _rule)),
    },
    "gates": {
        "integration": ("gates.integration", fields.text_list),
        "every": ("gates.every", lambda v: fields.integer(v, minimum=1, maximum=MAX_GATE_BATCH)),
        "timeout": ("gates.timeout_s", fields.duration),
    },
    "report": {"template": ("report_template", _repository_path)},
    "logs": {"max_size": ("log_max_bytes", lambda v: fields.size(v, minimum=64 * 1024))},
}
CONFIG_KEYS = (*_TOP, "agents", "pricing", "quotas", "budget", "notify", *_SECTIONS)


def parse_config(path: str, text: str) -> ParsedConfig:
    """Parse config.yaml text, reporting every problem with its position."""
    locator = Locator(text)
    report = Reporter(path, locator)
    loaded, data = report.load_yaml(text)
    if not loaded:
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
                    unknown_key(report, (key, str(sub)), str(sub), known, known)
                    continue
                read((key, str(sub)), sub_raw, *spec)
        elif key == "agents":
            values["agents"] = _parse_agents(raw, report)
        elif key == "pricing":
            values["pricing"] = parse_pricing(raw, report)
        elif key == "quotas":
            values["quotas"] = parse_quotas(raw, report)
        elif key == "budget":
            values["budget"] = parse_budget(raw, report)
        elif key == "notify":
            values["notify"] = parse_notify(raw, report, _command)
        else:
            unknown_key(report, (str(key),), str(key), CONFIG_KEYS, CONFIG_KEYS)

    config = _build(values)
    _cross_check(config, report)
    return ParsedConfig(config, tuple(report.findings))


def _parse_agents(raw: Any, report: Reporter) -> dict[str, AgentSpec]:
    """Config agents over the built-in ones: a built-in's fields are overridden one by one
    (its `env` merged), so `claude: {max_parallel: 2}` keeps the preset's command."""
    builtin = builtin_agents()
    agents = dict(builtin)
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
                known = _AGENT_READERS
                unknown_key(report, ("agents", name, str(key)), str(key), known, known)
                continue
            attr, reader = entry
            try:
                attrs[attr] = reader(value)
            except fields.Invalid as exc:
                where: tuple[str | int, ...] = ("agents", name, key)
                if exc.at is not None:
                    where = (*where, exc.at)
                report.error_at_value(where, f"agents.{name}.{key}: {exc.message}")
        base = builtin.get(name)
        if base is not None:
            if "env" in attrs:
                attrs["env"] = tuple({**dict(base.env), **dict(attrs["env"])}.items())
            agents[name] = replace(base, **attrs)
            continue
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
        _from_text(lambda v: fields.integer(v, minimum=1, maximum=MAX_JOBS)),
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
        flag = flags.get(s.attr)
        if flag is not None:
            try:
                changes[s.attr] = flag if isinstance(flag, enum.Enum) else s.reader(flag)
            except fields.Invalid as exc:
                raise UserError(f"--{s.yaml_key.replace('_', '-')} {flag}: {exc.message}") from None
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
