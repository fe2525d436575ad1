"""What agents may spend, in config: prices per model (`pricing`), budgets (`budget`) and
the quota pools agents of one provider account share (`quotas`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gitexec import fields
from gitexec.dialects import Price
from gitexec.findings import Reporter

MAX_USD = 1_000_000.0


@dataclass(frozen=True)
class Budget:
    """`budget: {run_usd, ticket_usd, hard}`: when the run's spend reaches `run_usd`,
    nothing new starts (and with `hard`, running agents are stopped); a ticket whose
    attempts together cost more than `ticket_usd` fails with reason `budget`."""

    run_usd: float | None = None
    ticket_usd: float | None = None
    hard: bool = False


@dataclass(frozen=True)
class QuotaPolicy:
    """`quotas.<pool>`: how many agents of the pool run at once, and how long the pool may
    stay throttled before its waiting tickets fail."""

    max_parallel: int | None = None
    max_wait_s: float = 3600.0


def usd(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise fields.Invalid(
            f"expected a non-negative number (USD per million tokens), got {value!r}"
        )
    return float(value)


_PRICE_KEYS = ("input", "output", "cached_input")


def _mapping_of(raw: Any, report: Reporter, key: str, what: str) -> dict[Any, Any] | None:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        report.error_at_value((key,), f"{key}: expected {what}, got {fields.type_name(raw)}")
        return None
    return raw


def parse_pricing(raw: Any, report: Reporter) -> dict[str, Price]:
    """`pricing: {<model>: {input, output, cached_input}}`, USD per million tokens."""
    pricing: dict[str, Price] = {}
    raw = _mapping_of(raw, report, "pricing", "a mapping of model names")
    for model, price in (raw or {}).items():
        where: tuple[str | int, ...] = ("pricing", model)
        if not isinstance(price, dict):
            report.error_at_value(
                where,
                f"pricing.{model}: expected a mapping with input, output (and cached_input), "
                f"got {fields.type_name(price)}",
            )
            continue
        values: dict[str, float] = {}
        ok = True
        for key, value in price.items():
            if key not in _PRICE_KEYS:
                hint = fields.did_you_mean(str(key), _PRICE_KEYS)
                report.error_at_key(
                    (*where, key),
                    f"pricing.{model}: unknown key {key!r}{hint}"
                    " (a price has input, output, cached_input)",
                )
                ok = False
                continue
            try:
                values[key] = usd(value)
            except fields.Invalid as exc:
                report.error_at_value((*where, key), f"pricing.{model}.{key}: {exc.message}")
                ok = False
        missing = [k for k in ("input", "output") if k not in price]
        if missing:
            report.error_at_key(where, f"pricing.{model}: missing {missing[0]!r}")
            ok = False
        if ok:
            pricing[str(model)] = Price(**values)
    return pricing


_QUOTA_KEYS = ("max_parallel", "max_wait")


def parse_quotas(raw: Any, report: Reporter) -> dict[str, QuotaPolicy]:
    """`quotas: {<pool>: {max_parallel, max_wait}}` (a pool is named by agents' `quota`)."""
    quotas: dict[str, QuotaPolicy] = {}
    for pool, spec in (_mapping_of(raw, report, "quotas", "a mapping of pool names") or {}).items():
        where: tuple[str | int, ...] = ("quotas", pool)
        if not isinstance(spec, dict):
            report.error_at_value(
                where, f"quotas.{pool}: expected a mapping with max_parallel and/or max_wait"
            )
            continue
        values: dict[str, Any] = {}
        for key, value in spec.items():
            try:
                if key == "max_parallel":
                    values["max_parallel"] = fields.integer(
                        value, minimum=1, maximum=fields.MAX_JOBS
                    )
                elif key == "max_wait":
                    values["max_wait_s"] = fields.duration(value)
                else:
                    hint = fields.did_you_mean(str(key), _QUOTA_KEYS)
                    report.error_at_key((*where, key), f"quotas.{pool}: unknown key {key!r}{hint}")
            except fields.Invalid as exc:
                report.error_at_value((*where, key), f"quotas.{pool}.{key}: {exc.message}")
        quotas[str(pool)] = QuotaPolicy(**values)
    return quotas


_BUDGET_KEYS = ("run_usd", "ticket_usd", "hard")


def parse_budget(raw: Any, report: Reporter) -> Budget:
    """`budget: {run_usd, ticket_usd, hard}`."""
    values: dict[str, Any] = {}
    for key, value in (_mapping_of(raw, report, "budget", "a mapping") or {}).items():
        try:
            if key in ("run_usd", "ticket_usd"):
                values[key] = budget_usd(value)
            elif key == "hard":
                if not isinstance(value, bool):
                    raise fields.Invalid(f"expected true or false, got {fields.type_name(value)}")
                values["hard"] = value
            else:
                hint = fields.did_you_mean(str(key), _BUDGET_KEYS)
                report.error_at_key(("budget", key), f"budget: unknown key {key!r}{hint}")
        except fields.Invalid as exc:
            report.error_at_value(("budget", key), f"budget.{key}: {exc.message}")
    return Budget(**values)


def budget_usd(value: Any) -> float:
    """A budget in USD: a non-negative number (0 spends nothing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fields.Invalid(f"expected an amount in USD, got {fields.type_name(value)}")
    if not 0 <= value <= MAX_USD:
        raise fields.Invalid(f"{value!r} is out of range (0 to {MAX_USD:,.0f} USD)")
    return float(value)
