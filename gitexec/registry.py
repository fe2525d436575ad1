"""Status write-back: set `status` and `result` in a ticket file, leaving the rest untouched.

Only the lines of those two keys change; comments, key order, quoting and indentation
of everything else survive byte for byte. The keys' lines are found by a line scan, and the
edit is kept only if the result parses to the ticket with just those two keys changed; when
the layout defeats the scan, they are found by a round-trip parse instead, and failing that
the file is dumped again by ruamel.yaml.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gitexec.templating import yaml_value
from gitexec.tickets import TicketState, split_front_matter

_TRAILING_COMMENT = re.compile(r"\s+#[^'\"]*$")
# A top-level `status:` or `result:` key, as a line scan sees it (the parse confirms it).
_STATUS_KEYS = re.compile(r"^(status|result)[ \t]*:(?:[ \t]|$)")
_parsers = threading.local()  # a safe (C) parser per thread: a YAML object is not shared


def _render_block(state: TicketState, result: Mapping[str, Any]) -> list[str]:
    lines = [f"status: {state.value}\n"]
    if result:
        lines.append("result:\n")
        for key, value in result.items():
            if isinstance(value, (list, tuple)):
                lines.append(f"  {key}: {yaml_value(list(value))}\n")
            else:
                lines.append(f"  {key}: {yaml_value(value)}\n")
    else:
        lines.append("result: {}\n")
    return lines


def _scanned_spans(lines: list[str]) -> dict[str, tuple[int, int]]:
    """The spans of the top-level `status` and `result` keys, by their lines alone."""
    starts = {m.group(1): i for i, line in enumerate(lines) if (m := _STATUS_KEYS.match(line))}
    return {key: _span(lines, start) for key, start in starts.items()}


def _span(lines: list[str], start: int) -> tuple[int, int]:
    """[start, end): a top-level key's line and its indented continuation."""
    end = start + 1
    while end < len(lines):
        text = lines[end]
        if text.strip() and not text[0].isspace():
            break
        end += 1
    # Blank lines at the end of a block belong to the gap, not the value.
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start, end


def _parsed_spans(yaml_text: str, lines: list[str]) -> dict[str, tuple[int, int]] | None:
    """The spans of every top-level key, from a round-trip parse; None if it fails."""
    try:
        doc = YAML(typ="rt").load(yaml_text)
    except Exception:
        return None
    if not isinstance(doc, CommentedMap):
        return None
    return {str(key): _span(lines, doc.lc.key(key)[0]) for key in doc}


def _splice(yaml_text: str, state: TicketState, result: Mapping[str, Any]) -> str | None:
    lines = yaml_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    before = _safe_load(yaml_text)
    if isinstance(before, dict):
        new = _spliced(list(lines), _scanned_spans(lines), state, result)
        if _only_status_changed(before, new, state, result):
            return new
    spans = _parsed_spans(yaml_text, lines)
    if spans is None:
        return None
    new = _spliced(lines, spans, state, result)
    return new if _verify(new, state, result) else None


def _spliced(
    lines: list[str],
    spans: Mapping[str, tuple[int, int]],
    state: TicketState,
    result: Mapping[str, Any],
) -> str:
    block = _render_block(state, result)
    status_line, result_lines = block[0], block[1:]
    # Replace in place where the keys are, append where they are not.
    edits: list[tuple[int, int, list[str]]] = []
    if "status" in spans:
        start, end = spans["status"]
        comment = _TRAILING_COMMENT.search(lines[start]) if end == start + 1 else None
        if comment:
            status_line = status_line.rstrip("\n") + comment.group(0).rstrip("\n") + "\n"
        edits.append((start, end, [status_line]))
    if "result" in spans:
        edits.append((*spans["result"], result_lines))
    if "status" not in spans and "result" not in spans:
        edits.append((len(lines), len(lines), block))
    elif "status" not in spans:
        start = spans["result"][0]
        edits.append((start, start, [status_line]))
    elif "result" not in spans:
        end = spans["status"][1]
        edits.append((end, end, result_lines))
    for start, end, new in sorted(edits, key=lambda x: (x[0], x[1]), reverse=True):
        lines[start:end] = new
    return "".join(lines)


def _safe_load(text: str) -> Any:
    """The document as plain data (C parser), or None if it does not parse."""
    parser = getattr(_parsers, "yaml", None)
    if parser is None:
        parser = _parsers.yaml = YAML(typ="safe")
    try:
        return parser.load(text)
    except Exception:
        return None


def _only_status_changed(
    before: dict[Any, Any], text: str, state: TicketState, result: Mapping[str, Any]
) -> bool:
    """`text` parses to `before` with `status` and `result` set, and nothing else changed."""
    after = _safe_load(text)
    if not isinstance(after, dict) or not _verify_data(after, state, result):
        return False
    rest = ("status", "result")
    return {k: v for k, v in after.items() if k not in rest} == {
        k: v for k, v in before.items() if k not in rest
    }


def _dump_fallback(yaml_text: str, state: TicketState, result: Mapping[str, Any]) -> str:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(yaml_text)
    doc["status"] = state.value
    doc["result"] = dict(result)
    out = io.StringIO()
    rt.dump(doc, out)
    return out.getvalue()


def _verify(text: str, state: TicketState, result: Mapping[str, Any]) -> bool:
    data = _safe_load(text)
    return isinstance(data, dict) and _verify_data(data, state, result)


def _verify_data(data: dict[Any, Any], state: TicketState, result: Mapping[str, Any]) -> bool:
    return data.get("status") == state.value and {
        k: _plain(v) for k, v in (data.get("result") or {}).items()
    } == {k: _plain(v) for k, v in result.items()}


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def write_status(path: str, text: str, state: TicketState, result: Mapping[str, Any]) -> str:
    """The ticket file `text` with `status` and `result` set. `path` selects YAML or Markdown."""
    prefix, body, suffix = "", text, ""
    if path.endswith(".md"):
        split = split_front_matter(text)
        if split is None:
            raise ValueError(f"{path}: no YAML front matter")
        front, rest, _ = split
        lines = text.splitlines(keepends=True)
        prefix = lines[0]
        closing_index = 1 + len(front.splitlines(keepends=True))
        closing = lines[closing_index] if closing_index < len(lines) else "---\n"
        body, suffix = front, closing + rest
    new = _splice(body, state, result)
    if new is None:
        new = _dump_fallback(body, state, result)
    return prefix + new + suffix
