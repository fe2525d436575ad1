"""Path globs: matching, validation, and the overlap test behind conflict prediction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitexec.globs import (
    PathSet,
    compile_glob,
    globs_may_overlap,
    pathsets_may_overlap,
    validate_glob,
)
from tests.project import make_project, run_ok, ticket_yaml


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("src/**", "src/a/b.py", True),
        ("src/**", "src", False),  # inside src, not src itself
        ("src/**", "srcx/a", False),
        ("src", "src/a/b.py", True),  # a directory covers its contents
        ("src/", "src/a", True),
        ("*.md", "README.md", True),
        ("*.md", "docs/README.md", False),  # `*` stays within a directory
        ("**/*.md", "docs/README.md", True),
        ("**/*.md", "README.md", True),
        ("src/*/x.py", "src/a/x.py", True),
        ("src/*/x.py", "src/a/b/x.py", False),
        ("src/**/x.py", "src/a/b/x.py", True),
        ("file?.txt", "file1.txt", True),
        ("file[0-9].txt", "file7.txt", True),
        ("file[!0-9].txt", "file7.txt", False),
        ("/CHANGELOG.md", "CHANGELOG.md", True),
        ("a+b(c).txt", "a+b(c).txt", True),
    ],
)
def test_matching(pattern: str, path: str, expected: bool) -> None:
    assert PathSet((pattern,)).matches(path) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty glob"),
        ("src/[ab", "unclosed '['"),
        ("../x", "must not contain '.' or '..'"),
        ("a//b", "empty path segment"),
        ("src/**x", "'**' must be a whole path segment"),
    ],
)
def test_invalid(pattern: str, problem: str) -> None:
    message = validate_glob(pattern)
    assert message is not None
    assert problem in message


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("src/**", "src/http/client.py", True),
        ("src/http/**", "src/db/**", False),
        ("src/*.py", "src/a.js", False),
        ("src/*.py", "src/*.js", False),
        ("src/*.py", "src/a*", True),
        ("docs", "docs/index.md", True),
        ("**/*.lock", "web/yarn.lock", True),
        ("a/b", "a/c", False),
    ],
)
def test_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_may_overlap(a, b) is overlap
    assert globs_may_overlap(b, a) is overlap


def test_settled_paths_do_not_count_as_overlap() -> None:
    settled = PathSet(("CHANGELOG.md",))
    assert pathsets_may_overlap(["CHANGELOG.md", "a/**"], ["CHANGELOG.md", "b/**"], settled) == []
    assert pathsets_may_overlap(["**"], ["CHANGELOG.md"], settled) == []
    assert pathsets_may_overlap(["a/**"], ["a/x"], settled) == [("a/**", "a/x")]


def test_outside() -> None:
    assert PathSet(("src/**", "README.md")).outside(["src/a", "README.md", "x", "docs/y"]) == [
        "docs/y",
        "x",
    ]


# --- matching is linear in the path ----------------------------------------------------------


def _reference_regex(pattern: str) -> re.Pattern[str]:
    """The regex translation globs used to be (exponential on hostile input, fine on small)."""
    p = pattern.strip().lstrip("/")
    if p.endswith("/"):
        p += "**"
    parts = []
    segments = p.split("/")
    for n, seg in enumerate(segments):
        last = n == len(segments) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        out, i = [], 0
        while i < len(seg):
            c = seg[i]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                end = seg.find("]", i + 2 if seg[i + 1 : i + 2] in ("!", "^") else i + 1)
                body = seg[i + 1 : end]
                # (a negated class never matches '/': the old translation let it)
                out.append("[" + ("^/" + body[1:] if body[:1] in "!^" and body else body) + "]")
                i = end
            else:
                out.append(re.escape(c))
            i += 1
        parts.append("".join(out) + ("" if last else "/"))
    return re.compile(f"(?:{''.join(parts)})(?:/.*)?", re.DOTALL)


_SEGMENT = (
    st.lists(
        st.sampled_from(["a", "b", "ab", "*", "?", "[ab]", "[!a]", "a*", "*b", "*a*"]),
        min_size=1,
        max_size=3,
    )
    .map("".join)
    .filter(lambda s: "**" not in s)
)
_PATTERN = st.lists(st.one_of(_SEGMENT, st.just("**")), min_size=1, max_size=4).map("/".join)
_PATH = st.lists(st.text("ab", min_size=1, max_size=4), min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(pattern=_PATTERN, path=_PATH)
def test_matching_agrees_with_the_regex_translation(pattern: str, path: str) -> None:
    expected = _reference_regex(pattern).fullmatch(path) is not None
    assert compile_glob(pattern).matches(path) is expected


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/".join(["**"] * 40) + "/x", "/".join(["d"] * 60) + "/y"),
        ("/".join(["**"] * 40) + "/x", "/".join(["d"] * 60) + "/x"),
        ("**/" + "*a" * 30 + "*b", "d/" + "a" * 200),
        ("/".join(["*a*a*a*a*a*a*c"] * 20), "/".join(["a" * 100] * 20)),
        ("**/*/**/*/**/*/**/[ab]*[ab]*[ab]*z", "/".join(["ab" * 20] * 50)),
    ],
)
def test_matching_work_is_bounded_by_path_times_pattern(pattern: str, path: str) -> None:
    """Inputs that take a backtracking regex hours: the steps stay within a multiple of len(path) * len(pattern)."""
    matched, steps = compile_glob(pattern).match(path)
    assert matched is path.endswith("/x")
    assert steps <= 2 * (len(path) + 1) * (len(pattern) + 1)


def test_hostile_globs_end_to_end(tmp_path: Path) -> None:
    """A scope of 30 `**` and a merge rule full of stars against a file 40 directories deep
    and a long name: the run finishes (exponential matching would never end)."""
    deep = "/".join(["d"] * 40)
    long_name = "a" * 80
    star_rule = "*a" * 25 + "*b"
    repo = make_project(
        tmp_path / "r",
        {
            "A": ticket_yaml(
                "A",
                run=f"mkdir -p {deep} && echo a > {deep}/y && echo a > {long_name}",
                paths=["/".join(["**"] * 30) + "/x", star_rule],
            )
        },
        config=f"scope: enforce\nmerge:\n  rules:\n    - {{paths: ['{star_rule}'], strategy: union}}\n",
    )
    code, out, err = run_ok(repo, "--run-id", "r1")
    assert code == 1, out + err
    assert "changed paths outside its declared scope" in out + err
    assert f"{deep}/y" in out + err and long_name in out + err
