"""Path globs: matching, validation, and the overlap test behind conflict prediction."""

from __future__ import annotations

import pytest

from gitexec.globs import PathSet, globs_may_overlap, pathsets_may_overlap, validate_glob


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
