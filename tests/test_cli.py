"""The command line: scaffolding, help, errors and exit codes, docs kept in sync."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gitexec import config as config_module
from gitexec.cli import build_parser, main
from tests.helpers import git
from tests.project import captured, gitexec, gitexec_subprocess

ROOT = Path(__file__).resolve().parent.parent


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_init_scaffolds_and_refuses_to_overwrite(repo: Path) -> None:
    code, out, _ = gitexec(repo, "init")
    assert code == 0
    assert "created .gitexec/config.yaml" in out
    assert "created .gitexec/tickets/EXAMPLE-1.yaml" in out
    assert gitexec(repo, "check") == (0, "1 ticket OK\n", "")
    config = (repo / ".gitexec/config.yaml").read_text()
    for preset in ("claude:", "codex:", "aider:", "gemini:"):
        assert preset in config
    code, _, err = gitexec(repo, "init")
    assert code == 2
    assert "already exists; not overwriting it" in err


def test_new_writes_a_valid_ticket(repo: Path) -> None:
    assert gitexec(repo, "new", "A", "--title", "First", "--run", "echo a > a")[0] == 0
    code, out, _ = gitexec(
        repo,
        "new",
        "B-2",
        "--title",
        "Second: with colon",
        "--depends-on",
        "A",
        "--paths",
        "src/**,docs",
        "--estimate",
        "30m",
        "--run",
        "make",
        "--validate",
        "make test",
    )
    assert code == 0
    assert out == "created .gitexec/tickets/B-2.yaml\n"
    assert gitexec(repo, "check") == (0, "2 tickets OK\n", "")
    text = (repo / ".gitexec/tickets/B-2.yaml").read_text()
    assert 'title: "Second: with colon"' in text
    assert "paths: [src/**, docs]" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["new", "a b"], "invalid id 'a b'"),
        (
            ["new", "X", "--depends-on", "NOPE", "--run", "true"],
            "--depends-on: unknown ticket 'NOPE'",
        ),
        (["new", "X", "--agent", "robot", "--run", "true"], "--agent: unknown agent 'robot'"),
        (
            ["new", "X", "--paths", "../etc", "--run", "true"],
            "--paths: glob '../etc' must not contain",
        ),
        (
            ["new", "X", "--estimate", "soon", "--run", "true"],
            "--estimate: invalid duration 'soon'",
        ),
        (["new", "X"], "uses the shell agent but has no 'run' command"),
    ],
)
def test_new_rejects_bad_input(repo: Path, args: list[str], message: str) -> None:
    code, _, err = gitexec(repo, *args)
    assert code == 2
    assert message in err
    assert (
        not list((repo / ".gitexec/tickets").glob("X*"))
        if (repo / ".gitexec/tickets").exists()
        else True
    )


def test_new_refuses_existing(repo: Path) -> None:
    gitexec(repo, "new", "A", "--run", "true")
    code, _, err = gitexec(repo, "new", "A", "--run", "true")
    assert code == 2
    assert "ticket A already exists" in err


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: git exec {command}")


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nonsense"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["plan", "--jobs", "0"]) == 2


def test_not_a_repository(tmp_path: Path) -> None:
    code, _, err = gitexec(tmp_path, "check")
    assert code == 2
    assert err.startswith("gitexec: error: not a git repository")


def test_internal_error_exits_3_with_bug_report(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gitexec.commands.check as check_module

    def boom(*args: object, **kwargs: object) -> int:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(check_module, "check", boom)
    code, _, err = gitexec(repo, "check")
    assert code == 3
    assert "internal error: RuntimeError: kaboom" in err
    log = Path(os.environ["XDG_CACHE_HOME"]) / "gitexec" / "gitexec.log"
    report = log.read_text()
    assert "gitexec: 0." in report and "pygit2:" in report and "git version" in report
    assert "RuntimeError: kaboom" in report


def test_console_scripts_and_python_m(repo: Path) -> None:
    bindir = Path(sys.executable).parent
    for exe in ("gitexec", "git-exec"):
        path = bindir / exe
        if not path.exists():
            pytest.skip("console scripts are not installed next to this interpreter")
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0
        assert proc.stdout.startswith("gitexec ")
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        ["git", "exec", "-h"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )
    assert proc.returncode == 0
    assert "usage: git exec" in proc.stdout
    assert gitexec_subprocess(repo, "check").returncode == 0


def test_git_exec_help_opens_the_manual(repo: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    bindir = Path(sys.executable).parent
    manpage = bindir.parent / "share" / "man" / "man1" / "git-exec.1"
    if not manpage.is_file():
        pytest.skip("gitexec is not installed in this interpreter's prefix")
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "MANPAGER": "cat",
        "PAGER": "cat",
        "MANWIDTH": "100",
    }
    proc = subprocess.run(
        ["git", "exec", "--help"], cwd=repo, capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "git-exec - run a repository's tickets in parallel git worktrees" in proc.stdout


def test_manual_documents_every_command() -> None:
    text = (ROOT / "man" / "git-exec.1").read_text().replace("\\-", "-")
    for command in subcommands():
        assert re.search(rf"^\.(B|BR|BI) \"?{re.escape(command)}\b", text, re.MULTILINE), command


def test_readme_documents_every_command_and_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for command in subcommands():
        assert f"`{command}" in readme, command
    for setting in config_module.SETTINGS:
        assert (
            f"`{setting.yaml_key}`" in readme
            and f"`{setting.env}`" in readme
            and f"`{setting.git_key}`" in readme
        )
    for key in config_module.CONFIG_KEYS:
        assert f"`{key}" in readme, key
    for section, keys in config_module._SECTIONS.items():
        for key in keys:
            assert f"`{section}.{key}`" in readme, f"{section}.{key}"
    for key in config_module._AGENT_READERS:
        assert f"`agents.<name>.{key}`" in readme, key


def test_readme_commands_are_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(block) == 2
    assert block[0].endswith("git exec demo")
    test_command = block[1].split(" && ")[-1]
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    with captured() as (out, err):
        code = main(["demo", "--dir", str(target), "--no-monitor", "--jobs", "3"])
    assert code == 0, out.getvalue() + err.getvalue()
    text = out.getvalue()
    assert "6/8 completed, 1 failed, 1 blocked" in text
    assert "failed  PERF-1" in text
    changelog = git(target, "show", "gitexec/demo:CHANGELOG.md")
    assert "- slugify()" in changelog and "- count_words()" in changelog
    files = git(target, "ls-tree", "-r", "--name-only", "gitexec/demo").split()
    assert "textkit/__main__.py" in files and "docs/API.md" in files
