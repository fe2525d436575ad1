"""Path globs for ticket scopes and merge rules.

Patterns are repository-relative and `/`-separated: `*` and `?` stay inside one path
segment, `**` spans any number of segments, `[abc]` is a character class. Like a git
pathspec, a pattern that matches a directory also matches everything below it, so
`docs` and `docs/**` both cover `docs/index.md`.

Matching is segment by segment (a small automaton over the path's segments, and a
single-backtrack wildcard match inside a segment), so its work is bounded by the
path's length times the pattern's: no pattern makes it backtrack exponentially, as
`**/**/**/x` or `*a*a*a*b` would in a regex engine.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_WILD = re.compile(r"[*?\[]")
MAX_GLOB_LENGTH = 4096
MAX_GLOB_SEGMENTS = 256


class GlobError(ValueError):
    """A pattern that cannot be compiled; the message says why."""


# --- one segment -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Class:
    """`[...]`: a set of characters and ranges, possibly negated."""

    chars: frozenset[str]
    ranges: tuple[tuple[str, str], ...]
    negated: bool

    def has(self, c: str) -> bool:
        hit = c in self.chars or any(lo <= c <= hi for lo, hi in self.ranges)
        return hit != self.negated


class _Wild(enum.Enum):
    STAR = "*"
    ANY = "?"


Token = str | _Wild | _Class  # a literal character, a wildcard or a class


@dataclass(frozen=True)
class Segment:
    """One `/`-free piece of a pattern: literal text, or tokens with wildcards."""

    text: str  # the pattern text of the segment
    literal: str | None  # the name it matches when it has no wildcards
    tokens: tuple[Token, ...] = ()
    # With at most one `*`, a regex cannot backtrack more than len(name) * len(tokens)
    # either, and is faster than matching token by token in Python.
    regex: re.Pattern[str] | None = None

    def matches(self, name: str, steps: list[int] | None = None) -> bool:
        """Whether `name` (one path segment) matches; work O(len(name) * len(tokens))."""
        if self.literal is not None:
            if steps is not None:
                steps[0] += 1
            return name == self.literal
        if self.regex is not None:
            if steps is not None:
                steps[0] += len(name) + 1
            return self.regex.fullmatch(name) is not None
        return _match_tokens(self.tokens, name, steps)


def _match_tokens(tokens: tuple[Token, ...], name: str, steps: list[int] | None) -> bool:
    # The classic wildcard match: on a mismatch, retry from the last `*` one character
    # further on. Only the last star matters, so the work is at most len(name) * len(tokens).
    t = n = count = 0
    star, mark = -1, 0
    while n < len(name):
        count += 1
        if t < len(tokens):
            tok = tokens[t]
            if tok is _Wild.STAR:
                star, mark = t, n
                t += 1
                continue
            if tok is _Wild.ANY or (
                tok.has(name[n]) if isinstance(tok, _Class) else tok == name[n]
            ):
                t += 1
                n += 1
                continue
        if star < 0:
            break
        t, mark = star + 1, mark + 1
        n = mark
    else:
        while t < len(tokens) and tokens[t] is _Wild.STAR:
            t += 1
    if steps is not None:
        steps[0] += count + 1
    return n == len(name) and t == len(tokens)


@functools.lru_cache(maxsize=4096)
def _segment(text: str, pattern: str) -> Segment:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            if not tokens or tokens[-1] is not _Wild.STAR:
                tokens.append(_Wild.STAR)
        elif c == "?":
            tokens.append(_Wild.ANY)
        elif c == "[":
            cls, i = _char_class(text, i, pattern)
            tokens.append(cls)
        elif c == "\\" and i + 1 < len(text):
            i += 1
            tokens.append(text[i])
        else:
            tokens.append(c)
        i += 1
    if all(isinstance(tok, str) for tok in tokens):
        return Segment(text, "".join(str(tok) for tok in tokens))
    regex = None
    if sum(1 for tok in tokens if tok is _Wild.STAR) <= 1:
        regex = re.compile("".join(_token_regex(tok) for tok in tokens), re.DOTALL)
    return Segment(text, None, tuple(tokens), regex)


def _token_regex(tok: Token) -> str:
    if tok is _Wild.STAR:
        return ".*"
    if tok is _Wild.ANY:
        return "."
    if isinstance(tok, _Class):
        members = "".join(re.escape(c) for c in sorted(tok.chars))
        members += "".join(f"{re.escape(lo)}-{re.escape(hi)}" for lo, hi in tok.ranges)
        return f"[{'^' if tok.negated else ''}{members}]"
    return re.escape(tok)


def _char_class(text: str, start: int, pattern: str) -> tuple[_Class, int]:
    """Parse `[...]` at `start`; return it and the index of its closing `]`."""
    i = start + 1
    negated = text[i : i + 1] in ("!", "^")
    if negated:
        i += 1
    end = text.find("]", i + 1)  # a `]` right after `[` or `[!` is a member
    if end == -1:
        raise GlobError(f"unclosed '[' in glob {pattern!r}")
    body = text[i:end]
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            lo, hi = body[k], body[k + 2]
            if lo > hi:
                raise GlobError(f"invalid range '{lo}-{hi}' in glob {pattern!r}")
            ranges.append((lo, hi))
            k += 3
        else:
            chars.add(body[k])
            k += 1
    return _Class(frozenset(chars), tuple(ranges), negated), end


# --- whole patterns --------------------------------------------------------------------------

GLOBSTAR = Segment("**", None)


@dataclass(frozen=True)
class Glob:
    """A compiled pattern: segments, `GLOBSTAR` standing for any number of them."""

    pattern: str
    segments: tuple[Segment, ...]
    _prefix: str | None = field(default=None, compare=False)  # literal/.../** or all-literal

    def matches(self, path: str) -> bool:
        return self.match(path)[0]

    def match(self, path: str) -> tuple[bool, int]:
        """(whether `path` matches, the matching steps it took).

        A non-final `**` matches zero or more segments, a final one one or more; once the
        whole pattern matched the first segments, the rest of the path is below a match.
        """
        prefix = self._prefix
        if prefix is not None:  # the common shapes, `src/http/**` and `README.md`
            if self.segments[-1] is GLOBSTAR:
                return path.startswith(prefix) and len(path) > len(prefix), 1
            return path == prefix or path.startswith(prefix + "/"), 1
        segs = self.segments
        last = len(segs)
        skip = self._skip
        steps = [0]
        states: Iterable[int] = skip[0]
        for name in path.split("/"):
            after: set[int] = set()
            for s in states:
                seg = segs[s]
                if seg is GLOBSTAR:
                    steps[0] += 1
                    after.update(skip[s])
                    after.add(s + 1)
                elif seg.matches(name, steps):
                    if s + 1 == last:
                        return True, steps[0]
                    after.update(skip[s + 1])
            if last in after:
                return True, steps[0]
            if not after:
                return False, steps[0]
            states = after
        return False, steps[0]

    @functools.cached_property
    def _skip(self) -> tuple[frozenset[int], ...]:
        """For each state, the states it reaches by letting non-final `**` match nothing."""
        out = []
        for s in range(len(self.segments)):
            reach = {s}
            while s < len(self.segments) - 1 and self.segments[s] is GLOBSTAR:
                s += 1
                reach.add(s)
            out.append(frozenset(reach))
        return tuple(out)


def _normalise(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise GlobError("empty glob")
    if "\0" in pattern or "\n" in pattern:
        raise GlobError(f"glob {pattern!r} contains a control character")
    if len(pattern) > MAX_GLOB_LENGTH:
        raise GlobError(f"glob is longer than {MAX_GLOB_LENGTH} characters")
    p = pattern.strip().lstrip("/")
    if p.endswith("/"):
        p += "**"
    segments = p.split("/")
    if len(segments) > MAX_GLOB_SEGMENTS:
        raise GlobError(f"glob has more than {MAX_GLOB_SEGMENTS} path segments")
    if any(s in ("..", ".") for s in segments):
        raise GlobError(f"glob {pattern!r} must not contain '.' or '..' segments")
    if any(s == "" for s in segments):
        raise GlobError(f"glob {pattern!r} contains an empty path segment")
    for s in segments:
        if "**" in s and s != "**":
            raise GlobError(f"'**' must be a whole path segment in glob {pattern!r}")
    return p


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> Glob:
    """Compile one pattern; GlobError says what is wrong with it."""
    p = _normalise(pattern)
    segments = tuple(GLOBSTAR if s == "**" else _segment(s, pattern) for s in p.split("/"))
    head = segments[:-1] if segments[-1] is GLOBSTAR else segments
    prefix: str | None = None
    if head and all(s.literal is not None for s in head):
        prefix = "/".join(str(s.literal) for s in head)
        if segments[-1] is GLOBSTAR:
            prefix += "/"
    return Glob(pattern, segments, prefix)


def validate_glob(pattern: object) -> str | None:
    """Return a message describing what is wrong with `pattern`, or None when it is valid."""
    if not isinstance(pattern, str):
        return f"glob must be a string, not {type(pattern).__name__}"
    try:
        compile_glob(pattern)
    except GlobError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class PathSet:
    """A set of globs; matches a path when any glob does."""

    patterns: tuple[str, ...]

    @functools.cached_property
    def _globs(self) -> tuple[Glob, ...]:
        return tuple(compile_glob(p) for p in self.patterns)

    def matches(self, path: str) -> bool:
        return any(g.matches(path) for g in self._globs)

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
        return _segment(b, b).matches(a)
    if not b_wild:
        return _segment(a, a).matches(b)
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
