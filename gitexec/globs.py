"""Path globs for ticket scopes and merge rules.

Patterns are repository-relative and `/`-separated: `*` and `?` stay inside one path
segment, `**` spans any number of segments, `[abc]` is a character class. Like a git
pathspec, a pattern that matches a directory also matches everything below it, so
`docs` and `docs/**` both cover `docs/index.md`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

_WILD = re.compile(r"[*?\[]")


class GlobError(ValueError):
    """A pattern that cannot be compiled; the message says why."""


def _segment_regex(segment: str, pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end == -1:
                raise GlobError(f"unclosed '[' in glob {pattern!r}")
            body = segment[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "\\" and i + 1 < len(segment):
            i += 1
            out.append(re.escape(segment[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _normalise(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise GlobError("empty glob")
    if "\0" in pattern or "\n" in pattern:
        raise GlobError(f"glob {pattern!r} contains a control character")
    p = pattern.strip().lstrip("/")
    if p.endswith("/"):
        p += "**"
    segments = p.split("/")
    if any(s in ("..", ".") for s in segments):
        raise GlobError(f"glob {pattern!r} must not contain '.' or '..' segments")
    if any(s == "" for s in segments):
        raise GlobError(f"glob {pattern!r} contains an empty path segment")
    for s in segments:
        if "**" in s and s != "**":
            raise GlobError(f"'**' must be a whole path segment in glob {pattern!r}")
    return p


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile one pattern to a regex over repository-relative paths."""
    p = _normalise(pattern)
    parts: list[str] = []
    segments = p.split("/")
    for n, seg in enumerate(segments):
        last = n == len(segments) - 1
        if seg == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(seg, pattern) + ("" if last else "/"))
    body = "".join(parts)
    # A match on a directory covers its contents (pathspec semantics).
    return re.compile(f"(?:{body})(?:/.*)?", re.DOTALL)


def validate_glob(pattern: object) -> str | None:
    """Return a message describing what is wrong with `pattern`, or None when it is valid."""
    if not isinstance(pattern, str):
        return f"glob must be a string, not {type(pattern).__name__}"
    try:
        compile_glob(pattern)
    except GlobError as exc:
        return str(exc)
    except re.error as exc:
        return f"invalid glob {pattern!r}: {exc}"
    return None


@dataclass(frozen=True)
class PathSet:
    """A set of globs; matches a path when any glob does."""

    patterns: tuple[str, ...]

    @functools.cached_property
    def _regex(self) -> re.Pattern[str] | None:
        if not self.patterns:
            return None
        return re.compile("|".join(f"(?:{compile_glob(p).pattern})" for p in self.patterns))

    def matches(self, path: str) -> bool:
        rx = self._regex
        return rx is not None and rx.fullmatch(path) is not None

    def outside(self, paths: Iterable[str]) -> list[str]:
        """The paths this set does not cover, sorted."""
        return sorted(p for p in paths if not self.matches(p))


def literal_prefix(pattern: str) -> str:
    """The leading wildcard-free segments of a pattern: `src/http/**` -> `src/http`."""
    segments = _normalise(pattern).split("/")
    lead: list[str] = []
    for s in segments:
        if _WILD.search(s):
            break
        lead.append(s)
    return "/".join(lead)


def _segments_may_meet(a: str, b: str) -> bool:
    """Could two single-segment patterns match one common name?"""
    a_wild, b_wild = bool(_WILD.search(a)), bool(_WILD.search(b))
    if not a_wild and not b_wild:
        return a == b
    if not a_wild:
        return re.fullmatch(_segment_regex(b, b), a) is not None
    if not b_wild:
        return re.fullmatch(_segment_regex(a, a), b) is not None
    # Both wild: compare the literal text before the first and after the last wildcard.
    a_head, b_head = _WILD.split(a)[0], _WILD.split(b)[0]
    a_tail, b_tail = re.split(r"[*?\]]", a)[-1], re.split(r"[*?\]]", b)[-1]
    heads_agree = a_head.startswith(b_head) or b_head.startswith(a_head)
    tails_agree = a_tail.endswith(b_tail) or b_tail.endswith(a_tail)
    return heads_agree and tails_agree


def globs_may_overlap(a: str, b: str) -> bool:
    """Could some path be matched by both patterns? Conservative: `True` when unsure."""
    sa, sb = _normalise(a).split("/"), _normalise(b).split("/")
    for x, y in zip(sa, sb, strict=False):
        if x == "**" or y == "**":
            return True
        if not _segments_may_meet(x, y):
            return False
    # One is a prefix of the other: a directory match covers everything below it.
    return True


def pathsets_may_overlap(
    a: Iterable[str], b: Iterable[str], settled: PathSet | None = None
) -> list[tuple[str, str]]:
    """The pairs of patterns (one from each side) that may match a common path.

    `settled` covers paths that merge rules resolve (a CHANGELOG merged by union): two
    tickets naming such a file exactly do not collide on it.
    """
    bs = list(b)
    return [
        (x, y)
        for x in a
        for y in bs
        if globs_may_overlap(x, y)
        and not (settled is not None and (_settled(x, settled) or _settled(y, settled)))
    ]


def _settled(pattern: str, settled: PathSet) -> bool:
    return not _WILD.search(pattern) and settled.matches(_normalise(pattern))
