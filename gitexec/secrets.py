"""Secrets never reach a report, a summary or an artifact.

A Redactor replaces the values of an environment's secret variables (found by name:
`*_TOKEN`, `*_PASSWORD`, `SENTRY_DSN`, `SLACK_WEBHOOK_URL` ...) and well-known secret
shapes whatever their source (`ghp_…`, `github_pat_…`, `xoxb-…`, `AKIA…`, `sk-…`,
passwords in URLs, bearer tokens) with `***`. Build it from the environment the agent
ran with, and apply it to text, to bytes, or to a stream of output line by line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

REDACTED = "***"

# Values of these shapes are secrets wherever they appear.
_TOKEN_SHAPES = re.compile(
    r"""
      \b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})   # GitHub
    | \bxox[abeoprs]-[A-Za-z0-9-]{10,}                                  # Slack
    | \bhooks\.slack\.com/services/[A-Za-z0-9/]{20,}                    # Slack webhooks
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                                     # AWS access keys
    | \bsk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}                    # OpenAI, Anthropic
    | \bglpat-[A-Za-z0-9_-]{20,}                                        # GitLab
    | \bAIza[0-9A-Za-z_-]{35}\b                                         # Google API keys
    """,
    re.VERBOSE,
)
# scheme://user:password@ and scheme://long-token@ (a DSN's key): the secret part only.
_URL_CREDENTIALS = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*://)(?:([^\s/:@]+:)[^\s/@]+|[^\s/:@]{16,})(@)"
)
_BEARER = re.compile(
    r"(?i)(\bbearer\s+|\bauthorization:\s*(?:token|basic|bearer)\s+)[A-Za-z0-9._~+/=-]{16,}"
)
_SECRET_WORDS = re.compile(
    r"TOKEN|SECRET|PASSW(?:OR)?D|PASSPHRASE|CREDENTIAL|PRIVATE|APIKEY|WEBHOOK"
)
_SECRET_PARTS = frozenset({"KEY", "KEYS", "PASS", "AUTH", "AUTHORIZATION", "COOKIE", "PAT", "DSN"})
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "unset", "empty"})
MIN_SECRET_LENGTH = 4


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    upper = name.upper()
    if _SECRET_WORDS.search(upper):
        return True
    return any(part in _SECRET_PARTS for part in re.split(r"[^A-Z0-9]+", upper))


def _url_credentials(m: re.Match[str]) -> str:
    scheme, user, at = m.group(1), m.group(2), m.group(3)
    return f"{scheme}{user or ''}{REDACTED}{at}"


@dataclass(frozen=True)
class Redactor:
    """Replaces known secret values and secret-shaped text with `***`."""

    secrets: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, secrets: Iterable[str]) -> Redactor:
        """A redactor for these values (each line of a multi-line value too)."""
        values: set[str] = set()
        for secret in secrets:
            for candidate in (secret, *secret.splitlines()):
                candidate = candidate.strip()
                if (
                    len(candidate) >= MIN_SECRET_LENGTH
                    and candidate.lower() not in _NOT_SECRET_VALUES
                ):
                    values.add(candidate)
        ordered = tuple(sorted(values, key=lambda v: (-len(v), v)))
        pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        return cls(ordered, pattern)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor for the secret variables of `environ` (default: this process's), e.g.
        the environment an agent ran with."""
        env = os.environ if environ is None else environ
        return cls.of(value for name, value in env.items() if is_secret_name(name))

    @property
    def longest(self) -> int:
        """The longest known secret: how much text one may span."""
        return len(self.secrets[0]) if self.secrets else 0

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        text = _TOKEN_SHAPES.sub(REDACTED, text)
        text = _BEARER.sub(rf"\1{REDACTED}", text)
        return _URL_CREDENTIALS.sub(_url_credentials, text)

    def redact_bytes(self, data: bytes) -> bytes:
        """Redact raw output; bytes that are not UTF-8 pass through unchanged."""
        return self(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def stream(self) -> LineRedactor:
        """A redactor for output that arrives in chunks (an agent's log as it is written)."""
        return LineRedactor(self)


class LineRedactor:
    """Redacts a byte stream line by line: `feed` each chunk and write what it returns,
    then write what `flush` returns at the end.

    A secret split across chunks is still found, because only complete lines are
    redacted and passed on. A line longer than `max_line` is passed on in pieces cut at
    whitespace, keeping a tail long enough for any known secret to be seen whole.
    """

    def __init__(self, redactor: Redactor, max_line: int = 64 * 1024) -> None:
        self.redactor = redactor
        self.max_line = max_line
        self.keep = max(512, redactor.longest * 2)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > self.max_line:
            # A long line: pass on all but a tail, cut where a secret cannot continue.
            limit = len(data) - self.keep
            space = max(data.rfind(b" ", 0, limit), data.rfind(b"\t", 0, limit))
            cut = space + 1 if space > 0 else limit
        self._pending = data[cut:]
        return self.redactor.redact_bytes(data[:cut]) if cut else b""

    def flush(self) -> bytes:
        """The rest of the stream (a last line without a newline)."""
        data, self._pending = self._pending, b""
        return self.redactor.redact_bytes(data) if data else b""
