"""Minimum detectable effects and two-way flips (hypothesis properties and worked numbers):
what a passing aggregate comparison could still have missed."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinktests.judging.aggregate import Flips, PromptOutcome, detectable, flips, pairs
from shrinktests.judging.stats import paired_mean_mde, paired_rate_mde

fast = settings(max_examples=60, deadline=None)
levels = st.sampled_from([0.8, 0.9, 0.95, 0.99])


@fast
@given(st.integers(1, 500), st.integers(0, 500), levels)
def test_rate_mde_is_positive_finite_and_at_most_one(n: int, d: int, level: float) -> None:
    mde = paired_rate_mde(min(d, n), n, level)
    assert 0.0 < mde <= 1.0 and math.isfinite(mde)


@fast
@given(st.integers(1, 200), st.integers(0, 200), st.integers(2, 5), st.integers(1, 200), levels)
def test_rate_mde_shrinks_as_pairs_grow(n: int, d: int, times: int, more: int,
                                        level: float) -> None:
    """The same share of discordant pairs over ``times`` as many pairs, or the same discordant
    pairs among more agreeing ones, can only be detected more finely."""
    d = min(d, n)
    assert paired_rate_mde(d * times, n * times, level) <= paired_rate_mde(d, n, level)
    assert paired_rate_mde(d, n + more, level) <= paired_rate_mde(d, n, level)


@fast
@given(st.integers(1, 300), st.integers(0, 300), st.integers(0, 300), levels)
def test_rate_mde_grows_with_discordance(n: int, a: int, b: int, level: float) -> None:
    low, high = sorted((min(a, n), min(b, n)))
    assert paired_rate_mde(low, n, level) <= paired_rate_mde(high, n, level)


@fast
@given(st.integers(2, 300), st.integers(0, 300))
def test_rate_mde_grows_with_the_level_asked_for(n: int, d: int) -> None:
    assert paired_rate_mde(min(d, n), n, 0.9) <= paired_rate_mde(min(d, n), n, 0.99)


def test_rate_mde_worked_numbers() -> None:
    # 41 prompts, 4 (about 10 %) discordant, 95 %: (1.960 + 0.842) * sqrt(4/41 / 41) = 0.137
    assert paired_rate_mde(4, 41) == pytest.approx(0.1367, abs=5e-4)
    # the usual (z_.975 + z_.8)^2 = 7.85: 100 pairs, 20 % discordant -> 2.80 * sqrt(.002)
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert z**2 == pytest.approx(7.849, abs=1e-3)
    assert paired_rate_mde(20, 100) == pytest.approx(0.1253, abs=5e-4)
    # no discordant pair is floored at one: 41 agreeing prompts still cannot see 0.05
    assert paired_rate_mde(0, 41) == paired_rate_mde(1, 41) == pytest.approx(z / 41)
    assert paired_rate_mde(1, 2) == 1.0  # two prompts detect nothing short of everything
    with pytest.raises(ValueError):
        paired_rate_mde(0, 0)
    with pytest.raises(ValueError):
        paired_rate_mde(5, 4)


finite = st.floats(0.0, 20.0, allow_nan=False)


@fast
@given(st.lists(finite, min_size=2, max_size=60), levels)
def test_mean_mde_is_finite_and_positive_unless_constant(xs: list[float], level: float) -> None:
    mde = paired_mean_mde(xs, level)
    assert math.isfinite(mde) and mde >= 0.0
    assert (mde > 0.0) == (len(set(xs)) > 1)


@fast
@given(st.lists(finite, min_size=2, max_size=30).filter(lambda xs: len(set(xs)) > 1),
       st.integers(2, 5))
def test_mean_mde_shrinks_as_prompts_grow(xs: list[float], copies: int) -> None:
    """The same spread over ``copies`` times the prompts: sd about equal, sqrt(n) larger."""
    assert paired_mean_mde(xs * copies) < paired_mean_mde(xs)


def test_mean_mde_worked_number() -> None:
    # 41 per-prompt KLs with sd 0.05: 2.80 * 0.05 / sqrt(41) = 0.0219
    kls = [0.0, 0.1] * 20 + [0.05]
    assert paired_mean_mde(kls) == pytest.approx(0.02188, abs=5e-5)
    with pytest.raises(ValueError):
        paired_mean_mde([0.3])


def _outcome(base_met: tuple[bool, ...], cand_met: tuple[bool, ...], *, kl: float | None = 0.1,
             loops: tuple[bool, bool] = (False, False),
             empty: tuple[bool, bool] = (False, False)) -> PromptOutcome:
    return PromptOutcome(kl=kl, top1=0.9, base_loop=loops[0], cand_loop=loops[1],
                         base_empty=empty[0], cand_empty=empty[1], base_met=base_met,
                         cand_met=cand_met)


def test_flips_count_both_directions() -> None:
    """Two constraints lost, one gained: a net drop of one hides three flips."""
    outcomes = [_outcome((True, True), (False, True), loops=(False, True)),
                _outcome((True,), (False,), loops=(True, False), empty=(False, True)),
                _outcome((False, False), (True, False), loops=(False, True)),
                _outcome((), (), kl=None)]
    assert flips(outcomes) == {"loops": Flips(lost=2, gained=1), "empty": Flips(1, 0),
                               "adherence": Flips(lost=2, gained=1)}
    assert pairs(outcomes) == {"adherence_drop": 5, "loop_increase": 4, "empty_increase": 4,
                               "mean_kl": 3}
    assert flips([]) == {} and pairs([]) == {} and detectable([], 0.95) == {}


def test_detectable_gives_each_aggregate_its_bound() -> None:
    # 41 prompts of one constraint: 3 lost, 1 gained; 2 new loops; KL sd 0.05
    kls = [0.0, 0.1] * 20 + [0.05]
    met = [(True, False)] * 3 + [(False, True)] + [(True, True)] * 37
    loops = [(False, True)] * 2 + [(False, False)] * 39
    outcomes = [_outcome((b,), (c,), kl=k, loops=lp)
                for (b, c), k, lp in zip(met, kls, loops, strict=True)]
    found = detectable(outcomes, 0.95)
    assert list(found) == ["adherence_drop", "loop_increase", "empty_increase", "mean_kl"]
    assert found["adherence_drop"] == pytest.approx(paired_rate_mde(4, 41))
    assert found["loop_increase"] == pytest.approx(paired_rate_mde(2, 41))
    assert found["empty_increase"] == pytest.approx(paired_rate_mde(0, 41))  # floored
    assert found["mean_kl"] == pytest.approx(0.02188, abs=5e-5)
    # one prompt has no spread for KL: left out rather than infinite
    assert "mean_kl" not in detectable(outcomes[:1], 0.95)
