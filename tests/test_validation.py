"""The malformed-input corpus: every finding names file, line, column and what is wrong."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitexec.cli import main
from gitexec.project import load_project
from tests.helpers import init_repo

OK_TICKET = "id: A\ntitle: a\nrun: 'true'\n"


@dataclass(frozen=True)
class Link:
    """A ticket file that is a symbolic link to `target`."""

    target: str


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
        [
            ".gitexec/tickets/A.yaml:3:8: error: unknown agent 'claud' (did you mean 'claude'?)"
            " (agents: aider, claude, codex, gemini, shell)"
        ],
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
            ".gitexec/tickets/A.yaml:4:9: error: status: 'done' is not one of pending, ready, running, throttled, validating, merging, completed, failed, conflict, blocked, cancelled"
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
            ".gitexec/tickets/A.yaml:1:5: error: unknown agent 'robot'"
            " (agents: aider, claude, codex, gemini, shell)",
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
    *[
        pytest.param(files, config, expected, id=name)
        for name, files, config, expected in [
            # --- fuzzed YAML structures ---
            (
                "deep_flow",
                {"A.yaml": OK_TICKET + "x: " + "[" * 100 + "]" * 100 + "\n"},
                None,
                [".gitexec/tickets/A.yaml:4:67: error: YAML nested more than 64 levels deep"],
            ),
            (
                "deep_block",
                {"A.yaml": OK_TICKET + "".join(" " * i + f"k{i}:\n" for i in range(80))},
                None,
                [".gitexec/tickets/A.yaml:68:65: error: YAML nested more than 64 levels deep"],
            ),
            (
                "deep_block_sequence",
                {"A.yaml": OK_TICKET + "x:\n" + "- " * 80 + "y\n"},
                None,
                [".gitexec/tickets/A.yaml:5:127: error: YAML nested more than 64 levels deep"],
            ),
            (
                "alias_bomb",
                {
                    "A.yaml": OK_TICKET
                    + "notes:\n  - &a [x, x, x, x, x, x, x, x, x, x]\n"
                    + "".join(
                        f"  - &{'b' * (i + 1)} [{', '.join(['*' + ('b' * i or 'a')] * 10)}]\n"
                        for i in range(6)
                    )
                },
                None,
                [
                    ".gitexec/tickets/A.yaml:9:54: error: YAML aliases expand to more than 100,000 values"
                ],
            ),
            (
                "int_key",
                {"A.yaml": OK_TICKET + "1: x\n"},
                None,
                [".gitexec/tickets/A.yaml:4:1: error: keys must be strings, got an integer"],
            ),
            (
                "unhashable_key",
                {"A.yaml": OK_TICKET + "? [a, b]\n: x\n"},
                None,
                [".gitexec/tickets/A.yaml:4:3: error: keys must be strings, got a list"],
            ),
            (
                "two_documents",
                {"A.yaml": OK_TICKET + "---\nid: B\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:1: error: malformed YAML: but found another document (expected a single document in the stream started at line 1, column 1)"
                ],
            ),
            (
                "date_title",
                {"A.yaml": "id: A\ntitle: 2024-01-01\nrun: 'true'\n"},
                None,
                [".gitexec/tickets/A.yaml:2:8: error: title: expected a string, got date"],
            ),
            (
                "list_title",
                {"A.yaml": "id: A\ntitle: [a, b]\nrun: 'true'\n"},
                None,
                [".gitexec/tickets/A.yaml:2:8: error: title: expected a string, got a list"],
            ),
            (
                "null_id",
                {"A.yaml": "id:\ntitle: a\nrun: 'true'\n"},
                None,
                [".gitexec/tickets/A.yaml:1:1: error: missing required key 'id'"],
            ),
            (
                "long_number",
                {"A.yaml": OK_TICKET + "priority: " + "9" * 5000 + "\n"},
                None,
                [".gitexec/tickets/A.yaml:4:11: error: a number is too long"],
            ),
            # --- bounds ---
            (
                "estimate_inf",
                {"A.yaml": OK_TICKET + "estimate: .inf\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:11: error: estimate: a duration must be a non-negative number of seconds, got inf"
                ],
            ),
            (
                "estimate_nan",
                {"A.yaml": OK_TICKET + "estimate: .nan\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:11: error: estimate: a duration must be a non-negative number of seconds, got nan"
                ],
            ),
            (
                "estimate_huge",
                {"A.yaml": OK_TICKET + "estimate: 1e308\n"},
                None,
                [".gitexec/tickets/A.yaml:4:11: error: estimate: must be at most 30d, got 1e+308"],
            ),
            (
                "timeout_31d",
                {"A.yaml": OK_TICKET + "timeout: 31d\n"},
                None,
                [".gitexec/tickets/A.yaml:4:10: error: timeout: must be at most 30d, got '31d'"],
            ),
            (
                "retries_11",
                {"A.yaml": OK_TICKET + "retries: 11\n"},
                None,
                [".gitexec/tickets/A.yaml:4:10: error: retries: must be at most 10, got 11"],
            ),
            (
                "priority_huge",
                {"A.yaml": OK_TICKET + "priority: 100000000000000000000\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:11: error: priority: must be at most 1000000, got 100000000000000000000"
                ],
            ),
            (
                "resource_huge",
                {"A.yaml": OK_TICKET + "resources: {cpu: 257}\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:18: error: resources: resource 'cpu': must be at most 256, got 257"
                ],
            ),
            (
                "resource_name",
                {"A.yaml": OK_TICKET + "resources: {1: 2}\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:12: error: resources: resource names must be strings, got an integer"
                ],
            ),
            (
                "cfg_jobs_huge",
                {"A.yaml": OK_TICKET},
                "jobs: 257\n",
                [".gitexec/config.yaml:1:7: error: jobs: must be at most 256, got 257"],
            ),
            (
                "cfg_backoff_huge",
                {"A.yaml": OK_TICKET},
                "retry_backoff: 2h\n",
                [".gitexec/config.yaml:1:16: error: retry_backoff: must be at most 1h, got '2h'"],
            ),
            (
                "cfg_gate_batch",
                {"A.yaml": OK_TICKET},
                "gates:\n  every: 1001\n",
                [".gitexec/config.yaml:2:10: error: gates.every: must be at most 1000, got 1001"],
            ),
            (
                "cfg_reruns",
                {"A.yaml": OK_TICKET},
                "merge:\n  max_reruns: 11\n",
                [".gitexec/config.yaml:2:15: error: merge.max_reruns: must be at most 10, got 11"],
            ),
            (
                "cfg_max_parallel",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x]\n    max_parallel: 1000\n",
                [
                    ".gitexec/config.yaml:4:19: error: agents.x.max_parallel: must be at most 256, got 1000"
                ],
            ),
            # --- hostile globs ---
            (
                "glob_many_globstars",
                {
                    "A.yaml": OK_TICKET
                    + "paths: ['"
                    + "/".join(["**"] * 40)
                    + "/x', '*a*a*a*a*a*a*a*b']\n"
                },
                None,
                [],
            ),
            (
                "glob_partial_globstar",
                {"A.yaml": OK_TICKET + "paths: ['a**']\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:9: error: paths: '**' must be a whole path segment in glob 'a**'"
                ],
            ),
            (
                "glob_bad_range",
                {"A.yaml": OK_TICKET + "paths: ['[z-a]']\n"},
                None,
                [".gitexec/tickets/A.yaml:4:9: error: paths: invalid range 'z-a' in glob '[z-a]'"],
            ),
            (
                "glob_too_long",
                {"A.yaml": OK_TICKET + "paths: ['" + "a" * 5000 + "']\n"},
                None,
                [".gitexec/tickets/A.yaml:4:9: error: paths: glob is longer than 4096 characters"],
            ),
            (
                "glob_too_many_segments",
                {"A.yaml": OK_TICKET + "paths: ['" + "/".join(["a"] * 300) + "']\n"},
                None,
                [".gitexec/tickets/A.yaml:4:9: error: paths: glob has more than 256 path segments"],
            ),
            (
                "cfg_rule_glob",
                {"A.yaml": OK_TICKET},
                "merge:\n  rules:\n    - {paths: ['x/**y'], strategy: union}\n",
                [
                    ".gitexec/config.yaml:3:7: error: merge.rules: item 1: paths: '**' must be a whole path segment in glob 'x/**y'"
                ],
            ),
            # --- templates ---
            (
                "cfg_template_syntax",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x, '{% for %}']\n",
                [
                    ".gitexec/config.yaml:3:18: error: agents.x.command: invalid template '{% for %}': Expected an expression, got 'end of statement block'"
                ],
            ),
            (
                "cfg_template_nested",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x, '{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}']\n",
                [
                    ".gitexec/config.yaml:3:18: error: agents.x.command: invalid template '{{ "
                    + "(" * 74
                    + "...': nested too deeply"
                ],
            ),
            (
                "cfg_template_long_number",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x, '{{ " + "9" * 5000 + " }}']\n",
                [
                    ".gitexec/config.yaml:3:18: error: agents.x.command: invalid template '{{ "
                    + "9" * 74
                    + "...': a number is too long"
                ],
            ),
            (
                "cfg_prompt_template_absolute",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x]\n    prompt_template: /proc/self/environ\n",
                [
                    ".gitexec/config.yaml:4:22: error: agents.x.prompt_template: '/proc/self/environ' is not repository-relative (an absolute path)"
                ],
            ),
            (
                "cfg_prompt_template_parent",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x]\n    prompt_template: ../../x.j2\n",
                [
                    ".gitexec/config.yaml:4:22: error: agents.x.prompt_template: '../../x.j2' must not contain '..': it would leave the repository"
                ],
            ),
            (
                "cfg_report_template_missing",
                {"A.yaml": OK_TICKET},
                "report:\n  template: r.j2\n",
                [
                    ".gitexec/config.yaml:2:13: error: report.template: 'r.j2' does not exist in the repository"
                ],
            ),
            (
                "cfg_stdin",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x]\n    stdin: yes\n",
                [".gitexec/config.yaml:4:12: error: agents.x.stdin: 'yes' is not one of prompt"],
            ),
            # --- near-miss and unknown keys ---
            (
                "near_miss_validate",
                {"A.yaml": OK_TICKET + "valdiate: [make]\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:4:1: error: unknown key 'valdiate' (did you mean 'validate'?)"
                ],
            ),
            (
                "near_miss_case",
                {"A.yaml": "id: A\nTitle: a\nrun: 'true'\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:1:1: error: missing required key 'title'",
                    ".gitexec/tickets/A.yaml:2:1: error: unknown key 'Title' (did you mean 'title'?)",
                ],
            ),
            (
                "cfg_near_miss_agent_key",
                {"A.yaml": OK_TICKET},
                "agents:\n  x:\n    command: [x]\n    promt_template: p\n",
                [
                    ".gitexec/config.yaml:4:5: error: unknown key 'agents.x.promt_template' (did you mean 'prompt_template'?)"
                ],
            ),
            (
                "cfg_near_miss_section_key",
                {"A.yaml": OK_TICKET},
                "plan:\n  stratgy: balanced\n",
                [
                    ".gitexec/config.yaml:2:3: error: unknown key 'plan.stratgy' (did you mean 'strategy'?)"
                ],
            ),
            (
                "unknown_key_warning",
                {"A.yaml": OK_TICKET + "colour: blue\n"},
                None,
                [".gitexec/tickets/A.yaml:4:1: warning: unknown key 'colour'"],
            ),
            # --- hidden files, links, display tricks ---
            (
                "hidden_file",
                {".A.yaml": OK_TICKET, "B.yaml": OK_TICKET.replace("A", "B")},
                None,
                [
                    ".gitexec/tickets/.A.yaml:1:1: warning: ignored: a hidden file (its name starts with '.'); ticket files are named <ID>.yaml or <ID>.md"
                ],
            ),
            (
                "hidden_dotdot_file",
                {
                    "..evil.yaml": OK_TICKET,
                    ".A.yaml.swp": "x",
                    "A.yaml~": "x",
                    "B.yaml": OK_TICKET.replace("A", "B"),
                },
                None,
                [
                    ".gitexec/tickets/..evil.yaml:1:1: warning: ignored: a hidden file (its name starts with '.'); ticket files are named <ID>.yaml or <ID>.md"
                ],
            ),
            (
                "symlink_outside",
                {"A.yaml": Link("/etc/hostname")},
                None,
                [
                    ".gitexec/tickets/A.yaml:1:1: error: a symbolic link (to '/etc/hostname', outside the repository): gitexec reads only regular files here, since git stores the link rather than the file"
                ],
            ),
            (
                "symlink_dangling",
                {"A.yaml": Link("nowhere.yaml"), "B.yaml": OK_TICKET.replace("A", "B")},
                None,
                [
                    ".gitexec/tickets/A.yaml:1:1: error: a symbolic link (to 'nowhere.yaml'): gitexec reads only regular files here, since git stores the link rather than the file"
                ],
            ),
            (
                "bidi_title",
                {"A.yaml": "id: A\ntitle: \"Invoice \\u202egnp.exe\"\nrun: 'true'\n"},
                None,
                [
                    ".gitexec/tickets/A.yaml:2:8: warning: title: bidirectional control character(s) U+202E removed (they make text display differently from what it is)"
                ],
            ),
            (
                "md_deep_front_matter",
                {
                    "A.md": "---\nid: A\ntitle: a\nrun: 'true'\nx: "
                    + "{a: " * 70
                    + "}" * 70
                    + "\n---\nbody\n"
                },
                None,
                [".gitexec/tickets/A.md:5:256: error: YAML nested more than 64 levels deep"],
            ),
        ]
    ],
]


def _write(root: Path, files: dict[str, str | bytes | Link], config: str | None) -> None:
    tickets = root / ".gitexec" / "tickets"
    tickets.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Link):
            (tickets / name).symlink_to(content.target)
            continue
        data = content.encode() if isinstance(content, str) else content
        (tickets / name).write_bytes(data)
    if config is not None:
        (root / ".gitexec" / "config.yaml").write_text(config, encoding="utf-8")


@pytest.mark.parametrize(("files", "config", "expected"), CORPUS)
def test_corpus_findings(
    tmp_path: Path, files: dict[str, str | bytes | Link], config: str | None, expected: list[str]
) -> None:
    _write(tmp_path, files, config)
    assert [str(f) for f in load_project(tmp_path).findings] == expected


@pytest.mark.parametrize(("files", "config", "expected"), CORPUS)
def test_corpus_check_command_never_tracebacks(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, str | bytes | Link],
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
    assert len(CORPUS) >= 90


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
