"""The malformed-input corpus: every finding names file, line, column and what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitexec.cli import main
from gitexec.project import load_project
from tests.helpers import init_repo

OK_TICKET = "id: A\ntitle: a\nrun: 'true'\n"

CORPUS = [
    pytest.param(
        {"A.yaml": "id: A\ntitle: [unclosed\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:3:1: error: malformed YAML: did not find expected ',' or ']' (while parsing a flow sequence started at line 2, column 8)"
        ],
        id="yaml_syntax",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: x\n\tfoo: 1\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:3:1: error: malformed YAML: found a tab character that violates indentation (while scanning a plain scalar started at line 2, column 8)"
        ],
        id="tab_indent",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: x\ntitle: y\n"},
        None,
        [
            '.gitexec/tickets/A.yaml:3:1: error: malformed YAML: found duplicate key "title" with value "y" (original value: "x") (while constructing a mapping started at line 1, column 1)'
        ],
        id="dup_key",
    ),
    pytest.param(
        {"A.yaml": "- id: A\n"},
        None,
        [".gitexec/tickets/A.yaml:1:1: error: a ticket must be a YAML mapping, not a list"],
        id="list_top",
    ),
    pytest.param(
        {"A.yaml": "just text\n"},
        None,
        [".gitexec/tickets/A.yaml:1:1: error: a ticket must be a YAML mapping, not a string"],
        id="scalar_top",
    ),
    pytest.param(
        {"A.yaml": ""},
        None,
        [
            ".gitexec/tickets/A.yaml:1:1: error: empty ticket: expected a mapping with at least 'id' and 'title'"
        ],
        id="empty",
    ),
    pytest.param(
        {"A.yaml": "title: x\nrun: 'true'\n"},
        None,
        [".gitexec/tickets/A.yaml:1:1: error: missing required key 'id'"],
        id="missing_id",
    ),
    pytest.param(
        {"A.yaml": "id: A\nrun: 'true'\n"},
        None,
        [".gitexec/tickets/A.yaml:1:1: error: missing required key 'title'"],
        id="missing_title",
    ),
    pytest.param(
        {"123.yaml": "id: 123\ntitle: x\nrun: 'true'\n"},
        None,
        [
            '.gitexec/tickets/123.yaml:1:5: error: id: expected a string, got an integer (quote it: id: "123")'
        ],
        id="int_id",
    ),
    pytest.param(
        {"a b.yaml": "id: a b\ntitle: x\nrun: 'true'\n"},
        None,
        [
            ".gitexec/tickets/a b.yaml:1:5: error: invalid id 'a b': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ],
        id="bad_id_chars",
    ),
    pytest.param(
        {"a..b.yaml": "id: a..b\ntitle: x\nrun: 'true'\n"},
        None,
        [
            ".gitexec/tickets/a..b.yaml:1:5: error: invalid id 'a..b': must not contain '..' or end with '.' or '.lock'"
        ],
        id="id_dotdot",
    ),
    pytest.param(
        {"a.lock.yaml": "id: a.lock\ntitle: x\nrun: 'true'\n"},
        None,
        [
            ".gitexec/tickets/a.lock.yaml:1:5: error: invalid id 'a.lock': must not contain '..' or end with '.' or '.lock'"
        ],
        id="id_lock",
    ),
    pytest.param(
        {"A.yaml": "id: B\ntitle: x\nrun: 'true'\n"},
        None,
        [".gitexec/tickets/A.yaml:1:5: error: id 'B' does not match the file name (expected 'A')"],
        id="id_stem",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: ''\nrun: 'true'\n"},
        None,
        [".gitexec/tickets/A.yaml:2:8: error: title: must not be empty"],
        id="empty_title",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: x\nrun: 'true'\ndepends_on: {B: 1}\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:13: error: depends_on: expected a list of strings, got a mapping"
        ],
        id="deps_type",
    ),
    pytest.param(
        {
            "A.yaml": "id: A\ntitle: x\nrun: 'true'\ndepends_on: [B, 3]\n",
            "B.yaml": "id: B\ntitle: b\nrun: 'true'\n",
        },
        None,
        [
            ".gitexec/tickets/A.yaml:4:17: error: depends_on: item 2 must be a non-empty string, got an integer"
        ],
        id="deps_item_type",
    ),
    pytest.param(
        {
            "A.yaml": "id: A\ntitle: x\nrun: 'true'\ndepends_on:\n  - BB\n",
            "B.yaml": "id: B\ntitle: b\nrun: 'true'\n",
        },
        None,
        [".gitexec/tickets/A.yaml:5:5: error: unknown dependency 'BB' (did you mean 'B'?)"],
        id="unknown_dep",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: x\nrun: 'true'\ndepends_on: [A]\n"},
        None,
        [".gitexec/tickets/A.yaml:4:14: error: ticket 'A' depends on itself"],
        id="self_dep",
    ),
    pytest.param(
        {
            "A.yaml": "id: A\ntitle: a\nrun: 'true'\ndepends_on: [B]\n",
            "B.yaml": "id: B\ntitle: b\nrun: 'true'\ndepends_on: [C]\n",
            "C.yaml": "id: C\ntitle: c\nrun: 'true'\ndepends_on: [A]\n",
        },
        None,
        [".gitexec/tickets/A.yaml:4:14: error: dependency cycle: A -> B -> C -> A"],
        id="cycle3",
    ),
    pytest.param(
        {
            "A.yaml": "id: A\ntitle: a\nrun: 'true'\n",
            "A.md": "---\nid: A\ntitle: a\nrun: 'true'\n---\nbody\n",
        },
        None,
        [".gitexec/tickets/A.yaml:1:5: error: duplicate id 'A' (also in .gitexec/tickets/A.md)"],
        id="dup_id",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nagent: claud\n"},
        None,
        [".gitexec/tickets/A.yaml:3:8: error: unknown agent 'claud' (agents: shell)"],
        id="unknown_agent",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\nestimate: 30 minutes\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:11: error: estimate: invalid duration '30 minutes': use s, m, h or d, e.g. 30s, 20m, 1h30m"
        ],
        id="bad_duration",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\ntimeout: -5\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:10: error: timeout: a duration must be a non-negative number of seconds, got -5"
        ],
        id="neg_timeout",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\npaths: ['src/[abc']\n"},
        None,
        [".gitexec/tickets/A.yaml:4:9: error: paths: unclosed '[' in glob 'src/[abc'"],
        id="bad_glob",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\npaths: ['../etc/**']\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:9: error: paths: glob '../etc/**' must not contain '.' or '..' segments"
        ],
        id="glob_dotdot",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\ndepend_on: [B]\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:1: error: unknown key 'depend_on' (did you mean 'depends_on'?)"
        ],
        id="near_miss_key",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\npriority: high\n"},
        None,
        [".gitexec/tickets/A.yaml:4:11: error: priority: expected an integer, got a string"],
        id="priority_str",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\npriority: true\n"},
        None,
        [".gitexec/tickets/A.yaml:4:11: error: priority: expected an integer, got a boolean"],
        id="priority_bool",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\nretries: -1\n"},
        None,
        [".gitexec/tickets/A.yaml:4:10: error: retries: must be at least 0, got -1"],
        id="retries_neg",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\nstatus: done\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:9: error: status: 'done' is not one of pending, ready, running, validating, merging, completed, failed, conflict, blocked, cancelled"
        ],
        id="bad_status",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\nresources: {cpu: lots}\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:18: error: resources: resource 'cpu': expected a number, got a string"
        ],
        id="resources_bad",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:1:1: error: ticket 'A' uses the shell agent but has no 'run' command"
        ],
        id="shell_no_run",
    ),
    pytest.param(
        {"A.md": "# Title\nbody\n"},
        None,
        [
            ".gitexec/tickets/A.md:1:1: error: a Markdown ticket must start with YAML front matter between '---' lines"
        ],
        id="md_no_front",
    ),
    pytest.param(
        {"A.md": "---\nid: A\ntitle: [x\n---\nbody\n"},
        None,
        [
            ".gitexec/tickets/A.md:4:1: error: malformed YAML: did not find expected ',' or ']' (while parsing a flow sequence started at line 3, column 8)"
        ],
        id="md_bad_yaml",
    ),
    pytest.param(
        {"A.md": "---\nid: A\ntitle: a\nagent: shell\nrun: 'true'\nprompt: p\n---\nbody\n"},
        None,
        [
            ".gitexec/tickets/A.md:6:1: error: prompt: given both in front matter and as the Markdown body"
        ],
        id="md_both_prompt",
    ),
    pytest.param(
        {"A.yaml": b"id: A\ntitle: caf\xe9\nrun: 'true'\n"},
        None,
        [".gitexec/tickets/A.yaml:2:11: error: file is not valid UTF-8"],
        id="not_utf8",
    ),
    pytest.param(
        {"A.yml": "id: A\ntitle: a\n"},
        None,
        [
            ".gitexec/tickets/A.yml:1:1: warning: ignored: ticket files are named <ID>.yaml or <ID>.md"
        ],
        id="yml_ext",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\nvalidate: 3\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:11: error: validate: expected a list of strings, got an integer"
        ],
        id="validate_type",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: !!python/object:os.system a\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:2:8: error: malformed YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"
        ],
        id="python_tag",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\non_conflict: [rules, retry]\n"},
        None,
        [
            ".gitexec/tickets/A.yaml:4:22: error: on_conflict: item 2: 'retry' is not one of rules, rerun, sequential, fail"
        ],
        id="on_conflict_bad",
    ),
    pytest.param(
        {
            "A.yaml": "id: A\ntitle: a\nrun: 'true'\ndepends_on: [B, B]\n",
            "B.yaml": "id: B\ntitle: b\nrun: 'true'\n",
        },
        None,
        [".gitexec/tickets/A.yaml:4:17: warning: depends_on: 'B' is listed twice"],
        id="dup_dep",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "jobs: 0\n",
        [".gitexec/config.yaml:1:7: error: jobs: must be at least 1, got 0"],
        id="cfg_jobs",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "default_agent: robot\n",
        [
            ".gitexec/config.yaml:1:16: error: default_agent: unknown agent 'robot'",
            ".gitexec/tickets/A.yaml:1:5: error: unknown agent 'robot' (agents: shell)",
        ],
        id="cfg_unknown_default",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "agents:\n  claude:\n    command: claude -p\n",
        [
            ".gitexec/config.yaml:3:14: error: agents.claude.command: must be a list of arguments (argv), e.g. [claude, -p, '{{ prompt }}']; values are never passed through a shell"
        ],
        id="cfg_command_str",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "agents:\n  x:\n    command: [x, '{{ prompt ']\n",
        [
            ".gitexec/config.yaml:3:18: error: agents.x.command: invalid template '{{ prompt ': unexpected end of template, expected 'end of print statement'."
        ],
        id="cfg_bad_template",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "jobz: 3\n",
        [".gitexec/config.yaml:1:1: error: unknown key 'jobz' (did you mean 'jobs'?)"],
        id="cfg_near_miss_key",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "merge:\n  rules:\n    - {paths: [a], strategy: mine}\n",
        [
            ".gitexec/config.yaml:3:7: error: merge.rules: item 1: strategy: 'mine' is not one of union, ours, theirs"
        ],
        id="cfg_bad_rule",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "agents:\n  x:\n    command: [x]\n    fallback: y\n",
        [".gitexec/config.yaml:4:15: error: agents.x.fallback: unknown agent 'y'"],
        id="cfg_fallback",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "merge:\n  on_conflict: [rules, pray]\n",
        [
            ".gitexec/config.yaml:2:24: error: merge.on_conflict: item 2: 'pray' is not one of rules, rerun, sequential, fail"
        ],
        id="cfg_ladder",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "- a\n",
        [".gitexec/config.yaml:1:1: error: the config must be a YAML mapping, not a list"],
        id="cfg_list",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "scope: strict\n",
        [".gitexec/config.yaml:1:8: error: scope: 'strict' is not one of enforce, warn, off"],
        id="cfg_scope",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "agents:\n  x:\n    timeout: 1m\n",
        [".gitexec/config.yaml:2:3: error: agents.x: missing 'command'"],
        id="cfg_missing_command",
    ),
    pytest.param(
        {"A.yaml": "id: A\ntitle: a\nrun: 'true'\n"},
        "version: 2\n",
        [
            ".gitexec/config.yaml:1:10: error: version: unsupported version 2; this gitexec reads version 1"
        ],
        id="cfg_version",
    ),
]


def _write(root: Path, files: dict[str, str | bytes], config: str | None) -> None:
    tickets = root / ".gitexec" / "tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (tickets / name).write_bytes(data)
    if config is not None:
        (root / ".gitexec" / "config.yaml").write_text(config, encoding="utf-8")


@pytest.mark.parametrize(("files", "config", "expected"), CORPUS)
def test_corpus_findings(
    tmp_path: Path, files: dict[str, str | bytes], config: str | None, expected: list[str]
) -> None:
    _write(tmp_path, files, config)
    assert [str(f) for f in load_project(tmp_path).findings] == expected


@pytest.mark.parametrize(("files", "config", "expected"), CORPUS)
def test_corpus_check_command_never_tracebacks(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str | bytes],
    config: str | None,
    expected: list[str],
) -> None:
    repo = init_repo(tmp_path / "repo")
    _write(repo, files, config)
    errors = any(": error: " in line for line in expected)
    assert main(["-C", str(repo), "check"]) == (1 if errors else 0)
    out, err = capsys.readouterr()
    assert out.splitlines()[: len(expected)] == expected
    assert "Traceback" not in out + err


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30


def test_check_through_python_m(repo: Path) -> None:
    _write(repo, {"A.yaml": "id: A\ntitle: a\nrun: 'true'\ndepends_on: [B]\n"}, None)
    proc = subprocess.run(
        [sys.executable, "-m", "gitexec", "check"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith(".gitexec/tickets/A.yaml:4:14: error: unknown dependency 'B'\n")
    assert proc.stderr == ""


def test_check_files_filters_findings(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(repo, {"A.yaml": "id: A\ntitle: a\n", "B.yaml": OK_TICKET.replace("A", "B")}, None)
    assert main(["-C", str(repo), "check", ".gitexec/tickets/B.yaml", "README.md"]) == 0
    assert capsys.readouterr().out == "2 files OK\n"
    assert main(["-C", str(repo / ".gitexec"), "check", "tickets/A.yaml"]) == 1
    assert "A.yaml:1:1: error" in capsys.readouterr().out


def test_warnings_alone_pass(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(repo, {"A.yaml": OK_TICKET + "colour: blue\n"}, None)
    assert main(["-C", str(repo), "check"]) == 0
    assert "4:1: warning: unknown key 'colour'" in capsys.readouterr().out
