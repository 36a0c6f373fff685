"""The pure metric functions: hypothesis properties plus hand-computed worked examples.

Every drift and degeneration budget is a threshold on one of these numbers, so a wrong sign,
an off-by-one or a swapped argument here silently moves every verdict of the suites.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shrinktests.judging.metrics import (
    BaselineSide,
    TeacherForced,
    first_divergence,
    is_near_tie,
    kl_per_token,
    log_softmax,
    seq_rep_n,
    teacher_forced,
    token_agreement,
    top_k_rows,
    top_margin,
)

tokens = st.lists(st.integers(0, 50), max_size=40)
fast = settings(max_examples=50, deadline=None)


@st.composite
def logit_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two [T, V] logit arrays of the same shape, values in a range where exp() is exact."""
    t = draw(st.integers(1, 6))
    v = draw(st.integers(1, 8))
    elems = st.floats(-20, 20, allow_nan=False, allow_infinity=False)
    a = draw(hnp.arrays(np.float64, (t, v), elements=elems))
    b = draw(hnp.arrays(np.float64, (t, v), elements=elems))
    return a, b


def _logp(probs: list[list[float]]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64))


# --------------------------------------------------------------------------- first_divergence


@fast
@given(tokens)
def test_first_divergence_of_identical_sequences_is_their_length(seq: list[int]) -> None:
    """No divergence inside the window is reported as the window's length, not as 0 or -1."""
    assert first_divergence(seq, list(seq)) == len(seq)


@fast
@given(tokens, st.lists(st.integers(0, 50), min_size=1, max_size=10))
def test_first_divergence_of_a_strict_prefix_is_the_prefix_length(
    a: list[int], b: list[int]
) -> None:
    """A candidate that stops early (or runs on) diverges where the shorter one ends."""
    assert first_divergence(a, a + b) == len(a)
    assert first_divergence(a + b, a) == len(a)


@fast
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.data())
def test_first_divergence_finds_the_first_changed_token(
    seq: list[int], data: st.DataObject
) -> None:
    """Changing token i (and anything after it) puts the divergence exactly at i."""
    i = data.draw(st.integers(0, len(seq) - 1))
    other = list(seq)
    other[i] = seq[i] + 1
    for j in range(i + 1, len(other)):
        other[j] = data.draw(st.integers(0, 60))
    assert first_divergence(seq, other) == i
    assert first_divergence(other, seq) == i


def test_first_divergence_worked_examples() -> None:
    """Hand-checked cases, including both sequences empty."""
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([7], [8]) == 0
    assert first_divergence([], []) == 0
    assert first_divergence([], [1]) == 0
    assert first_divergence((1, 2), (1, 2)) == 2


# --------------------------------------------------------------------------- token_agreement


@fast
@given(tokens, tokens)
def test_token_agreement_is_a_symmetric_share(a: list[int], b: list[int]) -> None:
    """It is a fraction of positions, so it lies in [0, 1] and does not depend on the order."""
    value = token_agreement(a, b)
    assert 0.0 <= value <= 1.0
    assert value == token_agreement(b, a)


@fast
@given(tokens)
def test_token_agreement_of_identical_sequences_is_one(seq: list[int]) -> None:
    """Identical outputs agree everywhere (two empty outputs included)."""
    assert token_agreement(seq, list(seq)) == 1.0


def test_token_agreement_worked_examples() -> None:
    """Positional over the common length: [1,2,3,4] vs [1,0,3] share 2 of 3 positions."""
    assert token_agreement([1, 2, 3, 4], [1, 0, 3]) == pytest.approx(2 / 3)
    assert token_agreement([1, 2], [2, 1]) == 0.0
    assert token_agreement([], [5]) == 0.0
    assert token_agreement([5], []) == 0.0
    assert token_agreement([], []) == 1.0


# --------------------------------------------------------------------------- seq_rep_n


