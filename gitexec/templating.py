"""Jinja2 environments for gitexec's templates (shipped in the wheel as gitexec/templates)."""

from __future__ import annotations

import contextvars
import functools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import jinja2
import jinja2.nodes
import jinja2.sandbox
import jinja2.visitor

from gitexec.repopath import (
    RepositoryPathError as TemplatePathError,
)
from gitexec.repopath import (
    read_repository_file,
    repository_file,
)

__all__ = [
    "BoundedEnvironment",
    "Limits",
    "RenderError",
    "TemplatePathError",
    "read_repository_file",
    "render_bounded",
    "repository_file",
    "template_dir",
    "text_environment",
    "yaml_value",
]

_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./*-]*")
# Characters JSON leaves as they are but YAML reads as line breaks (U+0085, U+2028,
# U+2029) or refuses (DEL, C1 controls, a byte order mark): escaped.
_ESCAPED = re.compile("[\x7f-\x9f\u2028\u2029\ufeff]")
# Plain words YAML reads as something other than a string (booleans, null, floats).
_YAML_WORDS = frozenset(
    {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~", ".inf", ".nan"}
)


def template_dir() -> Path:
    """`gitexec/templates` in an installed wheel, `templates/` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "ticket.yaml.j2").is_file():
            return candidate
    raise FileNotFoundError("gitexec templates are missing from this installation")


def yaml_value(value: Any) -> str:
    """A YAML flow value: plain when unambiguous, JSON-quoted otherwise (JSON is YAML)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_value(k)}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return _ESCAPED.sub(_escape, json.dumps(text, ensure_ascii=False))


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


@functools.lru_cache(maxsize=1)
def text_environment() -> jinja2.Environment:
    """For YAML, prompts and workflows: no HTML escaping, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701
    )
    env.filters["yaml"] = yaml_value
    return env


def render(name: str, **context: Any) -> str:
    return text_environment().get_template(name).render(**context)


# --- bounded rendering of user templates ----------------------------------------------------
#
# Agent commands, prompt templates and report templates come from a repository's config,
# which gitexec runs with no other review: rendering one must end, soon, with output of a
# sane size. The sandbox keeps templates from Python's internals; BoundedEnvironment
# also counts every loop iteration, call, filter and operator against a budget, refuses
# the operators and methods that multiply sizes (`*`, `**`, `+`, `~`, `%`, `center`,
# `replace`, `indent`, `join`, widths in format strings) beyond the output limit before
# they run, and caps the output.


class RenderError(Exception):
    """A user template could not be compiled or rendered, or went over its limits."""


class _LimitExceeded(jinja2.TemplateRuntimeError):
    """Raised inside rendering; turned into a RenderError by `render_bounded`."""


@dataclass(frozen=True)
class Limits:
    steps: int = 100_000  # loop iterations, calls, filters and operators
    work: int = 64 << 20  # characters and items handed to filters, calls and operators
    output: int = 1 << 20  # characters of output, and of any value made on the way
    int_bits: int = 10_000  # size of an integer an operator may produce
    source: int = 1 << 20  # characters of template source


@dataclass
class _Budget:
    limits: Limits
    steps: int = 0
    work: int = 0

    def spend(self, work: int = 0) -> None:
        self.steps += 1
        self.work += work
        if self.steps > self.limits.steps:
            raise _LimitExceeded(
                f"rendering stopped after {self.limits.steps:,} steps (loop iterations, "
                "calls, filters): a template must finish in bounded work"
            )
        if self.work > self.limits.work:
            raise _LimitExceeded(
                f"rendering stopped after handling {self.limits.work:,} characters and items"
            )


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # outside render_bounded: each check applies, nothing accumulates
        budget = _Budget(Limits())
    return budget


def _size(value: object) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set)) else 0


def _too_big(what: str, size: int, limit: int) -> _LimitExceeded:
    return _LimitExceeded(f"{what} would make {size:,} characters or items (at most {limit:,})")


def _checked(value: Any, limits: Limits, what: str) -> Any:
    size = _size(value)
    if size > limits.output:
        raise _too_big(what, size, limits.output)
    if _is_int(value) and value.bit_length() > limits.int_bits:
        raise _LimitExceeded(f"{what} made an integer of over {limits.int_bits:,} bits")
    return value


_FORMAT_NUMBER = re.compile(r"%[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?|\{[^{}]*\}")


def _format_ok(fmt: str, args: Any, limit: int) -> bool:
    """Whether a %- or {}-format string asks for no width or precision over `limit`."""
    for m in _FORMAT_NUMBER.finditer(fmt):
        if any(int(n) > limit for n in re.findall(r"\d+", m.group(0))):
            return False
        if "*" in m.group(0) and m.group(0).startswith("%"):
            values = args if isinstance(args, (tuple, list)) else (args,)
            if any(isinstance(v, int) and abs(v) > limit for v in values):
                return False
    return True


def _grown_size(
    name: str, subject: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int
) -> int:
    """An upper bound of the size `subject.name(*args)` (or the filter `name`) produces, for
    the operations that can multiply a size; 0 for the rest (checked after the fact)."""
    if not isinstance(subject, str):
        if name == "join" and isinstance(subject, (list, tuple)):
            sep = str(args[0]) if args else str(kwargs.get("d", ""))
            return sum(len(str(x)) for x in subject) + len(sep) * len(subject)
        return 0
    values = [*args, *kwargs.values()]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if name in ("center", "ljust", "rjust", "zfill", "truncate", "wordwrap"):
        return max([len(subject), *ints]) * (2 if name == "wordwrap" else 1)
    if name == "expandtabs":
        return len(subject) + subject.count("\t") * max([8, *ints])
    if name == "indent":
        width = values[0] if values and isinstance(values[0], (int, str)) else 4
        pad = width if isinstance(width, int) else len(width)
        return len(subject) + (subject.count("\n") + 1) * pad
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        return len(subject) + (subject.count(old) if old else len(subject) + 1) * len(new)
    if name == "join" and args and isinstance(args[0], list):  # str.join(items)
        return sum(len(str(x)) for x in args[0]) + len(subject) * len(args[0])
    if name in ("format", "format_map") and not _format_ok(subject, args, limit):
        raise _LimitExceeded(f"{name}: a width or precision over {limit:,}")
    return 0


class _Bound(jinja2.visitor.NodeTransformer):
    """Routes every `for` loop's iterable and every `~` through counting filters."""

    def visit_For(self, node: jinja2.nodes.For) -> jinja2.nodes.Node:
        self.generic_visit(node)
        node.iter = jinja2.nodes.Filter(
            node.iter, "_gitexec_counted", [], [], None, None, lineno=node.lineno
        )
        return node

    def visit_Concat(self, node: jinja2.nodes.Concat) -> jinja2.nodes.Node:
        self.generic_visit(node)
        items = jinja2.nodes.List(node.nodes, lineno=node.lineno)
        return jinja2.nodes.Filter(items, "_gitexec_concat", [], [], None, None, lineno=node.lineno)


class _Filters(dict[str, Any]):
    """Filters (or tests) that spend from the render budget and check what they make."""

    def __init__(self, limits: Limits, items: Mapping[str, Any]) -> None:
        super().__init__()
        self.limits = limits
        self.update(items)

    def __setitem__(self, name: str, func: Any) -> None:
        super().__setitem__(name, self._wrap(name, func))

    def update(self, *others: Any, **more: Any) -> None:
        for name, func in dict(*others, **more).items():
            self[name] = func

    def _wrap(self, name: str, func: Any) -> Any:
        if getattr(func, "_gitexec_bounded", False):
            return func
        limits = self.limits
        passes = getattr(func, "jinja_pass_arg", None)

        @functools.wraps(func)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            subject_at = 0 if passes is None else 1
            subject = args[subject_at] if len(args) > subject_at else None
            rest = args[subject_at + 1 :]
            _budget().spend(_size(subject))
            for v in (*rest, *kwargs.values()):
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limits.output:
                    raise _LimitExceeded(f"|{name}: argument {v} is over {limits.output:,}")
            grown = _grown_size(name, subject, rest, kwargs, limits.output)
            if grown > limits.output:
                raise _too_big(f"|{name}", grown, limits.output)
            return _checked(func(*args, **kwargs), limits, f"|{name}")

        bounded._gitexec_bounded = True  # type: ignore[attr-defined]
        return bounded


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """A sandbox whose renderings end in bounded work with bounded output (see Limits).

    Render with `render_bounded`, which gives each rendering its own budget.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, *, limits: Limits | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits or Limits()
        self.filters = _Filters(self.limits, self.filters)
        self.tests = _Filters(self.limits, self.tests)
        self.filters["_gitexec_counted"] = _counted
        self.filters["_gitexec_concat"] = _concat

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        if len(source) > self.limits.source:
            raise jinja2.TemplateSyntaxError(
                f"template is longer than {self.limits.source:,} characters", 1, name, filename
            )
        tree = super()._parse(source, name, filename)
        _Bound().visit(tree)
        return tree

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        limits = __self.limits
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        subject = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if name == "join" and isinstance(subject, str) and args:
            args = (list(args[0]), *args[1:])  # measured before joining, so kept as a list
        _budget().spend(_size(subject) + sum(_size(a) for a in args))
        if isinstance(subject, (str, list, tuple)):
            grown = _grown_size(name, subject, args, kwargs, limits.output)
            if grown > limits.output:
                raise _too_big(f".{name}()", grown, limits.output)
        result = super().call(__context, __obj, *args, **kwargs)
        return _checked(result, limits, f"{name or 'a call'}()")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        limits = self.limits
        _budget().spend(_size(left) + _size(right))
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int) and _size(seq) * n > limits.output:
                    raise _too_big("'*'", _size(seq) * n, limits.output)
            if (
                _is_int(left)
                and _is_int(right)
                and left.bit_length() + right.bit_length() > limits.int_bits
            ):
                raise _LimitExceeded(f"'*' would make an integer of over {limits.int_bits:,} bits")
        elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
            if abs(left) > 1 and left.bit_length() * right > limits.int_bits:
                raise _LimitExceeded(f"'**' would make an integer of over {limits.int_bits:,} bits")
        elif operator == "+" and _size(left) + _size(right) > limits.output:
            raise _too_big("'+'", _size(left) + _size(right), limits.output)
        elif (
            operator == "%" and isinstance(left, str) and not _format_ok(left, right, limits.output)
        ):
            raise _LimitExceeded(f"'%': a width or precision over {limits.output:,}")
        return _checked(super().call_binop(context, operator, left, right), limits, f"'{operator}'")

    def compile_text(self, source: str) -> jinja2.Template:
        """A template from text; RenderError when it does not compile."""
        try:
            return self.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"line {exc.lineno}: {exc.message}") from None
        except (jinja2.TemplateError, RecursionError, ValueError, MemoryError) as exc:
            raise RenderError(_describe(exc)) from None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _counted(value: Any) -> Iterator[Any]:
    budget = _budget()
    for item in value:
        budget.spend()
        yield item


def _concat(items: list[Any]) -> str:
    texts = [str(x) for x in items]
    budget = _budget()
    size = sum(map(len, texts))
    budget.spend(size)
    if size > budget.limits.output:
        raise _too_big("'~'", size, budget.limits.output)
    return "".join(texts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, jinja2.TemplateError):
        return exc.message or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "nested or recursive too deeply"
    if isinstance(exc, ValueError) and "integer string conversion" in str(exc):
        return "a number is too long"
    return f"{type(exc).__name__}: {exc}"


def render_bounded(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """Render `template` (of a BoundedEnvironment) within its limits; RenderError says what
    went wrong, whatever the template did."""
    env = template.environment
    limits = env.limits if isinstance(env, BoundedEnvironment) else Limits()
    token = _BUDGET.set(_Budget(limits))
    try:
        out: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limits.output:
                raise RenderError(
                    f"rendering stopped: the output is over {limits.output:,} characters"
                )
            out.append(chunk)
        return "".join(out)
    except RenderError:
        raise
    except Exception as exc:  # a user's template: whatever it raises is its own failure
        raise RenderError(_describe(exc)) from None
    finally:
        _BUDGET.reset(token)
