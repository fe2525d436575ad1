"""Parsers for command-line values: each turns one argument's text into a typed value or
says, in argparse's way, what is wrong with it."""

from __future__ import annotations

import argparse

from gitexec.config import Strategy


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def strategy(text: str) -> Strategy:
    try:
        return Strategy(text)
    except ValueError:
        choices = ", ".join(s.value for s in Strategy)
        raise argparse.ArgumentTypeError(
            f"invalid strategy {text!r} (choose from {choices})"
        ) from None


def priority(text: str) -> tuple[str, int]:
    tid, sep, value = text.partition("=")
    try:
        return tid, int(value) if sep else int("x")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=N, got {text!r}") from None


def quota(text: str) -> tuple[str, int]:
    pool, sep, value = text.partition("=")
    if not sep or not pool or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected POOL=N with N at least 1, got {text!r}")
    return pool, int(value)


def capacity(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value) if sep and name else -1.0
    except ValueError:
        number = -1.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"expected NAME=N with N above 0, got {text!r}")
    return name, number


def usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD, got {text!r}") from None
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (0 to 1,000,000 USD)")
    return value


def duration(text: str) -> float:
    from gitexec.fields import parse_duration

    value = parse_duration(text)
    if value is None or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 500ms, 5s)")
    return value
