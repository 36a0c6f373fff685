"""Config-level comparisons with the baseline over every prompt, with intervals, and the
aggregate budgets that gate on them (``test_aggregate[<config>]``).

Per-prompt budgets catch one broken answer; aggregate budgets catch a config that is a bit
worse everywhere. Because 30-odd prompts are few, each aggregate comes with its interval
(:mod:`shrinktests.judging.stats`) and a budget is judged against it:

- ``adherence_drop <= 0.1`` (a point bound) fails only when the violation is *significant*:
  the whole interval lies beyond the limit and, for paired rates, McNemar's p is below
  1 − level. Otherwise it passes, reported as "within noise" (no significant change at all)
  or "inconclusive" (a real change whose interval straddles the limit);
- ``adherence_drop.upper <= 0.1`` bounds the interval itself: it fails while the data cannot
  rule out a drop above 10 points (the conservative gate).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shrinktests.judging.budgets import AGGREGATE_METRICS, Budget
from shrinktests.judging.stats import Estimate, bootstrap_mean, paired_rate_change


@dataclass(frozen=True)
class PromptOutcome:
    """What one prompt showed for the baseline and for the config."""

    kl: float | None
    top1: float | None
    base_loop: bool
    cand_loop: bool
    base_empty: bool
    cand_empty: bool
    base_met: tuple[bool, ...]  # one per constraint of the prompt
    cand_met: tuple[bool, ...]


def estimates(outcomes: Sequence[PromptOutcome], level: float) -> dict[str, Estimate]:
    """Every aggregate metric of :data:`AGGREGATE_METRICS` with its interval (a metric with
    no data, e.g. adherence of a suite without checks, is left out)."""
    out: dict[str, Estimate] = {}
    kls = [o.kl for o in outcomes if o.kl is not None]
    top1s = [o.top1 for o in outcomes if o.top1 is not None]
    if kls:
        out["mean_kl"] = bootstrap_mean(kls, level)
    if top1s:
        out["mean_top1"] = bootstrap_mean(top1s, level)
    if outcomes:
        out["loop_increase"] = paired_rate_change([o.base_loop for o in outcomes],
                                                  [o.cand_loop for o in outcomes], level)
        out["empty_increase"] = paired_rate_change([o.base_empty for o in outcomes],
                                                   [o.cand_empty for o in outcomes], level)
    base_met = [m for o in outcomes for m in o.base_met]
    cand_met = [m for o in outcomes for m in o.cand_met]
    if base_met:
        gain = paired_rate_change(base_met, cand_met, level)  # cand − base
        out["adherence_drop"] = Estimate(-gain.value, -gain.high, -gain.low, level, gain.p)
    return out


@dataclass(frozen=True)
class Judgement:
    budget: Budget
    estimate: Estimate
    value: float  # the number the budget was applied to (point, upper or lower bound)
    verdict: str  # "ok", "within noise" or "fails"

    def describe(self) -> str:
        e = self.estimate
        p = f", McNemar p={e.p:.3g}" if e.p is not None else ""
        return (f"{self.budget}: {self.verdict} ({e.value:.4g}, {100 * e.level:.0f}% interval "
                f"[{e.low:.4g}, {e.high:.4g}]{p})")


def judge(budgets: Iterable[Budget], found: Mapping[str, Estimate]) -> list[Judgement]:
    """Apply the aggregate budgets (``metric``, ``metric.upper``, ``metric.lower``)."""
    out = []
    for b in budgets:
        metric, _, bound = b.metric.partition(".")
        if metric not in AGGREGATE_METRICS or metric not in found:
            continue
        est = found[metric]
        value = {"upper": est.high, "lower": est.low}.get(bound, est.value)
        if b.holds(value):
            verdict = "ok"
        elif bound:
            verdict = "fails"
        elif est.p is not None and est.p >= 1 - est.level:
            verdict = "within noise"  # no significant change at all
        elif not est.beyond(b.op, b.limit):
            verdict = "inconclusive"  # a real change, but its interval straddles the limit
        else:
            verdict = "fails"
        out.append(Judgement(b, est, value, verdict))
    return out
