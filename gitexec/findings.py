"""Validation findings, printed the pre-commit way: `path:line:col: error: message`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem in one file, with a 1-based position."""

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
            except (YAMLError, ValueError):
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
