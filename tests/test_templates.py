"""User templates (agent commands, prompt and report templates): bounded in work and size,
and read only from regular files inside the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitexec.agents import TemplateError, render_command, render_prompt
from gitexec.config import AgentSpec
from gitexec.tickets import Ticket
from tests.helpers import commit_all, write_files
from tests.project import FAKE_AGENT, gitexec, make_project, run_ok, status, ticket_yaml


def _agent_config(command: str, extra: str = "") -> str:
    return f"version: 1\nagents:\n  t:\n    command: [{FAKE_AGENT}, -p, {json.dumps(command)}]\n{extra}"


# --- rendering is bounded --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
            "rendering stopped after 100,000 steps (loop iterations, calls, filters): "
            "a template must finish in bounded work",
        ),
        (
            "{{ 'x' * 1000000000 }}",
            "'*' would make 1,000,000,000 characters or items (at most 1,048,576)",
        ),
        ("{{ 7 ** 99999999 }}", "'**' would make an integer of over 10,000 bits"),
        ("{{ '%999999999s' % prompt }}", "'%': a width or precision over 1,048,576"),
        ("{{ prompt|center(999999999) }}", "|center: argument 999999999 is over 1,048,576"),
        (
            "{% set n = namespace(s='ab') %}{% for i in range(64) %}{% set n.s = n.s ~ n.s %}"
            "{% endfor %}{{ n.s }}",
            "'~' would make 2,097,152 characters or items (at most 1,048,576)",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nested or recursive too deeply"),
        ("{{ 1 // 0 }}", "ZeroDivisionError: integer division or modulo by zero"),
    ],
)
def test_runaway_command_template_fails_the_ticket_with_its_reason(
    tmp_path: Path, command: str, reason: str
) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="t", prompt="x"), "B": ticket_yaml("B", run="echo b > b")},
        config=_agent_config(command),
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 1, out + err
    tickets = status(repo, "r1")["tickets"]
    assert tickets["B"]["status"] == "completed"
    assert tickets["A"]["status"] == "failed"
    assert tickets["A"]["reason"] == f"agent 't': argument {command!r}: {reason}"


def test_runaway_prompt_template_fails_the_ticket(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="t", prompt="x")},
        config=_agent_config("{{ prompt }}", "    prompt_template: p.j2\n"),
        files={"p.j2": "{% for i in range(100) %}{{ ticket.title * 99999 }}{% endfor %}"},
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 1, out + err
    assert status(repo, "r1")["tickets"]["A"]["reason"] == (
        "prompt template: rendering stopped: the output is over 1,048,576 characters"
    )


def test_ordinary_templates_render_as_before() -> None:
    agent = AgentSpec(
        "t",
        (
            "x",
            "{{ ticket.id ~ ':' ~ prompt|upper }}",
            "{% for p in ticket.paths %}{{ p }},{% endfor %}",
        ),
    )
    context = {"ticket": {"id": "A", "paths": ["a", "b"]}, "prompt": "go"}
    assert render_command(agent, context) == ("x", "A:GO", "a,b,")


def test_mutating_methods_are_refused() -> None:
    agent = AgentSpec("t", ("{{ ticket.paths.append('x') }}",))
    with pytest.raises(
        TemplateError, match="access to attribute 'append' of 'list' object is unsafe"
    ):
        render_command(agent, {"ticket": {"paths": []}})


# --- templates come from regular files in the repository -------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "/proc/self/environ",
            "'/proc/self/environ' is not repository-relative (an absolute path)",
        ),
        ("../../x.j2", "'../../x.j2' must not contain '..': it would leave the repository"),
        (
            "link.j2",
            "'link.j2' goes through a symbolic link: gitexec reads only regular files in the repository here",
        ),
        (
            "dir/p.j2",
            "'dir/p.j2' goes through a symbolic link (dir): gitexec reads only regular files in the repository here",
        ),
        ("missing.j2", "'missing.j2' does not exist in the repository"),
        ("sub", "'sub' is not a regular file"),
    ],
)
def test_check_refuses_templates_outside_the_repository(
    tmp_path: Path, value: str, message: str
) -> None:
    config = _agent_config(
        "{{ prompt }}", f"    prompt_template: {value}\nreport:\n  template: {value}\n"
    )
    repo = make_project(
        tmp_path / "r", {"A": ticket_yaml("A", agent="t")}, config=config, files={"sub/x": "x"}
    )
    (repo / "link.j2").symlink_to("/proc/self/environ")
    (repo / "dir").symlink_to(tmp_path)
    (tmp_path / "p.j2").write_text("outside\n")
    code, out, err = gitexec(repo, "check")
    assert code == 1 and "Traceback" not in out + err
    assert out.splitlines()[:2] == [
        f".gitexec/config.yaml:5:22: error: agents.t.prompt_template: {message}",
        f".gitexec/config.yaml:7:13: error: report.template: {message}",
    ]


def test_report_refuses_a_template_outside_the_repository(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true")})
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    for value, message in [
        (
            "/proc/self/environ",
            "'/proc/self/environ' is not repository-relative (an absolute path)",
        ),
        ("env.j2", "'env.j2' goes through a symbolic link"),
    ]:
        write_files(repo, {".gitexec/config.yaml": f"report:\n  template: {value}\n"})
        (repo / "env.j2").unlink(missing_ok=True)
        (repo / "env.j2").symlink_to("/proc/self/environ")
        code, out, err = gitexec(repo, "report", "--run", "r1")
        assert code == 2, out + err
        assert message in err
        assert "PATH=" not in out + err


def test_report_template_includes_stay_in_the_repository(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", run="true")},
        config="report:\n  template: r/report.j2\n",
        files={"r/report.j2": "run {{ run.id }}: {% include 'env.j2' %}\n"},
    )
    assert run_ok(repo, "--run-id", "r1")[0] == 0
    (repo / "r/env.j2").symlink_to("/proc/self/environ")
    code, out, err = gitexec(repo, "report", "--run", "r1")
    assert code == 2, out + err
    assert "r/report.j2: report template: env.j2" in err
    assert "PATH=" not in out + err


def test_a_template_swapped_for_a_link_by_an_earlier_ticket_is_refused_at_use(
    tmp_path: Path,
) -> None:
    """`check` saw a regular file at the base; an agent then replaced it with a link to the
    environment. The next prompt must not read through it."""
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml("A", run="rm p.j2 && ln -s /proc/self/environ p.j2"),
            "B": ticket_yaml("B", agent="t", depends_on=["A"], prompt="ECHO hi"),
        },
        config=_agent_config("{{ prompt }}", "    prompt_template: p.j2\n"),
        files={"p.j2": "{{ ticket.prompt }}\n"},
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 1, out + err
    reason = status(repo, "r1")["tickets"]["B"]["reason"]
    assert reason.startswith("prompt template: prompt_template: ") and "symbolic link" in reason


def test_render_prompt_resolves_templates_inside_the_worktree(tmp_path: Path) -> None:
    """The helper the engine calls with the worktree as `root`."""
    root = tmp_path / "w"
    write_files(root, {"t/p.j2": "do {{ ticket.id }}\n"})
    (root / "l.j2").symlink_to(root / "t/p.j2")
    ticket = Ticket(id="A", title="a", file=".gitexec/tickets/A.yaml")
    assert (
        render_prompt(ticket, base="b", run_id="r", template_file=Path("t/p.j2"), root=root)
        == "do A\n"
    )
    for rel, message in [
        ("l.j2", "goes through a symbolic link"),
        ("/etc/passwd", "not inside the repository"),
        ("../x", "must not contain '..'"),
    ]:
        with pytest.raises(TemplateError, match=message):
            render_prompt(ticket, base="b", run_id="r", template_file=Path(rel), root=root)


def test_committed_template_problems_refuse_the_run(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="t")},
        config=_agent_config("{{ prompt }}", "    prompt_template: p.j2\n"),
    )
    (repo / "p.j2").symlink_to("/proc/self/environ")
    commit_all(repo, "link")
    code, out, err = run_ok(repo)
    assert code == 2, out + err
    assert (
        ".gitexec/config.yaml:5:22: error: agents.t.prompt_template: 'p.j2' goes through a symbolic link"
        in err
    )


def test_warm_check_sees_a_template_replaced_by_a_link(tmp_path: Path) -> None:
    """The check summary is keyed by the project files' stats; the templates the config
    names are checked again too."""
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="t")},
        config=_agent_config("{{ prompt }}", "    prompt_template: t/p.j2\n"),
        files={"t/p.j2": "{{ ticket.prompt }}\n"},
    )
    assert gitexec(repo, "check") == (0, "1 ticket OK\n", "")
    assert gitexec(repo, "check") == (0, "1 ticket OK\n", "")  # answered from the summary
    (repo / "t/p.j2").unlink()
    (repo / "t/p.j2").symlink_to("/proc/self/environ")
    code, out, _ = gitexec(repo, "check")
    assert code == 1 and "'t/p.j2' goes through a symbolic link" in out
    (repo / "t/p.j2").unlink()
    (repo / "t/p.j2").write_text("x\n")
    assert gitexec(repo, "check") == (0, "1 ticket OK\n", "")
