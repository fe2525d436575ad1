"""Reading an attempt: `Reader` takes output as it comes (`feed`, `usage` so far, `result`),
`parse` a finished one; the dialect picks the reader, GITEXEC_RESULT_FILE has the last word."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from gitexec.dialects.aider import _Aider
from gitexec.dialects.claude import _Claude
from gitexec.dialects.codex import _Codex
from gitexec.dialects.common import _State, _text
from gitexec.dialects.gemini import _Gemini
from gitexec.dialects.plain import _Plain
from gitexec.dialects.resultfile import _apply_result_file
from gitexec.dialects.values import Dialect, Price, Report, Usage


def parse(
    dialect: Dialect | str,
    *,
    stdout: bytes,
    stderr: bytes = b"",
    exit_code: int,
    result_file: bytes | None = None,
    pricing: Mapping[str, Price] | None = None,
    argv: Sequence[str] = (),
) -> Report:
    """Read a finished attempt: its output, exit code and GITEXEC_RESULT_FILE (if written).

    `stdout` may hold stderr merged in (a combined log); pass `stderr` when captured apart.
    `argv` names the model for CLIs that do not print it (`-m`/`--model`). A cost comes
    from `pricing` (by the model name as the CLI reports it) when the CLI reports none.
    """
    reader = Reader(dialect, argv=argv)
    reader.feed(stdout)
    return reader.result(
        exit_code=exit_code, stderr=stderr, result_file=result_file, pricing=pricing
    )


class Reader:
    """Incremental reading of an agent's output while it runs: `feed`, `usage`, `result`."""

    def __init__(self, dialect: Dialect | str, *, argv: Sequence[str] = ()) -> None:
        self.dialect = Dialect(dialect)
        self._state = _READERS[self.dialect]()
        self._model_hint = _model_from_argv(argv)
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of output; complete lines are read at once."""
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        for line in lines:
            self._state.line(_text(line))

    def usage(self) -> Usage | None:
        """Tokens reported so far (None while the CLI has reported none)."""
        return self._state.usage()

    def cost_usd(self, pricing: Mapping[str, Price] | None = None) -> float | None:
        """Cost so far: the CLI's own figure, else from `pricing`; None when unknown."""
        cost = self._state.cost()
        if cost is not None:
            return cost
        return price_of(self._state.model() or self._model_hint, self.usage(), pricing)

    def result(
        self,
        *,
        exit_code: int,
        stderr: bytes = b"",
        result_file: bytes | None = None,
        pricing: Mapping[str, Price] | None = None,
    ) -> Report:
        if self._pending:
            self._state.line(_text(self._pending))
            self._pending = b""
        for line in stderr.split(b"\n"):
            self._state.line(_text(line), stderr=True)
        report = self._state.finish(exit_code)
        if report.model is None and self._model_hint is not None:
            report = replace(report, model=self._model_hint)
        if result_file is not None and result_file.strip():
            report = _apply_result_file(report, result_file)
        if report.cost_usd is None:
            report = replace(report, cost_usd=price_of(report.model, report.usage, pricing))
        return report


def price_of(
    model: str | None, usage: Usage | None, pricing: Mapping[str, Price] | None
) -> float | None:
    """The cost of `usage` by `pricing[model]` (or the name after a `provider/` prefix)."""
    if model is None or usage is None or not pricing:
        return None
    price = pricing.get(model) or pricing.get(model.rsplit("/", 1)[-1])
    return None if price is None else round(price.cost(usage), 10)


def _model_from_argv(argv: Sequence[str]) -> str | None:
    args = list(argv)
    for i, arg in enumerate(args):
        if arg in ("-m", "--model") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
        if arg in ("-c", "--config") and i + 1 < len(args):
            key, _, value = args[i + 1].partition("=")
            if key.strip() == "model" and value:
                return value.strip().strip("\"'")
    return None


_READERS: dict[Dialect, Callable[[], _State]] = {
    Dialect.PLAIN: _Plain,
    Dialect.CLAUDE_JSON: _Claude,
    Dialect.CODEX_JSONL: _Codex,
    Dialect.GEMINI_JSON: _Gemini,
    Dialect.AIDER_TEXT: _Aider,
}
