"""Validation findings, printed the pre-commit way: `path:line:col: error: message`."""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
    ScalarEvent,
)

# Limits on what a project file may ask of the YAML parser. libyaml's composer recurses
# once per nesting level in C (deep enough, the process crashes) and aliases can expand a
# small file into billions of values; no ticket, config or plan comes near either limit.
MAX_NESTING = 64
MAX_EXPANDED_VALUES = 100_000
_SAFE = YAML(typ="safe")
_LONG_NUMBER = re.compile(r"[0-9]{4000,}")


@functools.total_ordering
class Severity(enum.Enum):
    """Ordered: at one position an error sorts before a warning, so findings always sort."""

    ERROR = "error"
    WARNING = "warning"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return _RANK[self] < _RANK[other]


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1}


@dataclass(frozen=True, order=True)
class Finding:
    """One problem in one file, with a 1-based position; ordered by file, position, severity
    and message (a total order: two findings at one place always compare)."""

    path: str
    line: int
    col: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity.value}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


Position = tuple[int, int]


class Locator:
    """Finds where keys, values and list items sit in a YAML document (1-based).

    Parsing with position information costs several times a plain parse, so it happens
    only when a finding needs a position, which is rare.
    """

    def __init__(self, text: str, line_offset: int = 0) -> None:
        self._text = text
        self._offset = line_offset
        self._doc: Any = None
        self._parsed = False

    def _root(self) -> Any:
        if not self._parsed:
            self._parsed = True
            try:
                self._doc = YAML(typ="rt").load(self._text)
            except (YAMLError, ValueError, RecursionError):
                self._doc = None
        return self._doc

    def _pos(self, line: int, col: int) -> Position:
        return (line + 1 + self._offset, col + 1)

    def start(self) -> Position:
        return (1 + self._offset, 1)

    def _node(self, keys: tuple[str | int, ...]) -> Any:
        node = self._root()
        for k in keys:
            in_map = isinstance(node, CommentedMap) and k in node
            in_seq = isinstance(node, CommentedSeq) and isinstance(k, int) and k < len(node)
            if in_map or in_seq:
                node = node[k]
            else:
                return None
        return node

    def key(self, *keys: str | int) -> Position:
        """Position of the last key in `keys` (a mapping key or a list index)."""
        parent = self._node(keys[:-1])
        last = keys[-1] if keys else None
        try:
            if isinstance(parent, CommentedMap) and last in parent:
                return self._pos(*parent.lc.key(last))
            if isinstance(parent, CommentedSeq) and isinstance(last, int):
                return self._pos(*parent.lc.item(last))
        except (KeyError, IndexError, TypeError):
            pass
        return self.value(*keys[:-1]) if keys else self.start()

    def value(self, *keys: str | int) -> Position:
        """Position of the value at `keys`, falling back to its key or the enclosing node."""
        if not keys:
            return self.start()
        parent = self._node(keys[:-1])
        last = keys[-1]
        try:
            if isinstance(parent, CommentedMap) and last in parent:
                return self._pos(*parent.lc.value(last))
            if isinstance(parent, CommentedSeq) and isinstance(last, int):
                return self._pos(*parent.lc.item(last))
        except (KeyError, IndexError, TypeError):
            pass
        return self.key(*keys[:-1]) if len(keys) > 1 else self.start()