@fast
@given(tokens, st.integers(1, 6))
def test_seq_rep_n_lies_in_zero_one(seq: list[int], n: int) -> None:
    """1 - unique/total can never reach 1 (at least one n-gram is unique) nor go negative."""
    assert 0.0 <= seq_rep_n(seq, n) < 1.0


@fast
@given(st.lists(st.integers(0, 10_000), unique=True, max_size=40), st.integers(1, 6))
def test_seq_rep_n_of_distinct_tokens_is_zero(seq: list[int], n: int) -> None:
    """All-distinct tokens have all-distinct n-grams: no repetition at all."""
    assert seq_rep_n(seq, n) == 0.0


@fast
@given(
    st.lists(st.integers(0, 1000), unique=True, min_size=1, max_size=6),
    st.integers(2, 20),
)
def test_seq_rep_n_of_a_loop_matches_the_closed_form(gram: list[int], k: int) -> None:
    """A block of n distinct tokens repeated k times has n unique n-grams out of n(k-1)+1."""
    n = len(gram)
    expected = 1.0 - n / (n * (k - 1) + 1)
    assert seq_rep_n(gram * k, n) == pytest.approx(expected)


def test_seq_rep_n_scores_a_long_loop_high() -> None:
    """The degeneration budget (repetition <= 0.35) must catch an output that is one loop."""
    assert seq_rep_n([5, 6, 7, 8] * 12, 4) > 0.9
    assert seq_rep_n([3] * 48) > 0.9


def test_seq_rep_n_worked_examples_and_bad_n() -> None:
    """[1,2,1,2,1] has bigrams 12,21,12,21: 2 unique of 4; short inputs score 0; n=0 is an error."""
    assert seq_rep_n([1, 2, 1, 2, 1], 2) == pytest.approx(0.5)
    assert seq_rep_n([1, 2, 3], 4) == 0.0
    assert seq_rep_n([], 1) == 0.0
    with pytest.raises(ValueError, match="n must be >= 1"):
        seq_rep_n([1, 2, 3], 0)


# --------------------------------------------------------------------------- log_softmax


