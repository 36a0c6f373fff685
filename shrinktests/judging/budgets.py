"""Budgets: thresholds written as data (``"kl_mean <= 0.05"``) and parsed into typed checks."""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

#: metric name → what it measures (shown in errors and reports)
DRIFT_METRICS: dict[str, str] = {
    "first_divergence": "index of the first generated token that differs from the baseline",
    "token_agreement": "share of positions with the baseline's token, free-running",
    "kl_mean": "mean per-token KL(base‖config), teacher-forced on the baseline continuation",
    "kl_max": "largest per-token KL(base‖config)",
    "top1": "share of positions where config and baseline agree on the most likely token, "
            "a disagreement at a baseline near-tie not counted",
    "same_top_p": "llama.cpp's plain top-1 agreement, every position counted",
    "delta_p": "mean change of the probability of the baseline's token",
    "ln_ppl_ratio": "ln(PPL_config / PPL_base) over the baseline continuation",
}
DEGENERATION_METRICS: dict[str, str] = {
    "repetition": "seq-rep-4: 1 − unique 4-grams / 4-grams of the output tokens (loops)",
    "soup": "share of words that look like token soup (other scripts, markup, random caps)",
    "min_tokens": "number of generated tokens (an empty answer has 0: silence)",
    "truncated": "1 when the answer ran out of tokens mid-sentence, else 0",
    "overshoot": "list items beyond the most the prompt's list_items check allows",
    "repetition_ratio": "1 − unique word 3-grams / word 3-grams",
    "rep_l": "rep/16: share of tokens already among the 16 before them",
    "distinct_2": "unique token bigrams / token bigrams",
}
#: config-level metrics over all prompts (``test_aggregate``); each takes an optional
#: ``.upper`` / ``.lower`` suffix to bound its confidence interval instead of its value
AGGREGATE_METRICS: dict[str, str] = {
    "mean_kl": "mean over prompts of the per-prompt mean KL(base‖config)",
    "mean_top1": "mean over prompts of the per-prompt top-1 agreement",
    "adherence_drop": "baseline adherence − config adherence over the same constraints (0..1)",
    "loop_increase": "config's share of looping outputs − the baseline's (paired)",
    "empty_increase": "config's share of empty outputs − the baseline's (paired)",
}
METRICS: dict[str, str] = {**DRIFT_METRICS, **DEGENERATION_METRICS, **AGGREGATE_METRICS}

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt,
}
_PATTERN = re.compile(
    r"^\s*([a-z_0-9]+(?:\.[a-z]+)?)\s*(<=|>=|<|>)\s*([-+0-9.eE]+|inf|-inf)\s*$")


class BudgetError(ValueError):
    """A budget string that does not parse; the message quotes it and says what is allowed."""


@dataclass(frozen=True)
class Budget:
    """One bound on one metric, e.g. ``kl_mean <= 0.05``."""

    metric: str
    op: str
    limit: float

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` is within the bound; ``None`` (not applicable) always holds."""
        if value is None:
            return True
        if math.isnan(value):
            return False
        return _OPS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.limit:g}"


def parse_budget(text: str) -> Budget:
    """Parse ``"metric op number"``; the metric must be a known one."""
    if not isinstance(text, str):
        raise BudgetError(f"expected a string like 'kl_mean <= 0.05', got {text!r}")
    m = _PATTERN.match(text)
    if m is None:
        raise BudgetError(
            f"cannot parse budget {text!r}: write 'metric OP number' with OP one of <=, >=, <, >"
        )
    metric, op, number = m.groups()
    try:
        limit = float(number)
    except ValueError:
        raise BudgetError(f"cannot parse budget {text!r}: {number!r} is not a number") from None
    base, _, bound = metric.partition(".")
    if bound and (base not in AGGREGATE_METRICS or bound not in ("upper", "lower")):
        raise BudgetError(
            f"cannot parse budget {text!r}: only aggregate metrics "
            f"({', '.join(AGGREGATE_METRICS)}) take a .upper or .lower bound")
    if base not in METRICS:
        close = difflib.get_close_matches(metric, list(METRICS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BudgetError(
            f"unknown metric {metric!r} in budget {text!r}{hint}; known: {', '.join(METRICS)}"
        )
    return Budget(metric, op, limit)


def merge_budgets(defaults: Iterable[Budget], overrides: Iterable[Budget]) -> tuple[Budget, ...]:
    """Config budgets replace default budgets on the same metric; the rest are kept."""
    merged = {b.metric: b for b in defaults}
    merged.update({b.metric: b for b in overrides})
    return tuple(merged.values())


@dataclass(frozen=True)
class Violation:
    budget: Budget
    value: float


def violations(
    budgets: Iterable[Budget], values: Mapping[str, float | None]
) -> list[Violation]:
    """Budgets whose metric is present in ``values`` and out of bounds."""
    out = []
    for b in budgets:
        if b.metric in values and not b.holds(values[b.metric]):
            v = values[b.metric]
            out.append(Violation(b, float("nan") if v is None else v))
    return out
