"""Hostile and mistaken input through the CLI: a clear message naming file, line and what is
wrong, exit 1 or 2; never exit 3, a traceback or a hang."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gitexec.project import load_project
from tests.helpers import commit_all, git, init_repo, write_files
from tests.project import gitexec, make_project, ticket_yaml
from tests.unprivileged import cli, sandbox

OK = ticket_yaml("OK", run="true")


def assert_clean_failure(code: int, out: str, err: str, expected: int) -> None:
    assert code == expected, out + err
    assert "Traceback" not in out + err
    assert "internal error" not in err


# --- findings always sort --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["check"], ["plan"], ["run", "--no-monitor"], ["new", "B", "--run", "true"]]
)
def test_a_capitalised_key_is_a_finding_in_every_command(tmp_path: Path, args: list[str]) -> None:
    """`ID: A` gave an error and a warning at one position, whose sort crashed every command."""
    repo = make_project(tmp_path / "r", {"A": "ID: A\ntitle: a\nrun: 'true'\n"})
    code, out, err = gitexec(repo, *args)
    if args[0] == "new":  # validates the new ticket against the others, and adds it
        assert_clean_failure(code, out, err, 0)
        return
    assert_clean_failure(code, out, err, 1 if args == ["check"] else 2)
    assert ".gitexec/tickets/A.yaml:1:1: error: missing required key 'id'" in out + err
    if args == ["check"]:
        assert ".gitexec/tickets/A.yaml:1:1: error: unknown key 'ID' (did you mean 'id'?)" in out


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../outside.yaml", "OK.yaml"])
def test_a_symlinked_ticket_is_a_finding(tmp_path: Path, target: str) -> None:
    (tmp_path / "outside.yaml").write_text("id: L\ntitle: l\nrun: 'true'\n")
    repo = make_project(tmp_path / "r", {"OK": OK})
    (repo / ".gitexec/tickets/L.yaml").symlink_to(target)
    outside = "" if target == "OK.yaml" else ", outside the repository"
    expected = (
        f".gitexec/tickets/L.yaml:1:1: error: a symbolic link (to {target!r}{outside}): "
        "gitexec reads only regular files here, since git stores the link rather than the file"
    )
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines()[0] == expected
    # A run reads the commit, where git stored the link: the same finding, refused (exit 2).
    commit_all(repo, "link")
    code, out, err = gitexec(repo, "run", "--no-monitor")
    assert_clean_failure(code, out, err, 2)
    assert f".gitexec/tickets/L.yaml:1:1: error: a symbolic link (to {target!r})" in err


def test_a_symlinked_config_is_a_finding(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"OK": OK})
    (repo / ".gitexec/config.yaml").symlink_to("/proc/self/environ")
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.startswith(
        ".gitexec/config.yaml:1:1: error: a symbolic link (to '/proc/self/environ', outside the "
        "repository)"
    )


def test_an_unreadable_ticket_is_a_finding() -> None:
    """Run as an unprivileged user (root reads files whatever their mode)."""
    with sandbox() as box:
        repo = make_project(box / "r", {"OK": OK})
        secret = repo / ".gitexec/tickets/S.yaml"
        secret.write_text("id: S\ntitle: s\nrun: 'true'\n")
        secret.chmod(0)
        proc = cli(box, repo, "check")
    assert_clean_failure(proc.returncode, proc.stdout, proc.stderr, 1)
    assert proc.stdout.startswith(
        ".gitexec/tickets/S.yaml:1:1: error: cannot read the file: Permission denied\n"
    )


# --- deeply nested YAML ----------------------------------------------------------------------

DEEP = "id: A\ntitle: a\nrun: 'true'\nx: " + "[" * 20_000 + "]" * 20_000 + "\n"


@pytest.mark.parametrize("args", [["check"], ["plan"], ["run", "--no-monitor"]])
def test_deeply_nested_yaml_is_a_finding(tmp_path: Path, args: list[str]) -> None:
    repo = make_project(tmp_path / "r", {"A": DEEP, "OK": OK})
    code, out, err = gitexec(repo, *args)
    assert_clean_failure(code, out, err, 1 if args == ["check"] else 2)
    assert ".gitexec/tickets/A.yaml:4:67: error: YAML nested more than 64 levels deep" in out + err


def test_nesting_that_would_crash_the_parser_is_refused_in_config_and_plan(
    tmp_path: Path,
) -> None:
    repo = make_project(tmp_path / "r", {"OK": OK})
    write_files(
        repo,
        {
            ".gitexec/config.yaml": "agents: " + "{a: " * 300_000 + "}" * 300_000 + "\n",
            ".gitexec/plan.yaml": "- " * 300_000 + "x\n",
        },
    )
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines()[:2] == [
        ".gitexec/config.yaml:1:261: error: YAML nested more than 64 levels deep",
        ".gitexec/plan.yaml:1:129: error: YAML nested more than 64 levels deep",
    ]


def test_aliases_that_expand_exponentially_are_refused(tmp_path: Path) -> None:
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    ticket = "id: A\ntitle: a\nrun: 'true'\nresult:\n" + "".join(f"  {x}\n" for x in laughs)
    repo = make_project(tmp_path / "r", {"A": ticket})
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines()[0] == (
        ".gitexec/tickets/A.yaml:9:47: error: YAML aliases expand to more than 100,000 values"
    )


# --- huge numbers ----------------------------------------------------------------------------


def test_huge_numbers_are_errors_with_positions(tmp_path: Path) -> None:
    tickets = {
        "A": ticket_yaml("A", run="true", estimate=1e308),
        "B": "id: B\ntitle: b\nrun: 'false'\nretries: 100000000000000000000\n"
        "timeout: 99999999999h\npriority: -1" + "0" * 40 + "\nresources: {cpu: 1.0e+300}\n",
        "C": "id: C\ntitle: c\nrun: 'true'\nretries: 1" + "0" * 5000 + "\n",
    }
    config = "jobs: 1000000\nretry_backoff: 1e9\nplan:\n  default_estimate: 400d\n"
    repo = make_project(tmp_path / "r", tickets, config=config)
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines() == [
        ".gitexec/config.yaml:1:7: error: jobs: must be at most 256, got 1000000",
        ".gitexec/config.yaml:2:16: error: retry_backoff: must be at most 1h, got 1e+09",
        ".gitexec/config.yaml:4:21: error: plan.default_estimate: must be at most 30d, got '400d'",
        ".gitexec/tickets/A.yaml:4:11: error: estimate: must be at most 30d, got 1e+308",
        ".gitexec/tickets/B.yaml:4:10: error: retries: must be at most 10, got 100000000000000000000",
        ".gitexec/tickets/B.yaml:5:10: error: timeout: must be at most 30d, got '99999999999h'",
        ".gitexec/tickets/B.yaml:6:11: error: priority: must be at least -1000000, got an integer of 41 digits",
        ".gitexec/tickets/B.yaml:7:18: error: resources: resource 'cpu': must be at most 256, got 1e+300",
        ".gitexec/tickets/C.yaml:4:10: error: a number is too long",
        "9 error(s), 0 warning(s) in 2 ticket(s)",
    ]
    for args in (["run", "--dry-run"], ["diagnose"], ["plan"]):
        code, out, err = gitexec(repo, *args)
        assert_clean_failure(code, out, err, 2)
        assert "estimate: must be at most 30d" in err


def test_long_estimates_within_bounds_never_overflow(tmp_path: Path) -> None:
    """A chain of tickets at the largest estimate: the sums stay finite and printable."""
    tickets = {
        f"T{i}": ticket_yaml(
            f"T{i}", run="true", estimate="30d", depends_on=[f"T{i - 1}"] * bool(i)
        )
        for i in range(40)
    }
    repo = make_project(tmp_path / "r", tickets)
    code, out, err = gitexec(repo, "run", "--dry-run")
    assert_clean_failure(code, out, err, 0)
    assert "estimated wall time >1000d; nothing was executed" in out
    code, out, err = gitexec(repo, "diagnose")
    assert_clean_failure(code, out, err, 0)
    assert "of est. >1000d" in out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--jobs", "100000"], {}, "--jobs 100000: must be at most 256, got 100000"),
        ([], {"GITEXEC_JOBS": "100000"}, "GITEXEC_JOBS='100000': must be at most 256"),
        ([], {"GITEXEC_TIMEOUT": "1e308"}, "GITEXEC_TIMEOUT='1e308': must be at most 30d"),
    ],
)
def test_huge_settings_from_flags_and_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    repo = make_project(tmp_path / "r", {"OK": OK})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = gitexec(repo, "run", "--dry-run", *args)
    assert_clean_failure(code, out, err, 2)
    assert message in err


# --- near-miss keys, --strict ----------------------------------------------------------------


def test_near_miss_keys_are_errors_other_unknown_keys_warnings(tmp_path: Path) -> None:
    tickets = {
        "A": "id: A\ntitle: a\nrun: 'true'\ndepend_on: [B]\nvaldiate: [make test]\nowner: me\n",
        "B": ticket_yaml("B", run="true"),
    }
    config = "jobz: 2\nagents:\n  x:\n    command: [x]\n    timout: 1m\nmerge:\n  rulez: []\n"
    repo = make_project(tmp_path / "r", tickets, config=config)
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines() == [
        ".gitexec/config.yaml:1:1: error: unknown key 'jobz' (did you mean 'jobs'?)",
        ".gitexec/config.yaml:5:5: error: unknown key 'agents.x.timout' (did you mean 'timeout'?)",
        ".gitexec/config.yaml:7:3: error: unknown key 'merge.rulez' (did you mean 'rules'?)",
        ".gitexec/tickets/A.yaml:4:1: error: unknown key 'depend_on' (did you mean 'depends_on'?)",
        ".gitexec/tickets/A.yaml:5:1: error: unknown key 'valdiate' (did you mean 'validate'?)",
        ".gitexec/tickets/A.yaml:6:1: warning: unknown key 'owner'",
        "5 error(s), 1 warning(s) in 2 ticket(s)",
    ]
    # The ticket must not run without the dependency and validation it meant to have.
    code, out, err = gitexec(repo, "run", "--no-monitor")
    assert_clean_failure(code, out, err, 2)
    assert "unknown key 'depend_on'" in err


def test_strict_makes_warnings_errors(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": ticket_yaml("A", run="true", owner="me")})
    assert gitexec(repo, "check") == (
        0,
        ".gitexec/tickets/A.yaml:4:1: warning: unknown key 'owner'\n"
        "0 error(s), 1 warning(s) in 1 ticket(s)\n",
        "",
    )
    assert gitexec(repo, "check", "--strict") == (
        1,
        ".gitexec/tickets/A.yaml:4:1: error: unknown key 'owner'\n"
        "1 error(s), 0 warning(s) in 1 ticket(s)\n",
        "",
    )


def test_check_says_ok(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"A": OK.replace("OK", "A"), "B": OK.replace("OK", "B")})
    assert gitexec(repo, "check") == (0, "2 tickets OK\n", "")
    assert gitexec(repo, "check", "--format", "json")[1].startswith('{\n  "ok": true')


# --- hidden files ----------------------------------------------------------------------------


def test_hidden_ticket_files_are_named_in_warnings(tmp_path: Path) -> None:
    hidden = {
        "..evil.yaml": ticket_yaml("evil", run="true"),
        ".A.yaml": ticket_yaml("A", run="true"),
        ".A.yaml.swp": "binary",
        "A.yaml~": "old",
        ".#A.yaml": "lock",
    }
    repo = make_project(tmp_path / "r", {"OK": OK})
    write_files(repo, {f".gitexec/tickets/{name}": text for name, text in hidden.items()})
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 0)
    ignored = "ignored: a hidden file (its name starts with '.'); ticket files are named <ID>.yaml or <ID>.md"
    assert out.splitlines() == [
        f".gitexec/tickets/..evil.yaml:1:1: warning: {ignored}",
        f".gitexec/tickets/.A.yaml:1:1: warning: {ignored}",
        "0 error(s), 2 warning(s) in 1 ticket(s)",
    ]
    git(repo, "add", "-Af", ".gitexec")
    commit_all(repo, "hidden")
    code, out, err = gitexec(repo, "run", "--dry-run")
    assert_clean_failure(code, out, err, 0)
    assert "OK" in out and "evil" not in out


# --- prompts over the per-argument limit -----------------------------------------------------

_ARGV_AGENT = "agents:\n  a:\n    command: [agent, -p, '{{ prompt }}']\n"
_STDIN_AGENT = "  s:\n    command: [agent, --from-stdin]\n    stdin: prompt\n"
_FILE_AGENT = "  f:\n    command: [agent, --prompt-file, '{{ prompt_file }}']\n"
_TOO_LONG = (
    "prompt: 195 KiB is too long for one command-line argument (at most 128 KiB on Linux), "
    "and agent 'a' passes {{ prompt }} in its command: give the agent `stdin: prompt` (and "
    "drop {{ prompt }} from its command), or pass {{ prompt_file }} instead"
)


def test_check_warns_about_prompts_too_long_for_an_argument(tmp_path: Path) -> None:
    long = "word " * 40_000
    tickets = {
        "A": ticket_yaml("A", agent="a", prompt=long),
        "S": ticket_yaml("S", agent="s", prompt=long),
        "F": ticket_yaml("F", agent="f", prompt=long),
        "OK": ticket_yaml("OK", agent="a", prompt="short"),
    }
    repo = make_project(tmp_path / "r", tickets, config=_ARGV_AGENT + _STDIN_AGENT + _FILE_AGENT)
    write_files(repo, {".gitexec/tickets/M.md": f"---\nid: M\ntitle: m\nagent: a\n---\n{long}\n"})
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 0)
    assert out.splitlines() == [
        f".gitexec/tickets/A.yaml:4:1: warning: {_TOO_LONG}",
        f".gitexec/tickets/M.md:6:1: warning: {_TOO_LONG}",
        "0 error(s), 2 warning(s) in 5 ticket(s)",
    ]


def test_agent_stdin_setting(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r",
        {"A": ticket_yaml("A", agent="s")},
        config=_ARGV_AGENT + _STDIN_AGENT + "  x:\n    command: [x]\n    stdin: file\n",
    )
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    assert out.splitlines()[0] == (
        ".gitexec/config.yaml:9:12: error: agents.x.stdin: 'file' is not one of prompt"
    )
    assert load_project(repo).config.agents["s"].stdin == "prompt"
    assert load_project(repo).config.agents["a"].stdin is None


# --- repositories gitexec cannot work on, run ids --------------------------------------------


def test_sha256_repository_is_refused_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "sha"
    init = subprocess.run(
        ["git", "init", "-q", "--object-format=sha256", str(repo)], capture_output=True, check=False
    )
    if init.returncode != 0:
        pytest.skip("this git cannot create SHA-256 repositories")
    write_files(repo, {".gitexec/tickets/A.yaml": ticket_yaml("A", run="true")})
    commit_all(repo, "tickets")
    for args in (["run", "--no-monitor"], ["check"], ["status"]):
        code, out, err = gitexec(repo, *args)
        assert_clean_failure(code, out, err, 2)
        assert err == (
            "gitexec: error: this repository uses SHA-256 object names "
            "(extensions.objectformat = sha256), which the pygit2 here cannot read: gitexec "
            "works on SHA-1 repositories only\n"
        )


@pytest.mark.parametrize("command", [["run", "--no-monitor"], ["collect", "results"]])
def test_bad_run_id_message(tmp_path: Path, command: list[str]) -> None:
    repo = make_project(tmp_path / "r", {"OK": OK})
    code, out, err = gitexec(repo, *command, "--run-id", "bad id")
    assert_clean_failure(code, out, err, 2)
    assert err == (
        "gitexec: error: --run-id: invalid run id 'bad id': use 1-64 letters, digits, '.', '_' "
        "or '-', starting with a letter or digit\n"
    )


# --- git exec runs ---------------------------------------------------------------------------


def test_runs_lists_every_run(tmp_path: Path) -> None:
    repo = make_project(
        tmp_path / "r", {"A": ticket_yaml("A", run="true"), "B": ticket_yaml("B", run="false")}
    )
    assert gitexec(repo, "runs") == (
        0,
        "no runs yet in this repository (start one with `git exec run`)\n",
        "",
    )
    assert gitexec(repo, "run", "--no-monitor", "--run-id", "first")[0] == 1
    assert gitexec(repo, "run", "--no-monitor", "--run-id", "second", "--only", "A")[0] == 0
    code, out, err = gitexec(repo, "runs", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)["runs"]
    assert [(r["run"], r["state"], r["completed"], r["total"]) for r in rows] == [
        ("first", "failed", 1, 2),
        ("second", "completed", 1, 1),
    ]
    assert rows[0]["integration"] == "refs/heads/gitexec/first"
    assert rows[0]["age_s"] >= rows[1]["age_s"] >= 0
    code, out, err = gitexec(repo, "runs")
    lines = out.splitlines()
    assert lines[0].split() == ["run", "state", "started", "age", "tickets", "branch"]
    assert lines[1].split()[:2] == ["first", "failed"]
    assert lines[1].split()[4:] == ["1/2", "gitexec/first"]
    assert lines[2].split()[:2] == ["second", "completed"]
    assert lines[2].split()[4:] == ["1/1", "gitexec/second"]
    assert gitexec(repo, "runs", "-h")[0] == 0


def test_a_plan_file_that_would_crash_the_parser_is_refused(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "r", {"OK": OK})
    write_files(repo, {"deep.yaml": "groups: " + "[" * 300_000 + "]" * 300_000 + "\n"})
    code, out, err = gitexec(repo, "run", "--dry-run", "deep.yaml")
    assert_clean_failure(code, out, err, 2)
    assert err == (
        "gitexec: error: the plan cannot be used:\n"
        "deep.yaml:1:72: error: YAML nested more than 64 levels deep\n"
    )


def test_a_symlinked_gitexec_directory_is_a_finding(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_files(
        elsewhere, {"tickets/A.yaml": ticket_yaml("A", run="true"), "config.yaml": "jobs: 2\n"}
    )
    repo = init_repo(tmp_path / "r")
    (repo / ".gitexec").symlink_to(elsewhere)
    code, out, err = gitexec(repo, "check")
    assert_clean_failure(code, out, err, 1)
    link = (
        f"inside the symbolic link '.gitexec' (to {str(elsewhere)!r}, outside the repository): "
        "gitexec reads only regular files here, since git stores the link rather than the file"
    )
    assert out.splitlines() == [
        f".gitexec/config.yaml:1:1: error: {link}",
        f".gitexec/tickets:1:1: error: {link}",
        "2 error(s), 0 warning(s) in 0 ticket(s)",
    ]
