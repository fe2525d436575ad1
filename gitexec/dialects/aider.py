"""The `aider-text` dialect: `aider --message` prints only text (and exits 0 after giving up
on a rate limit), so outcome, usage and cost are read from its wording."""

from __future__ import annotations

import re

from gitexec.dialects.common import _Facts, _is_throttle, _retry_after, _truncate
from gitexec.dialects.values import SUMMARY_CHARS, Report, Status, Usage

_AIDER_MODEL = re.compile(r"^Model: (\S+) with ")
_AIDER_APPLIED = re.compile(r"^Applied edit to (.+)$")
_AIDER_NUMBER = r"(\d+(?:\.\d+)?k?)"
_AIDER_TOKENS = re.compile(
    rf"Tokens: {_AIDER_NUMBER} sent,(?: {_AIDER_NUMBER} cache write,)?"
    rf"(?: {_AIDER_NUMBER} cache hit,)? {_AIDER_NUMBER} received\."
)
_AIDER_COST = re.compile(r"Cost: \$(\d+(?:\.\d+)?) message, \$(\d+(?:\.\d+)?) session\.")
_AIDER_ERROR = re.compile(r"^litellm\.(\w+): (.*)$")
_AIDER_EDIT_REFUSED = re.compile(r"'?(\S+?)'? is not in the subpath of ")
_AIDER_NOT_ERROR = ("Retrying in", "The API provider", "Tokens:", "litellm.")
_AIDER_THROTTLE_ERRORS = frozenset(
    {"RateLimitError", "ServiceUnavailableError", "InternalServerError", "APIError"}
)


def _aider_count(text: str | None) -> int:
    """aider's rounded counts: 950, 2.6k, 12k."""
    if not text:
        return 0
    if text.endswith("k"):
        return round(float(text[:-1]) * 1000)
    return int(float(text))


class _Aider:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.model_name: str | None = None
        self.applied: list[str] = []
        self._ledger: tuple[int, Usage | None, float | None] = (0, None, None)

    def line(self, text: str, *, stderr: bool = False) -> None:
        self.lines.append(text)
        model = _AIDER_MODEL.match(text)
        if model:
            self.model_name = model.group(1)
        applied = _AIDER_APPLIED.match(text)
        if applied:
            self.applied.append(applied.group(1).strip())

    def _paragraphs(self) -> list[str]:
        # rich wraps long lines at the terminal width; join each paragraph into one line.
        text = "\n".join(self.lines)
        return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]

    def _read_ledger(self) -> tuple[Usage | None, float | None]:
        """Tokens summed over aider's usage lines; its last session cost."""
        seen, usage, cost = self._ledger
        if seen != len(self.lines):
            usage, cost = None, None
            for paragraph in self._paragraphs():
                for tokens in _AIDER_TOKENS.finditer(paragraph):
                    sent, _written, hit, received = tokens.groups()
                    usage = (usage or Usage()) + Usage(
                        _aider_count(sent), _aider_count(received), _aider_count(hit)
                    )
                for found in _AIDER_COST.finditer(paragraph):
                    cost = float(found.group(2))
            self._ledger = (len(self.lines), usage, cost)
        return usage, cost

    def usage(self) -> Usage | None:
        return self._read_ledger()[0]

    def cost(self) -> float | None:
        return self._read_ledger()[1]

    def model(self) -> str | None:
        return self.model_name

    def _errors(self) -> list[tuple[str, str]]:
        """`litellm.XError: message` reports, their wrapped lines joined back."""
        errors: list[tuple[str, str]] = []
        current: list[str] | None = None
        for line in self.lines:
            match = _AIDER_ERROR.match(line)
            if match:
                name, message = match.groups()
                # "RateLimitError: RateLimitError: OpenAIException - ..." says it twice.
                message = message.strip().removeprefix(f"{name}: ")
                errors.append((name, message))
                current = [message]
            elif current is not None and line.strip() and not line.startswith(_AIDER_NOT_ERROR):
                current.append(line.strip())
                errors[-1] = (errors[-1][0], " ".join(current))
            else:
                current = None
        return errors

    def _summary(self) -> str | None:
        """aider's answer: what it printed between its banner and the first usage line."""
        start = 0
        for i, line in enumerate(self.lines):
            if line.startswith(("Repo-map:", "Git repo:", "Model:")):
                start = i + 1
        body: list[str] = []
        for line in self.lines[start:]:
            if line.startswith(("Tokens:", "Applied edit to")):
                break
            body.append(line)
        return _truncate("\n".join(body), SUMMARY_CHARS)

    def finish(self, exit_code: int) -> Report:
        facts = _Facts(self.usage(), self.cost(), self.model_name, summary=self._summary())
        paragraphs = self._paragraphs()
        errors = self._errors()
        if not self.applied:
            if errors:
                name, message = errors[-1]
                reason = f"{name}: {message}"
                throttled = name in _AIDER_THROTTLE_ERRORS and (
                    name != "APIError" or _is_throttle(message)
                )
                if throttled:
                    return facts.report(
                        Status.THROTTLED, reason, retry_after_s=_retry_after(message)
                    )
                return facts.report(Status.FAILURE, reason)
            refused = [m.group(1) for p in paragraphs for m in _AIDER_EDIT_REFUSED.finditer(p)]
            if refused:
                denials = tuple(f"edit outside the repository: {path}" for path in refused)
                return facts.report(
                    Status.FAILURE, "permission denied: " + "; ".join(denials), denials=denials
                )
            if any("did not conform to the edit format" in p for p in paragraphs):
                return facts.report(Status.FAILURE, "the model's edits did not apply")
        if exit_code != 0:
            return facts.exit_failure(exit_code, self.lines)
        return facts.report(Status.SUCCESS)