class Reporter:
    """Collects findings for one file, resolving positions through a Locator."""

    def __init__(self, path: str, locator: Locator) -> None:
        self.path = path
        self.locator = locator
        self.findings: list[Finding] = []

    def at(self, pos: Position, message: str, severity: Severity = Severity.ERROR) -> None:
        self.findings.append(Finding(self.path, pos[0], pos[1], severity, message))

    def error_at_key(self, keys: tuple[str | int, ...], message: str) -> None:
        self.at(self.locator.key(*keys), message)

    def error_at_value(self, keys: tuple[str | int, ...], message: str) -> None:
        self.at(self.locator.value(*keys), message)

    def warn_at_key(self, keys: tuple[str | int, ...], message: str) -> None:
        self.at(self.locator.key(*keys), message, Severity.WARNING)

    def warn_at_value(self, keys: tuple[str | int, ...], message: str) -> None:
        self.at(self.locator.value(*keys), message, Severity.WARNING)

    def yaml_error(self, exc: YAMLError) -> None:
        """Report a YAML syntax error at the place the parser noticed it."""
        if not isinstance(exc, MarkedYAMLError):
            self.at(self.locator.start(), f"malformed YAML: {exc}")
            return
        offset = self.locator.start()[0] - 1
        mark = exc.problem_mark or exc.context_mark
        pos = (mark.line + 1 + offset, mark.column + 1) if mark else self.locator.start()
        message = exc.problem or exc.context or "syntax error"
        context = exc.context_mark
        if exc.problem and exc.context and context is not None and context is not mark:
            message += (
                f" ({exc.context} started at line {context.line + 1 + offset}, "
                f"column {context.column + 1})"
            )
        self.at(pos, f"malformed YAML: {message}")

    def within_yaml_limits(self, text: str) -> bool:
        """False, with a finding, when `text` nests too deeply or its aliases expand to too
        many values: what would crash or swamp the parser."""
        hazard = _yaml_hazard(text)
        if hazard is None:
            return True
        line, col, message = hazard
        offset = self.locator.start()[0] - 1
        self.at((line + 1 + offset, col + 1), message)
        return False

    def load_yaml(self, text: str) -> tuple[bool, Any]:
        """Parse `text` (this reporter's file, or its front matter) with the safe loader.

        (True, data) on success; otherwise a finding says what is wrong and where, and the
        result is (False, None). Never raises on any input.
        """
        if not self.within_yaml_limits(text):
            return False, None
        try:
            return True, _SAFE.load(text)
        except YAMLError as exc:
            self.yaml_error(exc)
        except RecursionError:
            self.at(self.locator.start(), f"YAML nested too deeply (at most {MAX_NESTING} levels)")
        except ValueError:
            # Python refuses to convert integers of more than 4300 digits.
            self.at(_position_of(text, _LONG_NUMBER, self.locator), "a number is too long")
        return False, None


def _position_of(text: str, pattern: re.Pattern[str], locator: Locator) -> Position:
    m = pattern.search(text)
    if m is None:
        return locator.start()
    line = text.count("\n", 0, m.start())
    col = m.start() - (text.rfind("\n", 0, m.start()) + 1)
    return (line + 1 + locator.start()[0] - 1, col + 1)


def _yaml_hazard(text: str) -> tuple[int, int, str] | None:
    """(line, column, message), 0-based, of the first place that nests too deeply or where
    aliases expand to too many values; None when the text is safe to load.

    Reads the event stream, which libyaml produces without recursion, and stops early.
    """
    if "&" not in text and sum(text.count(c) for c in "[{:-?") <= MAX_NESTING:
        return None  # every level of nesting needs one of these indicators
    opened: list[tuple[str | None, int]] = []  # (anchor, values expanded before it)
    sizes: dict[str, int] = {}  # anchor -> the number of values an alias to it stands for
    expanded = 0
    try:
        for event in _SAFE.parse(text):
            if isinstance(event, CollectionStartEvent):
                if len(opened) >= MAX_NESTING:
                    mark = event.start_mark
                    return (
                        mark.line,
                        mark.column,
                        f"YAML nested more than {MAX_NESTING} levels deep",
                    )
                opened.append((event.anchor, expanded))
                expanded += 1
            elif isinstance(event, CollectionEndEvent):
                anchor, before = opened.pop()
                if anchor is not None:
                    sizes[anchor] = expanded - before
            elif isinstance(event, ScalarEvent):
                expanded += 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, AliasEvent):
                expanded += sizes.get(event.anchor, 1)
            if expanded > MAX_EXPANDED_VALUES and isinstance(event, NodeEvent):
                mark = event.start_mark
                return (
                    mark.line,
                    mark.column,
                    f"YAML aliases expand to more than {MAX_EXPANDED_VALUES:,} values",
                )
    except (YAMLError, ValueError):
        return None  # loading reports the syntax error itself
    return None
