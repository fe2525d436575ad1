"""Built-in agent presets: usable without config, overridable field by field, written by
`init`, and the agent fields they use validated like the rest of the config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gitexec.agents import render_command
from gitexec.config import builtin_agents, parse_config
from gitexec.dialects import Dialect, Price
from gitexec.presets import PRESETS
from tests.agents import clis
from tests.project import gitexec, make_project, ticket_yaml


def test_init_writes_the_presets_as_built_in(repo: Path) -> None:
    assert gitexec(repo, "init")[0] == 0
    text = (repo / ".gitexec/config.yaml").read_text()
    parsed = parse_config(".gitexec/config.yaml", text)
    assert parsed.findings == ()
    for name, preset in PRESETS.items():
        assert parsed.config.agents[name] == preset, name


def test_presets_need_no_config(tmp_path: Path) -> None:
    tickets = {
        name.upper(): ticket_yaml(name.upper(), agent=name, prompt="Do it.")
        for name in ("claude", "codex", "gemini", "aider")
    }
    repo = make_project(tmp_path / "p", tickets)
    assert gitexec(repo, "check") == (0, "4 tickets OK\n", "")
    assert set(builtin_agents()) == {"shell", "claude", "codex", "gemini", "aider"}


def test_config_overrides_a_preset_field_by_field() -> None:
    text = (
        "agents:\n"
        "  claude:\n"
        "    max_parallel: 1\n"
        "    quota: anthropic-team\n"
        "    env: {ANTHROPIC_BASE_URL: 'http://proxy.invalid', CLAUDE_CODE_MAX_RETRIES: '1'}\n"
        "  codex:\n"
        "    command: [codex, exec, --json, -m, gpt-x, '{{ prompt }}']\n"
        "    resume_command: null\n"
        "pricing:\n"
        "  gpt-x: {input: 1.25, output: 10, cached_input: 0.125}\n"
    )
    parsed = parse_config("c.yaml", text)
    assert parsed.findings == ()
    claude = parsed.config.agents["claude"]
    assert claude.command == PRESETS["claude"].command
    assert claude.dialect is Dialect.CLAUDE_JSON
    assert claude.max_parallel == 1
    assert claude.quota == "anthropic-team"
    env = dict(claude.env)
    assert env["ANTHROPIC_BASE_URL"] == "http://proxy.invalid"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "1", "config wins over the preset"
    assert env["DISABLE_TELEMETRY"] == "1", "the preset's other variables stay"
    codex = parsed.config.agents["codex"]
    assert codex.command[-2:] == ("gpt-x", "{{ prompt }}")
    assert codex.resume_command is None
    assert codex.dialect is Dialect.CODEX_JSONL
    assert parsed.config.pricing == {"gpt-x": Price(1.25, 10.0, 0.125)}


def test_a_new_agent_names_its_dialect(tmp_path: Path) -> None:
    config = (
        "agents:\n"
        "  mine:\n"
        "    command: [my-agent, '{{ prompt }}']\n"
        "    dialect: claude-json\n"
        "    resume_command: [my-agent, --resume, '{{ session_id }}', '{{ prompt }}']\n"
    )
    parsed = parse_config("c.yaml", config)
    assert parsed.findings == ()
    mine = parsed.config.agents["mine"]
    assert mine.dialect is Dialect.CLAUDE_JSON
    assert mine.resume_command == ("my-agent", "--resume", "{{ session_id }}", "{{ prompt }}")
    assert (
        parse_config("c.yaml", "agents:\n  mine:\n    command: [x]\n").config.agents["mine"].dialect
        is Dialect.PLAIN
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            "agents:\n  claude:\n    dialect: claude\n",
            ".gitexec/config.yaml:3:14: error: agents.claude.dialect: 'claude' is not one of"
            " claude-json, codex-jsonl, gemini-json, aider-text, plain",
        ),
        (
            "agents:\n  x:\n    command: [x]\n    resume_command: x --resume\n",
            ".gitexec/config.yaml:4:21: error: agents.x.resume_command: must be a list of"
            " arguments (argv)",
        ),
        (
            "agents:\n  x:\n    command: [x]\n    resume_command: [x, '{{ session_id']\n",
            ".gitexec/config.yaml:4:25: error: agents.x.resume_command: invalid template",
        ),
        (
            "agents:\n  x:\n    dialect: plain\n",
            ".gitexec/config.yaml:2:3: error: agents.x: missing 'command'",
        ),
        (
            "pricing:\n  gpt-x: {input: 1, output: free}\n",
            ".gitexec/config.yaml:2:29: error: pricing.gpt-x.output: expected a non-negative"
            " number (USD per million tokens), got 'free'",
        ),
        (
            "pricing:\n  gpt-x: {input: 1}\n",
            ".gitexec/config.yaml:2:3: error: pricing.gpt-x: missing 'output'",
        ),
        (
            "pricing:\n  gpt-x: {input: 1, output: 2, cache: 0.1}\n",
            ".gitexec/config.yaml:2:32: error: pricing.gpt-x: unknown key 'cache'",
        ),
        (
            "pricing: [gpt-x]\n",
            ".gitexec/config.yaml:1:10: error: pricing: expected a mapping of model names",
        ),
    ],
)
def test_agent_and_pricing_errors_name_file_line_and_column(
    tmp_path: Path, config: str, expected: str
) -> None:
    repo = make_project(tmp_path / "p", {"A": ticket_yaml("A", run="true")}, config=config)
    code, out, err = gitexec(repo, "check")
    assert code == 1, (out, err)
    assert any(line.startswith(expected) for line in out.splitlines()), out


def test_the_clis_own_retries_are_off_where_argv_or_env_can_say_so() -> None:
    """Claude Code takes its retries from the environment; codex, gemini and aider have no
    flag or variable for them (README says how each is bounded instead), and an override
    codex would refuse to start with is never in a preset."""
    context = {"prompt": "Do it.", "session_id": "s-1"}
    for name, preset in PRESETS.items():
        argv = " ".join(render_command(preset, context))
        assert "model_providers.openai" not in argv, name
        env = dict(preset.env)
        assert env.get("CLAUDE_CODE_MAX_RETRIES") == ("0" if name == "claude" else None)
    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    presets = readme.split("### codex (OpenAI Codex CLI)", 1)[1].split("### Adding", 1)[0]
    codex, rest = presets.split("### gemini (Gemini CLI)", 1)
    gemini, aider = rest.split("### aider", 1)
    assert "Codex's retries are a setting of the provider only" in codex
    assert "request_max_retries = 0" in codex
    assert "has no flag or variable for its attempts" in gemini
    assert "aider has no setting\n  for its retries" in aider


def test_codex_refuses_to_override_its_built_in_providers_retries(tmp_path: Path) -> None:
    """Why the codex preset carries no `-c model_providers.openai.request_max_retries=0`:
    codex will not load a config that overrides its built-in provider."""
    exe = clis.binary("codex")
    home = tmp_path / "codex-home"
    home.mkdir()
    override = "model_providers.openai.request_max_retries=0"
    done = subprocess.run(
        [str(exe), "exec", "--json", "--skip-git-repo-check", "-c", override, "--", "hi"],
        env={**os.environ, "CODEX_HOME": str(home), "OPENAI_API_KEY": "sk-unused"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Built-in providers cannot be overridden" in done.stdout + done.stderr
