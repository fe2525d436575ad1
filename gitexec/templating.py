"""Jinja2 environments for gitexec's templates (shipped in the wheel as gitexec/templates)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2

_PLAIN = re.compile(r"[A-Za-z_./][A-Za-z0-9_./*-]*")
_YAML_WORDS = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"})


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
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)


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
