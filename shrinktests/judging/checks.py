"""Turn generations into verdicts: drift, degeneration and constraint results with messages.

Pure functions of already-computed generations and scores; the failure messages say what
diverged, where, by how much, and what to do about it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shrinktests.core.generation import Generation
from shrinktests.judging.budgets import (
    DEGENERATION_METRICS,
    DRIFT_METRICS,
    Budget,
    Violation,
    violations,
)
from shrinktests.judging.degeneration import MODES, evidence, profile
from shrinktests.judging.metrics import (
    TeacherForced,
    first_divergence,
    is_near_tie,
    token_agreement,
)


@dataclass(frozen=True)
class Drift:
    """Drift of one config on one prompt, against the baseline."""

    values: dict[str, float | None]
    divergence: int | None  # None: identical continuations
    near_tie: bool
    base_margin: float | None
    violations: list[Violation] = field(default_factory=list)
    #: teacher-forced top-1 disagreements at baseline near-ties, left out of ``top1``
    tie_disagreements: int = 0
    #: whether any drift budget applied: without one, nothing could fail
    bounded: bool = True


def drift(
    base: Generation, cand: Generation, tf: TeacherForced, budgets: Iterable[Budget],
    epsilon: float,
) -> Drift:
    """Free-running and teacher-forced drift figures, checked against the drift budgets.

    A first divergence at a step where the baseline's top-1/top-2 margin is below ``epsilon``
    is a near-tie: the order of two almost equally likely tokens is a coin flip of float
    rounding, so the ``first_divergence`` budget is not applied to it (it is reported). The
    same holds for teacher-forced top-1 agreement: ``top1`` does not count a disagreement at a
    position where the baseline's margin is below ``epsilon`` (one such token of 19 moved a
    bf16 prompt from 0.95 to 0.89 on another CPU); llama.cpp's plain figure is kept as
    ``same_top_p``. The KL and probability figures are continuous in the logits, so a near-tie
    does not make them jump and they are read as they are.
    """
    identical = base.token_ids == cand.token_ids
    div = None if identical else first_divergence(base.token_ids, cand.token_ids)
    margin = base.margin(div) if div is not None and div < len(base.token_ids) else None
    near_tie = margin is not None and is_near_tie(margin, epsilon)
    values: dict[str, float | None] = {
        "first_divergence": None if div is None or near_tie else float(div),
        "token_agreement": token_agreement(base.token_ids, cand.token_ids),
        "kl_mean": tf.kl_mean,
        "kl_max": tf.kl_max,
        "top1": tf.top1_beyond_ties(epsilon),
        "same_top_p": tf.top1,
        "delta_p": tf.delta_p,
        "ln_ppl_ratio": tf.ln_ppl_ratio,
    }
    drift_budgets = [b for b in budgets if b.metric in DRIFT_METRICS]
    return Drift(values, div, near_tie, margin, violations(drift_budgets, values),
                 tf.tie_disagreements(epsilon), bounded=bool(drift_budgets))


@dataclass(frozen=True)
class Degeneration:
    values: dict[str, float | None]
    modes: list[str]  # named failure modes over budget, e.g. "repetition loop"
    violations: list[Violation]


def degeneration(gen: Generation, budgets: Iterable[Budget],
                 max_items: int | None = None) -> Degeneration:
    """Every degeneration figure of one output, and the named modes whose budget it breaks.

    Silence is always a mode, budget or not: an empty answer is never a pass.
    """
    values = profile(gen.text, gen.token_ids, gen.finished, max_items).values()
    deg_budgets = [b for b in budgets if b.metric in DEGENERATION_METRICS]
    found = violations(deg_budgets, values)
    if values["min_tokens"] == 0 and not any(v.budget.metric == "min_tokens" for v in found):
        found.append(Violation(Budget("min_tokens", ">=", 1), 0.0))
    modes = list(dict.fromkeys(MODES.get(v.budget.metric, v.budget.metric) for v in found))
    return Degeneration(values, modes, found)


def new_modes(cand: Degeneration, base: Degeneration) -> list[str]:
    """Modes of the candidate the baseline does not show on the same prompt: the regressions.
    (A baseline cut off by the token budget does not excuse a candidate's loop.)"""
    return [m for m in cand.modes if m not in base.modes]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def figures(values: dict[str, float | None]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def side_by_side(label_a: str, text_a: str, label_b: str, text_b: str, width: int = 100) -> str:
    """Two continuations one under the other, each wrapped and labelled."""
    w = max(len(label_a), len(label_b))
    lines = []
    for label, text in ((label_a, text_a), (label_b, text_b)):
        body = textwrap.wrap(repr(text)[1:-1], width - w - 3) or [""]
        lines.append(f"{label:>{w}} | {body[0]}")
        lines.extend(f"{'':>{w}} | {more}" for more in body[1:4])
    return "\n".join(lines)


def drift_message(
    config: str, case: str, prompt: str, d: Drift, prefix: str, base_rest: str, cand_rest: str,
) -> str:
    """The failure text of a drift test: prompt, where it diverged, side by side, figures."""
    broken = "; ".join(f"{v.budget} but got {_fmt(v.value)}" for v in d.violations)
    where = ("no divergence in the generated window" if d.divergence is None
             else f"first divergence at token {d.divergence}"
             + (f" (near-tie: baseline margin {d.base_margin:.3f})" if d.near_tie else ""))
    ties = (f" ({d.tie_disagreements} top-1 disagreement{'s' * (d.tie_disagreements != 1)} "
            "at baseline near-ties not counted)" if d.tie_disagreements else "")
    return "\n".join([
        f"drift of config {config!r} on {case} exceeds its budget: {broken}{ties}",
        f"prompt: {prompt!r}",
        f"{where}; common prefix: {prefix[-80:]!r}",
        side_by_side("baseline", base_rest, config, cand_rest),
        f"figures: {figures(d.values)}",
        "If this drift is acceptable, relax the budget in the configs file, or mark the config "
        "expect = \"breaks\".",
    ])


def degeneration_message(config: str, case: str, prompt: str, gen: Generation,
                         d: Degeneration, modes: Sequence[str], max_items: int | None) -> str:
    broken = "; ".join(f"{v.budget} but got {_fmt(v.value)}" for v in d.violations
                       if MODES.get(v.budget.metric, v.budget.metric) in modes)
    lines = [f"{' and '.join(modes)} in config {config!r} on {case}: {broken}",
             f"prompt: {prompt!r}"]
    lines += [f"{mode}: {evidence(mode, gen.text, max_items)}" for mode in modes]
    lines += [side_by_side("output", gen.text, "", ""),
              f"figures: {figures(d.values)} over {len(gen.token_ids)} tokens"]
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float | None:
    s = sorted(xs)
    if not s:
        return None
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
