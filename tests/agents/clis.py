"""The real agent CLIs in tests: where they are installed, their configuration pointed at
the scripted model server (offline: no telemetry, no update checks), and a run of a
preset's command, rendered as the engine renders it, in a real `git worktree`.

The CLIs live in $GITEXEC_AGENT_CLIS (default ~/.cache/gitexec-agent-clis), installed by
tests/agents/install-clis. Without them the tests skip with the reason, unless
GITEXEC_REQUIRE_AGENT_CLIS=1 (CI), where a missing CLI fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gitexec import dialects
from gitexec.agents import render_command, render_prompt
from gitexec.config import AgentSpec
from gitexec.presets import PRESETS
from gitexec.tickets import Ticket
from tests.agents.server import ScriptedModel
from tests.helpers import git, init_repo

# Read at import, before the suite's hermetic fixture replaces HOME and drops GITEXEC_*.
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
ROOT = Path(os.environ.get("GITEXEC_AGENT_CLIS") or _CACHE / "gitexec-agent-clis")
REQUIRED = os.environ.get("GITEXEC_REQUIRE_AGENT_CLIS") == "1"

BINARIES = {
    "claude": "npm/node_modules/.bin/claude",
    "codex": "npm/node_modules/.bin/codex",
    "gemini": "npm/node_modules/.bin/gemini",
    "aider": "aider/bin/aider",
}

# The model each CLI is told to use (claude keeps its default, so it prices the usage).
MODELS = {"codex": "gpt-scripted-1", "gemini": "gemini-scripted-1", "aider": "openai/scripted-1"}

# Prices the scripted aider model is given (USD per token, litellm's metadata format).
AIDER_PRICES = {"input": 1e-6, "output": 4e-6, "cached_input": 1e-7}


def binary(name: str) -> Path:
    """The installed CLI, or skip (fail in CI) with how to install it."""
    path = ROOT / BINARIES[name]
    if not path.exists():
        message = (
            f"the {name} CLI is not installed in {ROOT} "
            "(run tests/agents/install-clis, or set GITEXEC_AGENT_CLIS)"
        )
        if REQUIRED:
            pytest.fail(f"GITEXEC_REQUIRE_AGENT_CLIS=1 but {message}")
        pytest.skip(message)
    return path


def make_worktree(tmp_path: Path, files: Mapping[str, str] | None = None) -> Path:
    """A repository and a linked worktree of it outside `.git` (Claude Code refuses to
    write anywhere under a `.git/` path)."""
    repo = init_repo(tmp_path / "repo", {"README.md": "project\n", **(files or {})})
    worktree = tmp_path / "worktree"
    git(repo, "worktree", "add", "-q", "--detach", str(worktree))
    return worktree


def cli_environment(name: str, url: str, home: Path) -> dict[str, str]:
    """Configuration (files under `home`, variables returned) pointing `name` at `url`."""
    home.mkdir(parents=True, exist_ok=True)
    if name == "claude":
        return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-scripted"}
    if name == "codex":
        codex_home = home / ".codex"
        codex_home.mkdir(exist_ok=True)
        (codex_home / "config.toml").write_text(
            f'model = "{MODELS["codex"]}"\n'
            'model_provider = "scripted"\n'
            "[model_providers.scripted]\n"
            'name = "scripted"\n'
            f'base_url = "{url}/v1"\n'
            'env_key = "SCRIPTED_API_KEY"\n'
            'wire_api = "responses"\n'
            "request_max_retries = 0\n"
            "stream_max_retries = 0\n",
            encoding="utf-8",
        )
        return {"CODEX_HOME": str(codex_home), "SCRIPTED_API_KEY": "sk-scripted"}
    if name == "gemini":
        settings = {
            "security": {
                "auth": {"selectedType": "gemini-api-key"},
                "folderTrust": {"enabled": False},
            },
            "telemetry": {"enabled": False},
            "privacy": {"usageStatisticsEnabled": False},
            "general": {
                "enableAutoUpdate": False,
                "enableAutoUpdateNotification": False,
                "maxAttempts": 1,
            },
        }
        (home / ".gemini").mkdir(exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
        return {
            "GEMINI_API_KEY": "scripted",
            "GOOGLE_GEMINI_BASE_URL": url,
            "GEMINI_MODEL": MODELS["gemini"],
        }
    if name == "aider":
        model = MODELS["aider"]
        metadata = {
            model: {
                "max_input_tokens": 128000,
                "max_output_tokens": 16000,
                "input_cost_per_token": AIDER_PRICES["input"],
                "output_cost_per_token": AIDER_PRICES["output"],
                "cache_read_input_token_cost": AIDER_PRICES["cached_input"],
                "litellm_provider": "openai",
                "mode": "chat",
            }
        }
        (home / ".aider.model.metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        # No retries inside the OpenAI client (aider's own loop still retries for ~60 s).
        (home / ".aider.model.settings.yml").write_text(
            f"- name: {model}\n  edit_format: whole\n  extra_params:\n    max_retries: 0\n",
            encoding="utf-8",
        )
        # A non-empty price list keeps aider from fetching litellm's from the network.
        caches = home / ".aider" / "caches"
        caches.mkdir(parents=True, exist_ok=True)
        (caches / "model_prices_and_context_window.json").write_text(
            json.dumps({"gitexec-offline": {}}), encoding="utf-8"
        )
        return {
            "OPENAI_API_KEY": "sk-scripted",
            "OPENAI_API_BASE": f"{url}/v1",
            "AIDER_MODEL": model,
        }
    raise ValueError(name)


@dataclass(frozen=True)
class Run:
    """One run of an agent CLI: what it printed and how it exited."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes
    worktree: Path
    dialect: dialects.Dialect
    result_file: Path

    def report(self, pricing: Mapping[str, dialects.Price] | None = None) -> dialects.Report:
        result = self.result_file.read_bytes() if self.result_file.exists() else None
        return dialects.parse(
            self.dialect,
            stdout=self.stdout,
            stderr=self.stderr,
            exit_code=self.exit_code,
            result_file=result,
            pricing=pricing,
            argv=self.argv,
        )

    def describe(self) -> str:
        """For assertion messages."""
        return (
            f"argv: {self.argv}\nexit: {self.exit_code}\n"
            f"stdout:\n{self.stdout.decode(errors='replace')[-4000:]}\n"
            f"stderr:\n{self.stderr.decode(errors='replace')[-4000:]}"
        )


