"""Built-in agents for the AI coding CLIs: claude, codex, gemini and aider.

Each preset runs its CLI non-interactively in a ticket's worktree: the prompt as an
argument (stdin is closed by the engine), structured output on and read by the matching
dialect, edits allowed in the worktree only, no retries of its own where the CLI lets us
say so (gitexec decides about waiting on a throttle), and no telemetry, update checks or
auto-updates. Config can override any field (`agents.claude.max_parallel: 2`); `env`
entries are merged into the preset's. `git exec init` writes these same values.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gitexec.agentspec import AgentSpec
from gitexec.dialects import Dialect

PROMPT = "{{ prompt }}"
SESSION = "{{ session_id }}"

_CLAUDE_FLAGS = (
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-mode",
    "acceptEdits",
)

CLAUDE = AgentSpec(
    name="claude",
    command=("claude", "-p", *_CLAUDE_FLAGS, "--", PROMPT),
    dialect=Dialect.CLAUDE_JSON,
    resume_command=("claude", "-p", *_CLAUDE_FLAGS, "--resume", SESSION, "--", PROMPT),
    env=(
        ("CLAUDE_CODE_MAX_RETRIES", "0"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
    ),
    max_parallel=3,
    timeout_s=1800.0,
)

# Codex reads its model provider from $CODEX_HOME/config.toml; these overrides only turn
# off what would reach the network besides the model. Its retries are settings of that
# provider, which the preset cannot name (overriding the built-in `openai` stops codex).
_CODEX_OFFLINE = (
    "-c",
    "analytics.enabled=false",
    "-c",
    "check_for_update_on_startup=false",
    "-c",
    "features.plugins=false",
)

CODEX = AgentSpec(
    name="codex",
    command=(
        "codex",
        "exec",
        "--sandbox",
        "workspace-write",
        "--json",
        *_CODEX_OFFLINE,
        "--",
        PROMPT,
    ),
    dialect=Dialect.CODEX_JSONL,
    resume_command=(
        "codex",
        "exec",
        "--sandbox",
        "workspace-write",
        "--json",
        *_CODEX_OFFLINE,
        "resume",
        SESSION,
        "--",
        PROMPT,
    ),
    max_parallel=3,
    timeout_s=1800.0,
)

_GEMINI_FLAGS = ("--approval-mode", "auto_edit", "--output-format", "json", "--skip-trust")

GEMINI = AgentSpec(
    name="gemini",
    command=("gemini", *_GEMINI_FLAGS, "-p", PROMPT),
    dialect=Dialect.GEMINI_JSON,
    resume_command=("gemini", *_GEMINI_FLAGS, "--resume", SESSION, "-p", PROMPT),
    # Attempts per request (`general.maxAttempts`) are a settings-file value only.
    env=(("GEMINI_TELEMETRY_ENABLED", "false"),),
    timeout_s=1800.0,
)

AIDER = AgentSpec(
    name="aider",
    command=(
        "aider",
        "--yes-always",
        "--no-check-update",
        "--analytics-disable",
        "--no-show-model-warnings",
        "--no-show-release-notes",
        "--no-pretty",
        "--no-fancy-input",
        # gitexec commits the work as `ID: title`; aider's history files and repository
        # map cache would otherwise land in the worktree and be committed with it.
        "--no-auto-commits",
        "--no-dirty-commits",
        "--no-gitignore",
        "--map-tokens",
        "0",
        "--chat-history-file",
        "/dev/null",
        "--input-history-file",
        "/dev/null",
        "--message",
        PROMPT,
    ),
    dialect=Dialect.AIDER_TEXT,
    # aider's retry loop (doubling delays up to 60 s) has no setting; `timeout` bounds it.
    env=(("LITELLM_LOCAL_MODEL_COST_MAP", "True"),),
    timeout_s=1800.0,
)

PRESETS: Mapping[str, AgentSpec] = MappingProxyType(
    {spec.name: spec for spec in (CLAUDE, CODEX, GEMINI, AIDER)}
)
