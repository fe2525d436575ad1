"""Text made safe for Markdown, HTML and code blocks: what a report embeds is never markup."""

from __future__ import annotations

import html
import re

# What can start Markdown syntax inside a line (GitHub's flavour included): code, emphasis,
# links and images, HTML and autolinks, table cells, strikethrough, math; `_` only at a
# word's edge (inside a word it never emphasises); entities; mentions and email, URL and
# www autolinks. Everything else (`:`, `;`, `/`, `.`, `-`, `(`) stays as written.
_MD_INLINE = re.compile(
    r"""[\\`*\[\]<|~$]
    | (?<![A-Za-z0-9])_ | _(?![A-Za-z0-9])
    | &(?=\#?[A-Za-z0-9]+;)
    | @(?=\w)
    | :(?=//)
    | (?<=\bwww)\.
    """,
    re.VERBOSE,
)
# ... and what starts a block at the beginning of a line: quotes, headings, list items,
# setext underlines, ordered list items (`1. x` or `1) x`).
_MD_LINE_START = re.compile(r"^(?:>|#{1,6}(?=\s|$)|[-+](?=\s|$)|[-=]+$|\d{1,9}(?=[.)](?:\s|$)))")
_BACKTICKS = re.compile(r"`+")


def md(value: object) -> str:
    """Inline Markdown text on one line, escaped only where Markdown would read syntax, so
    the raw file reads well too.

    `<` cannot open HTML or an autolink, `|` cannot split a table cell, `*`, `_`, `[`,
    `~` and `` ` `` cannot format or link, `@` cannot mention, and a leading `#`, `>` or
    `-` cannot start a block.
    """
    text = " ".join(str(value if value is not None else "").split())
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(0), text)
    m = _MD_LINE_START.match(text)
    if m is None:
        return text
    if m.group(0)[0].isdigit():  # `1.` and `1)`: escape the punctuation after the number
        end = m.end()
        return text[:end] + "\\" + text[end:]
    return "\\" + text


def html_text(value: object) -> str:
    """Text inside raw HTML (a <summary>), one line."""
    return html.escape(" ".join(str(value if value is not None else "").split()), quote=True)


def code_block(value: object, lang: str = "") -> str:
    """A fenced code block longer than any backtick run inside, so nothing can close it."""
    text = str(value if value is not None else "").rstrip("\n")
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def shorten(value: object, limit: int) -> str:
    text = " ".join(str(value if value is not None else "").split())
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[: max(1, limit - 1)].rstrip() + "…"