def ticket(prompt: str, tid: str = "T-1") -> Ticket:
    return Ticket(id=tid, title=f"Ticket {tid}", file=f".gitexec/tickets/{tid}.yaml", prompt=prompt)


def run_agent(
    spec: AgentSpec,
    server: ScriptedModel,
    worktree: Path,
    home: Path,
    *,
    prompt: str = "Write the file the ticket asks for.",
    cli: str | None = None,
    session_id: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
    timeout: float = 240,
) -> Run:
    """Run `spec` as the engine would: its command rendered with a ticket's prompt (or its
    resume_command with `session_id`), stdin closed, env from the preset, in `worktree`."""
    name = cli or spec.name
    exe = binary(name) if name in BINARIES else None
    the_ticket = ticket(prompt)
    rendered_prompt = render_prompt(the_ticket, base="0" * 40, run_id="test")
    context = {
        "ticket": {"id": the_ticket.id, "title": the_ticket.title, "prompt": prompt},
        "prompt": rendered_prompt,
        "run": "test",
        "worktree": str(worktree),
        "base": "0" * 40,
        "conflicts": [],
        "session_id": session_id or "",
    }
    template = spec
    if session_id is not None:
        assert spec.resume_command is not None
        template = replace(spec, command=spec.resume_command)
    argv = render_command(template, context)
    result_file = home / "result.json"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HOME": str(home),
        **dict(spec.env),
        "GITEXEC_RESULT_FILE": str(result_file),
        **(extra_env or {}),
    }
    if exe is not None:
        env["PATH"] = f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env.update(cli_environment(name, server.url, home))
        argv = (str(exe), *argv[1:]) if argv[0] == name else argv
    proc = subprocess.run(
        [*wrapper, *argv],
        cwd=worktree,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(
        tuple(argv), proc.returncode, proc.stdout, proc.stderr, worktree, spec.dialect, result_file
    )


def preset(name: str) -> AgentSpec:
    return PRESETS[name]


def with_args(spec: AgentSpec, *extra: str) -> AgentSpec:
    """The preset with arguments added before the prompt (`--` and the prompt stay last)."""
    command = list(spec.command)
    cut = command.index("--") if "--" in command else len(command) - 1
    if command[cut - 1] in ("-p", "--message"):
        cut -= 1
    return replace(spec, command=(*command[:cut], *extra, *command[cut:]))
