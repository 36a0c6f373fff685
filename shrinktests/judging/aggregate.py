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

Since "within noise" is not "no change", :func:`detectable` gives each aggregate's minimum
detectable effect (80 % power at the configured level), and :func:`flips` the two-way counts
behind a paired rate: outcomes the config lost and gained against the baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shrinktests.judging.budgets import AGGREGATE_METRICS, Budget
from shrinktests.judging.stats import (
    POWER,
    Estimate,
    bootstrap_mean,
    paired_mean_mde,
    paired_rate_change,
    paired_rate_mde,
)


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
class Flips:
    """Paired pass/fail outcomes that changed between the baseline and the config, in both
    directions ("flips" as the literature on compressed models counts them): a net change of
    zero can hide many flips each way.

    ``lost``: passed by the baseline, failed by the config; ``gained``: the other way. A pass
    is a constraint met, an output not in a repetition loop, an output not empty.
    """

    lost: int
    gained: int


def _flips(base_pass: Iterable[bool], cand_pass: Iterable[bool]) -> Flips:
    pairs = list(zip(base_pass, cand_pass, strict=True))
    return Flips(lost=sum(1 for b, c in pairs if b and not c),
                 gained=sum(1 for b, c in pairs if c and not b))


def flips(outcomes: Sequence[PromptOutcome]) -> dict[str, Flips]:
    """Two-way flips per paired outcome: ``adherence`` per constraint, ``loops`` and ``empty``
    per prompt (left out when there is nothing to pair: no prompts, or no constraints)."""
    out: dict[str, Flips] = {}
    if outcomes:
        out["loops"] = _flips([not o.base_loop for o in outcomes],
                              [not o.cand_loop for o in outcomes])
        out["empty"] = _flips([not o.base_empty for o in outcomes],
                              [not o.cand_empty for o in outcomes])
    base_met = [m for o in outcomes for m in o.base_met]
    if base_met:
        out["adherence"] = _flips(base_met, [m for o in outcomes for m in o.cand_met])
    return out


#: which flips lie behind each paired-rate aggregate
FLIPS_OF = {"adherence_drop": "adherence", "loop_increase": "loops",
            "empty_increase": "empty"}


def pairs(outcomes: Sequence[PromptOutcome]) -> dict[str, int]:
    """How many paired outcomes each aggregate of :func:`detectable` rests on: constraints for
    ``adherence_drop``, prompts for the others (prompts with a KL for ``mean_kl``)."""
    out: dict[str, int] = {}
    if constraints := sum(len(o.base_met) for o in outcomes):
        out["adherence_drop"] = constraints
    if outcomes:
        out["loop_increase"] = out["empty_increase"] = len(outcomes)
    if kls := sum(1 for o in outcomes if o.kl is not None):
        out["mean_kl"] = kls
    return out


def detectable(outcomes: Sequence[PromptOutcome], level: float,
               power: float = POWER) -> dict[str, float]:
    """The minimum detectable effect of each aggregate (``adherence_drop``, ``loop_increase``,
    ``empty_increase``, ``mean_kl``) at ``level`` with ``power``: the smallest change the
    suite's prompts would show as significant, so a pass "within noise" says how large a
    change could still hide in it. Paired rates use the observed discordance (the flips,
    :func:`shrinktests.judging.stats.paired_rate_mde`); mean KL the spread of the per-prompt
    KL (:func:`shrinktests.judging.stats.paired_mean_mde`). A metric without data is left
    out, as is mean KL with fewer than two prompts.

    Constraints of one prompt are counted as independent pairs, as :func:`estimates` does;
    they are not quite (one bad answer can miss several), so the bound is optimistic there.
    """
    out: dict[str, float] = {}
    found = flips(outcomes)
    n = pairs(outcomes)
    for metric, kind in FLIPS_OF.items():
        if metric in n:
            f = found[kind]
            out[metric] = paired_rate_mde(f.lost + f.gained, n[metric], level, power)
    kls = [o.kl for o in outcomes if o.kl is not None]
    if len(kls) >= 2:
        out["mean_kl"] = paired_mean_mde(kls, level, power)
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
