"""Status write-back: set `status` and `result` in a ticket file, leaving the rest untouched.

Only the lines of those two keys change; comments, key order, quoting and indentation
of everything else survive byte for byte. The edit is verified by parsing the result,
and falls back to a ruamel.yaml round-trip dump if the file's layout defeats splicing.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gitexec.templating import yaml_value
from gitexec.tickets import TicketState, split_front_matter

_TRAILING_COMMENT = re.compile(r"\s+#[^'\"]*$")


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


def _top_level_spans(lines: list[str], doc: CommentedMap) -> dict[str, tuple[int, int]]:
    """For each top-level key: [first line, end line) including its indented continuation."""
    spans: dict[str, tuple[int, int]] = {}
    for key in doc:
        start = doc.lc.key(key)[0]
        end = start + 1
        while end < len(lines):
            text = lines[end]
            if text.strip() and not text[0].isspace():
                break
            end += 1
        # Blank lines at the end of a block belong to the gap, not the value.
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        spans[str(key)] = (start, end)
    return spans


def _splice(yaml_text: str, state: TicketState, result: Mapping[str, Any]) -> str | None:
    rt = YAML(typ="rt")
    try:
        doc = rt.load(yaml_text)
    except Exception:
        return None
    if not isinstance(doc, CommentedMap):
        return None
    lines = yaml_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    spans = _top_level_spans(lines, doc)
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
    try:
        data = YAML(typ="safe").load(text)
    except Exception:
        return False
    return (
        isinstance(data, dict)
        and data.get("status") == state.value
        and {k: _plain(v) for k, v in (data.get("result") or {}).items()}
        == {k: _plain(v) for k, v in result.items()}
    )


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
    if new is None or not _verify(new, state, result):
        new = _dump_fallback(body, state, result)
    return prefix + new + suffix
