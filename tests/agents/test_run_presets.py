"""Each preset through `git exec run`: the real CLI, pointed at the scripted model server by
config alone, completes its ticket and its file lands in the ticket's merge commit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.agents import clis
from tests.agents.server import Reply, ScriptedModel, Step, WriteFile
from tests.helpers import git
from tests.project import gitexec, make_project, ticket_yaml


def config_for(cli: str, server: ScriptedModel, bin_dir: Path) -> str:
    """A config that only adds the environment pointing the preset at the server."""
    env = clis.cli_environment(cli, server.url, Path(os.environ["HOME"]))
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return f"version: 1\nagents:\n  {cli}:\n    env: {json.dumps(env)}\n"


@pytest.mark.parametrize(
    "cli",
    [
        pytest.param(
            "claude",
            marks=pytest.mark.xfail(
                strict=True,
                reason="the pool lives under .git/, where Claude Code refuses to write",
            ),
        ),
        "codex",
        "gemini",
        "aider",
    ],
)
def test_preset_completes_a_ticket_through_git_exec_run(cli: str, tmp_path: Path) -> None:
    exe = clis.binary(cli)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / cli).symlink_to(exe)
    script: list[Step] = (
        [WriteFile("hello.txt", "hello\n", note="Wrote hello.txt.")]
        if cli == "aider"
        else [WriteFile("hello.txt", "hello\n"), Reply("Wrote hello.txt.")]
    )
    with ScriptedModel(script) as server:
        repo = make_project(
            tmp_path / "repo",
            {"HELLO": ticket_yaml("HELLO", agent=cli, prompt="Write hello.txt saying hello.")},
            config=config_for(cli, server, bin_dir),
        )
        code, out, err = gitexec(repo, "run", "--no-monitor", "--run-id", "r1")
        prompts = [r.text() for r in server.main_requests()]
    log = repo / ".git" / "gitexec" / "runs" / "r1" / "logs" / "HELLO.log"
    assert code == 0, (out, err, log.read_text() if log.exists() else "")
    assert git(repo, "show", "gitexec/r1:hello.txt") == "hello\n"
    files = git(repo, "show", "--first-parent", "-m", "--name-only", "--format=", "gitexec/r1")
    assert "hello.txt" in files.split()
    assert "Write hello.txt saying hello." in prompts[0]
