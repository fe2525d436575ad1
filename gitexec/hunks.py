"""Conflict text cut down to its hunks: what a rerun's prompt and the journal carry of a
conflict (the regions around the markers, bounded in size)."""

from __future__ import annotations

from collections.abc import Mapping

MAX_HUNKS = 8000  # characters of conflict text in all


def conflict_hunks(texts: Mapping[str, str]) -> dict[str, str]:
    """The conflicting files' text with markers, in at most MAX_HUNKS characters in all
    (only the regions around the markers)."""
    out: dict[str, str] = {}
    budget = MAX_HUNKS
    for path, text in sorted(texts.items()):
        hunks = _around_markers(text)
        if budget <= 0:
            break
        if len(hunks) > budget:
            hunks = hunks[:budget] + "\n[… truncated]"
        out[path] = hunks
        budget -= len(hunks)
    return out


def _around_markers(text: str, context: int = 3) -> str:
    lines = text.splitlines()
    keep: set[int] = set()
    inside = False
    for n, line in enumerate(lines):
        if line.startswith("<<<<<<<"):
            inside = True
            keep.update(range(max(0, n - context), n))
        if inside:
            keep.add(n)
        if line.startswith(">>>>>>>"):
            inside = False
            keep.update(range(n + 1, min(len(lines), n + 1 + context)))
    if not keep:
        return text
    out: list[str] = []
    last = -2
    for n in sorted(keep):
        if n != last + 1 and out:
            out.append("…")
        out.append(lines[n])
        last = n
    return "\n".join(out)
