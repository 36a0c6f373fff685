"""Intervals and paired tests (hypothesis properties and textbook values), and the aggregate
budgets that must never fail on noise alone."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.judging.aggregate import PromptOutcome, estimates, judge
from shrinktests.judging.budgets import BudgetError, parse_budget
from shrinktests.judging.stats import (
    bootstrap_mean,
    mcnemar,
    paired_rate_change,
    significant,
    wilson,
)

fast = settings(max_examples=60, deadline=None)
finite = st.floats(-1e3, 1e3, allow_nan=False)


@fast
@given(st.integers(0, 200), st.integers(0, 200), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_contains_the_rate_and_stays_in_zero_one(k: int, extra: int, level: float) -> None:
    n = k + extra
    low, high = wilson(k, n, level)
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low - 1e-12 <= k / n <= high + 1e-12


def test_wilson_textbook_value() -> None:
    # 12 of 41 at 95 %: [0.176, 0.445] (Wilson 1927; e.g. Newcombe 1998's method 3)
    low, high = wilson(12, 41)
    assert (round(low, 3), round(high, 3)) == (0.176, 0.445)
    with pytest.raises(ValueError):
        wilson(3, 2)


@fast
@given(st.lists(finite, min_size=1, max_size=40), st.integers(0, 5))
def test_bootstrap_interval_contains_the_mean_and_is_reproducible(xs: list[float],
                                                                  seed: int) -> None:
    est = bootstrap_mean(xs, seed=seed, samples=300)
    assert est.low <= est.value <= est.high
    assert est == bootstrap_mean(xs, seed=seed, samples=300)


def test_bootstrap_of_constant_values_has_no_width() -> None:
    est = bootstrap_mean([0.3] * 10)
    assert est.low == est.value == est.high == pytest.approx(0.3)
    with pytest.raises(ValueError):
        bootstrap_mean([])


@fast
@given(st.integers(0, 60))
def test_mcnemar_on_balanced_pairs_is_one(n: int) -> None:
    assert mcnemar(n, n) == 1.0


@fast
@given(st.integers(0, 40), st.integers(0, 40))
def test_mcnemar_is_symmetric_and_a_probability(b: int, c: int) -> None:
    assert mcnemar(b, c) == mcnemar(c, b)
    assert 0.0 < mcnemar(b, c) <= 1.0


def test_mcnemar_exact_values() -> None:
    assert mcnemar(0, 6) == pytest.approx(2 / 64)  # all six discordant pairs one way
    assert mcnemar(1, 10) == pytest.approx(2 * 12 / 2048)
    assert mcnemar(500, 1500) < 1e-100  # large counts: exact, no overflow


def test_identical_outcomes_are_within_noise() -> None:
    same = [True, False, True, True]
    est = paired_rate_change(same, same)
    assert (est.value, est.p) == (0.0, 1.0)
    assert not significant(est)


# a published benchmark's case: 16.7 % vs 13.3 % adherence over 30 prompts is noise
def _seed002() -> tuple[list[bool], list[bool]]:
    base = [True] * 5 + [False] * 25
    cand = [True] * 3 + [False, False] + [True] + [False] * 24  # 4 of 30, one swapped
    return base, cand


def test_a_small_adherence_difference_is_within_noise() -> None:
    base, cand = _seed002()
    est = paired_rate_change(base, cand)
    assert math.isclose(est.value, 4 / 30 - 5 / 30)
    assert est.p is not None and est.p > 0.5
    assert not significant(est)


def _outcomes(base_met: list[bool], cand_met: list[bool]) -> list[PromptOutcome]:
    return [PromptOutcome(kl=0.1 * i, top1=0.9, base_loop=False, cand_loop=i % 2 == 0,
                          base_empty=False, cand_empty=False, base_met=(b,), cand_met=(c,))
            for i, (b, c) in enumerate(zip(base_met, cand_met, strict=True))]


def test_noise_never_fails_a_point_budget_but_an_interval_bound_can() -> None:
    base, cand = _seed002()
    found = estimates(_outcomes(base, cand), 0.95)
    drop = found["adherence_drop"]
    assert drop.value == pytest.approx(1 / 30)
    budgets = [parse_budget("adherence_drop <= 0.0"), parse_budget("adherence_drop.upper <= 0.1")]
    verdicts = {str(j.budget): j.verdict for j in judge(budgets, found)}
    assert verdicts == {"adherence_drop <= 0": "within noise",
                        "adherence_drop.upper <= 0.1": "fails"}


def test_a_real_change_straddling_the_limit_is_inconclusive() -> None:
    # a significant 20-point drop whose interval also holds 10 points: not proven > 10
    found = estimates(_outcomes([True] * 10 + [False] * 20, [False] * 6 + [True] * 4
                                + [False] * 20), 0.95)
    [j] = judge([parse_budget("adherence_drop <= 0.1")], found)
    assert found["adherence_drop"].p is not None and found["adherence_drop"].p < 0.05
    assert j.verdict == "inconclusive"


def test_a_real_regression_fails_its_point_budget() -> None:
    found = estimates(_outcomes([True] * 30, [True] * 10 + [False] * 20), 0.95)
    assert found["adherence_drop"].value == pytest.approx(20 / 30)
    assert found["adherence_drop"].p is not None and found["adherence_drop"].p < 1e-5
    [j] = judge([parse_budget("adherence_drop <= 0.1")], found)
    assert j.verdict == "fails"
    assert "McNemar p=" in j.describe()
    assert found["loop_increase"].value == pytest.approx(0.5)
    assert found["mean_kl"].low <= found["mean_kl"].value <= found["mean_kl"].high


def test_interval_bounds_only_exist_for_aggregate_metrics() -> None:
    assert str(parse_budget("mean_kl.upper <= 0.5")) == "mean_kl.upper <= 0.5"
    with pytest.raises(BudgetError, match="only aggregate metrics"):
        parse_budget("kl_mean.upper <= 0.5")
