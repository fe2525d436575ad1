"""Property: whatever ticket files and config a repository holds, `check`, `plan` and
`run --dry-run` answer with findings that name their file, or a clear error; never an
internal error (exit 3), a traceback or a hang.

A few examples keep the suite fast; GITEXEC_PROPERTY_EXAMPLES=400 searches harder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import commit_all, init_repo, write_files
from tests.project import gitexec

TICKET_KEYS = [
    "id", "title", "agent", "depends_on", "paths", "priority", "estimate", "run", "prompt",
    "validate", "timeout", "retries", "resources", "on_conflict", "status", "result",
    "depend_on", "valdiate", "ID", "Title", "colour", "notes",
]  # fmt: skip
CONFIG_KEYS = [
    "version", "base", "jobs", "default_agent", "timeout", "retries", "retry_backoff", "scope",
    "plan", "agents", "worktree", "merge", "gates", "report", "jobz",
]  # fmt: skip
IDS = ["A", "B", "C", "a b", "..x", "A.lock", "1"]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "A",
            "B",
            "true",
            "30m",
            "1e308",
            "99999d",
            "src/**",
            "**/**/**/x",
            "[z-a]",
            "a**",
            "../x",
            "/proc/self/environ",
            "{{ prompt }}",
            "{% for i in range(9) %}",
            "shell",
            "rules",
            "union",
            "\u202e",
            "",
        ]
    ),
    st.text(max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(["paths", "strategy", "command", "x", "cpu"]), inner, max_size=3
        ),
    ),
    max_leaves=12,
)
_FRAGMENTS = ["[", "]", "{", "}", ": ", "- ", "&a ", "*a ", "!!python/object ", "\t", "---\n", "'", '"', "? ", "\n", "  ", "id", "title", "x", "#", "|\n", "%YAML 1.1\n"]  # fmt: skip
_garbage = st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join)


def _mapping(keys: list[str]) -> st.SearchStrategy[str]:
    return st.dictionaries(st.sampled_from(keys), _values, max_size=8).map(
        lambda d: json.dumps(d, ensure_ascii=False)
    )


@st.composite
def _ticket(draw: st.DrawFn, stem: str) -> str:
    """Mostly a plausible ticket (its id, a title, a run command) with random other keys,
    sometimes random keys only, sometimes YAML-ish garbage."""
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "keys", "garbage"]))
    if kind == "garbage":
        return draw(_garbage)
    if kind == "keys":
        return draw(_mapping(TICKET_KEYS))
    data: dict[str, Any] = {
        "id": stem,
        "title": draw(st.text(min_size=1, max_size=20)),
        "run": "true",
    }
    data.update(draw(st.dictionaries(st.sampled_from(TICKET_KEYS[2:]), _values, max_size=4)))
    return json.dumps(data, ensure_ascii=False)


@st.composite
def _tickets(draw: st.DrawFn) -> dict[str, str]:
    names = draw(
        st.lists(
            st.tuples(st.sampled_from(IDS), st.sampled_from([".yaml", ".yaml", ".md"])),
            max_size=4,
            unique_by=lambda t: t[0],
        )
    )
    return {stem + suffix: draw(_ticket(stem)) for stem, suffix in names}


_config = st.one_of(st.none(), _mapping(CONFIG_KEYS), _garbage)

FINDING = re.compile(r"^(?P<path>[^:\s][^:]*):(\d+):(\d+): (error|warning): .+$")


def _project(root: Path, tickets: dict[str, str], config: str | None) -> Path:
    shutil.rmtree(root / ".gitexec", ignore_errors=True)
    files = {}
    for name, text in tickets.items():
        files[f".gitexec/tickets/{name}"] = (
            f"---\n{text}\n---\nbody\n" if name.endswith(".md") else text
        )
    if config is not None:
        files[".gitexec/config.yaml"] = config
    write_files(root, files)
    commit_all(root, "project")
    return root


def _assert_clear(code: int, out: str, err: str) -> None:
    assert code in (0, 1, 2), (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in err, (out, err)
    for line in (out + err).splitlines():
        text = line.removeprefix("gitexec: error: ")
        m = FINDING.match(text)
        if m is not None:
            assert m.group("path").startswith(".gitexec/"), line
        elif ": error:" in text or ": warning:" in text:
            raise AssertionError(f"a finding without its file and position: {line!r}")
    for message in _bare_errors(err):
        # Every input here is a file under .gitexec/: an error names the one it is about.
        assert ".gitexec/" in message, f"an error that names no file: {message!r}"


def _bare_errors(err: str) -> list[str]:
    """Each `gitexec: error: ...` message with the lines that continue it."""
    messages: list[str] = []
    for line in err.splitlines():
        if line.startswith("gitexec: error: "):
            messages.append(line)
        elif messages and not line.startswith("gitexec: "):
            messages[-1] += "\n" + line
    return messages


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_repo(tmp_path_factory.mktemp("prop") / "repo")


@settings(
    max_examples=int(os.environ.get("GITEXEC_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tickets=_tickets(), config=_config)
def test_check_plan_and_dry_run_never_crash(
    repository: Path, tickets: dict[str, str], config: str | None
) -> None:
    repo = _project(repository, tickets, config)
    for args in (["check"], ["plan"], ["run", "--dry-run"]):
        code, out, err = gitexec(repo, *args)
        _assert_clear(code, out, err)
        if args == ["check"] and code == 1:  # exit 1: there is an error, and it is shown
            assert any(": error: " in line for line in out.splitlines())


def test_the_property_catches_an_error_that_names_no_file() -> None:
    with pytest.raises(AssertionError, match="names no file"):
        _assert_clear(2, "", "gitexec: error: the plan cannot be made\n")
    _assert_clear(
        2, "", "gitexec: error: the tickets have errors:\n.gitexec/tickets/A.yaml:1:1: error: x\n"
    )