@fast
@given(logit_pairs())
def test_log_softmax_normalises_and_ignores_shifts(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """Each row exponentiates to a distribution, and adding a constant to a row changes nothing."""
    logits, _ = pair
    lp = log_softmax(logits)
    assert lp.dtype == np.float64
    assert np.all(lp <= 1e-12)
    np.testing.assert_allclose(np.exp(lp).sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(log_softmax(logits + 123.0), lp, atol=1e-9)


def test_log_softmax_worked_example_and_stability() -> None:
    """softmax([0, ln 3]) = [1/4, 3/4]; huge logits do not overflow to nan."""
    np.testing.assert_allclose(
        log_softmax(np.array([0.0, math.log(3.0)])), [math.log(0.25), math.log(0.75)]
    )
    big = log_softmax(np.array([[1000.0, 1000.0], [-1000.0, 0.0]], dtype=np.float32))
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big[0], [math.log(0.5)] * 2)
    np.testing.assert_allclose(big[1, 1], 0.0, atol=1e-12)


# --------------------------------------------------------------------------- kl_per_token


@fast
@given(logit_pairs())
def test_kl_of_a_distribution_with_itself_is_zero(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """An unchanged model has zero drift at every position."""
    lp = log_softmax(pair[0])
    kl = kl_per_token(lp, lp)
    assert kl.shape == (lp.shape[0],)
    np.testing.assert_allclose(kl, 0.0, atol=1e-12)


@fast
@given(logit_pairs())
def test_kl_is_non_negative_and_matches_the_definition(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    """KL(base‖cand) = Σ p_base (ln p_base − ln p_cand), computed here independently."""
    b, c = log_softmax(pair[0]), log_softmax(pair[1])
    kl = kl_per_token(b, c)
    assert np.all(kl >= 0.0)
    p = np.exp(pair[0] - pair[0].max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    q = np.exp(pair[1] - pair[1].max(axis=-1, keepdims=True))
    q /= q.sum(axis=-1, keepdims=True)
    expected = (p * (np.log(p) - np.log(q))).sum(axis=-1)
    np.testing.assert_allclose(kl, np.maximum(expected, 0.0), rtol=1e-7, atol=1e-9)


def test_kl_worked_example_two_tokens() -> None:
    """Hand-computed: KL([.5,.5]‖[.25,.75]) = ½ln(4/3) ≈ 0.143841 and
    KL([.9,.1]‖[.5,.5]) = .9ln1.8 + .1ln.2 ≈ 0.368064."""
    base = _logp([[0.5, 0.5], [0.9, 0.1]])
    cand = _logp([[0.25, 0.75], [0.5, 0.5]])
    kl = kl_per_token(base, cand)
    expected = [0.5 * math.log(4 / 3), 0.9 * math.log(1.8) + 0.1 * math.log(0.2)]
    np.testing.assert_allclose(kl, expected, rtol=1e-12)
    np.testing.assert_allclose(kl, [0.1438410362, 0.3680642071], rtol=1e-9)
    # the direction matters: KL is not symmetric
    assert kl_per_token(cand, base)[0] != pytest.approx(kl[0])


def test_kl_treats_zero_base_probability_as_zero_contribution() -> None:
    """0·log 0 = 0: a token the baseline rules out adds nothing (no nan from -inf − -inf)."""
    base = _logp([[1.0, 0.0]])
    cand = _logp([[0.5, 0.5]])
    np.testing.assert_allclose(kl_per_token(base, cand), [math.log(2.0)])
    np.testing.assert_allclose(kl_per_token(base, _logp([[1.0, 0.0]])), [0.0])


# --------------------------------------------------------------------------- teacher_forced


@fast
@given(logit_pairs(), st.data())
def test_teacher_forced_against_itself_shows_no_drift(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    """The reference compared with itself: KL 0, full top-1 agreement, Δp 0, PPL ratio 1."""
    lp = log_softmax(pair[0])
    t, v = lp.shape
    targets = data.draw(st.lists(st.integers(0, v - 1), min_size=t, max_size=t))
    tf = teacher_forced(lp, lp, targets)
    assert tf.n == t
    assert tf.kl_mean == pytest.approx(0.0, abs=1e-12)
    assert tf.kl_max == pytest.approx(0.0, abs=1e-12)
    assert tf.top1 == 1.0
    assert tf.delta_p == 0.0
    assert tf.ln_ppl_ratio == 0.0


@fast
@given(logit_pairs(), st.data())
def test_teacher_forced_properties_are_consistent(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    """Summaries agree with the per-token arrays they summarise, whatever the logits."""
    b, c = log_softmax(pair[0]), log_softmax(pair[1])
    t, v = b.shape
    targets = data.draw(st.lists(st.integers(0, v - 1), min_size=t, max_size=t))
    tf = teacher_forced(b, c, targets)
    assert tf.kl_mean >= 0.0
    assert tf.kl_max >= tf.kl_mean - 1e-12
    assert 0.0 <= tf.top1 <= 1.0
    assert -1.0 <= tf.delta_p <= 1.0
    np.testing.assert_allclose(tf.p_base, np.exp(b[np.arange(t), targets]))
    np.testing.assert_allclose(tf.p_cand, np.exp(c[np.arange(t), targets]))
    expected_ratio = float(np.mean(b[np.arange(t), targets] - c[np.arange(t), targets]))
    assert tf.ln_ppl_ratio == pytest.approx(expected_ratio, abs=1e-9)
    assert np.all((tf.base_margin >= -1e-12) & (tf.base_margin <= 1.0 + 1e-12))


@fast
@given(logit_pairs(), st.data())
def test_teacher_forced_with_a_prepared_baseline_is_the_same_bit_for_bit(
    pair: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    """The baseline's half computed once (as the atlas does for its ~60 scopes) changes no
    figure, and leaving out the candidate's top-k leaves the rest as it was."""
    b, c = log_softmax(pair[0]).astype(np.float32), log_softmax(pair[1]).astype(np.float32)
    t, v = b.shape
    targets = data.draw(st.lists(st.integers(0, v - 1), min_size=t, max_size=t))
    plain = teacher_forced(b, c, targets)
    prepared = teacher_forced(BaselineSide.of(b), c, targets, candidate_top=False)
    for name in ("kl", "top1_agree", "p_base", "p_cand", "base_margin"):
        assert np.array_equal(getattr(plain, name), getattr(prepared, name)), name
    assert prepared.cand_top_ids is None and plain.cand_top_ids is not None


def test_teacher_forced_worked_example() -> None:
    """Two tokens, three-word vocabulary, every property computed by hand."""
    base_p = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]
    cand_p = [[0.2, 0.7, 0.1], [0.2, 0.5, 0.3]]
    tf = teacher_forced(_logp(base_p), _logp(cand_p), [0, 1])
    kl_rows = [
        0.7 * math.log(0.7 / 0.2) + 0.2 * math.log(0.2 / 0.7),
        0.1 * math.log(0.1 / 0.2) + 0.6 * math.log(0.6 / 0.5),
    ]
    assert tf.n == 2
    assert tf.kl_mean == pytest.approx(sum(kl_rows) / 2)
    assert tf.kl_max == pytest.approx(max(kl_rows))
    # argmax 0 vs 1 disagree, argmax 1 vs 1 agree
    assert tf.top1 == 0.5
    # p of the baseline's tokens: 0.7 → 0.2 and 0.6 → 0.5
    assert tf.delta_p == pytest.approx(-0.3)
    assert tf.ln_ppl_ratio == pytest.approx(math.log(0.7 / 0.2 * 0.6 / 0.5) / 2)
    np.testing.assert_allclose(tf.base_margin, [0.5, 0.3])


def test_teacher_forced_empty_continuation_has_neutral_summaries() -> None:
    """Zero tokens: nothing drifted (KL 0, top-1 1.0, Δp 0, ratio 0), no nan from mean([])."""
    empty = np.zeros((0, 4))
    tf = teacher_forced(empty, empty, [])
    assert (tf.n, tf.kl_mean, tf.kl_max, tf.top1, tf.delta_p, tf.ln_ppl_ratio) == (
        0, 0.0, 0.0, 1.0, 0.0, 0.0,
    )


def test_teacher_forced_single_word_vocabulary_margin_is_its_probability() -> None:
    """With V = 1 there is no second token: the margin is the top probability itself."""
    lp = np.zeros((3, 1))
    tf = teacher_forced(lp, lp, [0, 0, 0])
    np.testing.assert_allclose(tf.base_margin, [1.0, 1.0, 1.0])


def test_teacher_forced_rejects_mismatched_shapes() -> None:
    """Mismatched inputs are a caller bug and must not be broadcast into a plausible number."""
    lp = log_softmax(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        teacher_forced(lp, log_softmax(np.zeros((2, 4))), [0, 1])
    with pytest.raises(ValueError, match="shape mismatch"):
        teacher_forced(lp, lp, [0])
    with pytest.raises(ValueError, match="shape mismatch"):
        teacher_forced(lp[0], lp[0], [0, 1, 2])


def test_teacher_forced_dataclass_properties_directly() -> None:
    """ln PPL ratio clamps zero probabilities instead of returning inf/nan."""
    tf = TeacherForced(
        kl=np.array([0.0, 2.0]),
        top1_agree=np.array([True, False]),
        p_base=np.array([0.5, 0.5]),
        p_cand=np.array([0.5, 0.0]),
        base_margin=np.array([0.1, 0.2]),
    )
    assert tf.kl_mean == 1.0
    assert tf.top1 == 0.5
    assert tf.delta_p == pytest.approx(-0.25)
    assert math.isfinite(tf.ln_ppl_ratio)
    assert tf.ln_ppl_ratio > 300.0


@fast
@given(st.lists(st.tuples(st.booleans(), st.floats(0, 1)), max_size=40), st.floats(0, 0.5))
def test_top1_beyond_ties_forgives_exactly_the_disagreements_at_baseline_near_ties(
    rows: list[tuple[bool, float]], eps: float,
) -> None:
    """It is never below llama.cpp's plain figure, equals it with ε = 0, and differs from it
    by the near-tie disagreements alone."""
    n = len(rows)
    tf = TeacherForced(kl=np.zeros(n), top1_agree=np.array([a for a, _ in rows], dtype=bool),
                       p_base=np.ones(n), p_cand=np.ones(n),
                       base_margin=np.array([m for _, m in rows], dtype=np.float64))
    ties = sum(1 for a, m in rows if not a and m < eps)
    assert tf.tie_disagreements(eps) == ties
    assert tf.top1_beyond_ties(eps) >= tf.top1
    assert tf.top1_beyond_ties(0.0) == tf.top1
    if n:
        assert tf.top1_beyond_ties(eps) == pytest.approx(tf.top1 + ties / n)


def test_one_near_tie_of_nineteen_no_longer_fails_a_top1_budget() -> None:
    """The case measured on another CPU: 17 of 19 tokens agree, one disagreement at a baseline
    margin of 0.013, one at a clear margin: 0.947 against ``top1 >= 0.9``, 0.895 plain."""
    agree = np.ones(19, dtype=bool)
    agree[[4, 11]] = False
    margin = np.full(19, 0.5)
    margin[4] = 0.013
    tf = TeacherForced(kl=np.zeros(19), top1_agree=agree, p_base=np.ones(19),
                       p_cand=np.ones(19), base_margin=margin)
    assert tf.top1 == pytest.approx(17 / 19)
    assert tf.top1_beyond_ties(0.02) == pytest.approx(18 / 19)
    assert tf.tie_disagreements(0.02) == 1


# --------------------------------------------------------------------------- near ties


def test_is_near_tie_is_strictly_below_epsilon() -> None:
    """A margin equal to ε is not a tie; below it is; ε = 0 disables tie handling."""
    assert is_near_tie(0.01, 0.02)
    assert not is_near_tie(0.02, 0.02)
    assert not is_near_tie(0.5, 0.02)
    assert not is_near_tie(0.0, 0.0)


@fast
@given(st.floats(0, 1), st.floats(0, 1))
def test_is_near_tie_is_the_comparison(margin: float, eps: float) -> None:
    """Monotone threshold: exactly the margins below ε are ties."""
    assert is_near_tie(margin, eps) == (margin < eps)


def test_top_margin_worked_example() -> None:
    """Top-1 minus top-2 probability; a one-word distribution has margin 1."""
    assert top_margin(_logp([0.5, 0.3, 0.2])) == pytest.approx(0.2)
    assert top_margin(_logp([0.25, 0.25, 0.5])) == pytest.approx(0.25)
    assert top_margin(np.zeros(1)) == 1.0


@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 40)),
                  elements=st.floats(-30, 0, allow_nan=False)), st.integers(1, 8))
def test_top_k_rows_agree_with_argmax_and_a_full_sort(logp: np.ndarray, k: int) -> None:
    """Best first, ties to the lower id (as argmax breaks them, so the top-1 is what greedy
    generation picks)."""
    ids, vals = top_k_rows(logp, k)
    k = min(k, logp.shape[1])
    assert ids.shape == vals.shape == (logp.shape[0], k)
    np.testing.assert_array_equal(ids[:, 0], logp.argmax(axis=-1))
    expect = np.sort(logp, axis=-1)[:, ::-1][:, :k].astype(np.float32)
    np.testing.assert_array_equal(vals, expect)
    for row, row_ids in zip(logp, ids, strict=True):
        for a, b in pairwise(row_ids):
            assert row[a] > row[b] or (row[a] == row[b] and a < b)
