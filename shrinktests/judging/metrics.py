"""Pure metric functions over token ids and log-probabilities.

Nothing here touches a model, a file or torch: inputs are sequences of ints and numpy arrays,
so every function is unit-tested with hypothesis and reused by checks and reports alike.

Definitions follow llama.cpp's ``perplexity --kl-divergence`` output where it has one
(KL(base‖candidate) per token, "same top p", Δp of the baseline token, ln PPL ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


def first_divergence(base: Sequence[int], other: Sequence[int]) -> int:
    """Index of the first position where the two token sequences differ.

    If one sequence is a prefix of the other, the divergence is at the shorter length; if both
    are identical the result is their length (no divergence inside the generated window).
    """
    n = min(len(base), len(other))
    for i in range(n):
        if base[i] != other[i]:
            return i
    return n if len(base) != len(other) else len(base)


def token_agreement(base: Sequence[int], other: Sequence[int]) -> float:
    """Share of positions, over the common length, where both sequences hold the same token.

    Positional, not aligned: after a divergence the two texts usually drift apart, so this
    falls quickly; it is the free-running counterpart of teacher-forced top-1 agreement.
    Two empty sequences agree completely (1.0); one empty against a non-empty one gives 0.0.
    """
    n = min(len(base), len(other))
    if n == 0:
        return 1.0 if len(base) == len(other) else 0.0
    same = sum(1 for a, b in zip(base[:n], other[:n], strict=True) if a == b)
    return same / n


def seq_rep_n(tokens: Sequence[int], n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2019): 1 − |unique n-grams| / |n-grams| of one sequence.

    0.0 means no n-gram occurs twice; values near 1.0 mean the output is one loop. Sequences
    shorter than ``n`` have no n-grams and score 0.0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def log_softmax(logits: FloatArray) -> FloatArray:
    """Numerically stable log-softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    z = x - m
    out: FloatArray = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return out


def kl_per_token(base_logp: FloatArray, cand_logp: FloatArray) -> FloatArray:
    """KL(base‖candidate) at each position, from full-vocabulary log-probabilities [T, V].

    Terms where the baseline probability is zero contribute nothing (0·log 0 = 0). The result
    is clipped at 0 from below to absorb float rounding on identical distributions.
    """
    b = np.asarray(base_logp, dtype=np.float64)
    return _kl(b, np.exp(b), np.asarray(cand_logp, dtype=np.float64))


def _kl(b: FloatArray, p: FloatArray, c: FloatArray) -> FloatArray:
    """KL terms in float64 from log-probs of any float type (a float32 input is widened
    exactly, so the result is the same as from float64 copies, without the copies)."""
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * np.subtract(b, c, dtype=np.float64), 0.0)
    out: FloatArray = np.maximum(terms.sum(axis=-1), 0.0)
    return out


def top_margin(logp_row: FloatArray) -> float:
    """Probability margin between the most and second most likely token of one distribution."""
    row = np.asarray(logp_row, dtype=np.float64)
    if row.size < 2:
        return 1.0
    top2 = np.partition(row, -2)[-2:]
    return float(np.exp(top2.max()) - np.exp(top2.min()))


@dataclass(frozen=True)
class TeacherForced:
    """Per-token comparison of a candidate against the baseline on the baseline's continuation.

    All arrays have one entry per continuation token. ``base_margin`` is the baseline's
    top-1 minus top-2 probability, used to tell near-ties from real drift.
    """

    kl: FloatArray
    top1_agree: npt.NDArray[np.bool_]
    p_base: FloatArray
    p_cand: FloatArray
    base_margin: FloatArray
    #: the candidate's own top-k token ids and log-probs per step [T, k]: where its argmax is
    #: the baseline's token, this is what greedy generation would pick (resumed from there)
    cand_top_ids: npt.NDArray[np.int64] | None = None
    cand_top_logp: npt.NDArray[np.float32] | None = None

    @property
    def n(self) -> int:
        return int(self.kl.shape[0])

    @property
    def kl_mean(self) -> float:
        return float(self.kl.mean()) if self.n else 0.0

    @property
    def kl_max(self) -> float:
        return float(self.kl.max()) if self.n else 0.0

    @property
    def top1(self) -> float:
        """llama.cpp's "same top p": share of positions where both argmaxes agree."""
        return float(self.top1_agree.mean()) if self.n else 1.0

    def top1_beyond_ties(self, epsilon: float) -> float:
        """Top-1 agreement that does not count a disagreement where the baseline's own
        top-1/top-2 margin is below ``epsilon``: which of two almost equally likely tokens is
        the argmax there is a coin flip of float rounding (another CPU, another thread count
        calls it the other way), not drift. The figure budgets read as ``top1``."""
        if not self.n:
            return 1.0
        return float((self.top1_agree | (self.base_margin < epsilon)).mean())

    def tie_disagreements(self, epsilon: float) -> int:
        """Top-1 disagreements at positions where the baseline is at a near-tie."""
        return int((~self.top1_agree & (self.base_margin < epsilon)).sum())

    @property
    def delta_p(self) -> float:
        """Mean change in the probability of the baseline's token (negative: less confident)."""
        return float((self.p_cand - self.p_base).mean()) if self.n else 0.0

    @property
    def ln_ppl_ratio(self) -> float:
        """ln(PPL_candidate / PPL_base) over the continuation = mean NLL difference."""
        if not self.n:
            return 0.0
        tiny = np.finfo(np.float64).tiny
        nll_c = -np.log(np.maximum(self.p_cand, tiny))
        nll_b = -np.log(np.maximum(self.p_base, tiny))
        return float((nll_c - nll_b).mean())


def top_k_rows(logp: FloatArray, k: int = 5) -> tuple[npt.NDArray[np.int64],
                                                        npt.NDArray[np.float32]]:
    """The ``k`` largest entries of each row of [T, V] log-probs, best first, as
    (ids [T, k], log-probs [T, k]); ties go to the lower id, as ``argmax`` does."""
    a = np.asarray(logp)
    k = min(k, a.shape[1]) if a.ndim == 2 and a.shape[0] else k
    if a.ndim != 2 or not a.shape[0]:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    kth = -np.partition(-a, k - 1, axis=-1)[:, k - 1]
    rows = []
    for row, low in zip(a, kth, strict=True):  # every entry tied at the k-th value competes
        cand = np.flatnonzero(row >= low)
        rows.append(cand[np.lexsort((cand, -row[cand]))][:k])
    ids = np.stack(rows).astype(np.int64)
    return ids, np.take_along_axis(a, ids, axis=-1).astype(np.float32)


@dataclass(frozen=True)
class BaselineSide:
    """The baseline's half of :func:`teacher_forced` for one continuation: its log-probs (as
    given), their probabilities in float64, argmax and top-1/top-2 margin. Computed once
    where many candidates meet one baseline (the sensitivity atlas scores some 60
    perturbations against it): an exponent and a partition of [T, V] saved per candidate."""

    logp: FloatArray
    p: FloatArray
    argmax: npt.NDArray[np.int64]
    margin: FloatArray

    @classmethod
    def of(cls, base_logp: FloatArray) -> BaselineSide:
        b = np.asarray(base_logp)
        if not np.issubdtype(b.dtype, np.floating):
            b = b.astype(np.float64)
        if b.ndim != 2:
            raise ValueError(f"shape mismatch: base {b.shape} is not [tokens, vocab]")
        if b.shape[0]:
            top2 = (np.partition(b, -2, axis=-1)[:, -2:] if b.shape[1] >= 2 else
                    np.concatenate([b, np.full_like(b, -np.inf)], axis=-1)).astype(np.float64)
            margin = np.exp(top2.max(axis=-1)) - np.exp(top2.min(axis=-1))
        else:
            margin = np.zeros(0)
        return cls(logp=b, p=np.exp(b.astype(np.float64)),
                   argmax=b.argmax(axis=-1) if b.shape[0] else np.zeros(0, np.int64),
                   margin=margin)


def teacher_forced(
    base_logp: FloatArray | BaselineSide, cand_logp: FloatArray, targets: Sequence[int],
    candidate_top: bool = True,
) -> TeacherForced:
    """Compare two [T, V] log-probability arrays predicting the same ``targets`` (length T).

    ``base_logp`` may come prepared (:class:`BaselineSide`), with the same results bit for
    bit; ``candidate_top=False`` leaves out the candidate's top-k (only resumed generation
    reads it)."""
    c = np.asarray(cand_logp)
    if not np.issubdtype(c.dtype, np.floating):
        c = c.astype(np.float64)
    shape = base_logp.logp.shape if isinstance(base_logp, BaselineSide) else np.shape(base_logp)
    if shape != c.shape or len(shape) != 2 or shape[0] != len(targets):
        raise ValueError(
            f"shape mismatch: base {shape}, candidate {c.shape}, {len(targets)} targets"
        )
    base = base_logp if isinstance(base_logp, BaselineSide) else BaselineSide.of(base_logp)
    b = base.logp
    idx = np.asarray(list(targets), dtype=np.int64)
    rows = np.arange(len(idx))
    cand_ids, cand_logp_k = top_k_rows(cand_logp) if candidate_top else (None, None)
    return TeacherForced(
        kl=_kl(b, base.p, c),
        top1_agree=(base.argmax == c.argmax(axis=-1)) if b.shape[0] else np.zeros(0, bool),
        p_base=np.exp(b[rows, idx].astype(np.float64)),
        p_cand=np.exp(c[rows, idx].astype(np.float64)),
        base_margin=base.margin,
        cand_top_ids=cand_ids,
        cand_top_logp=cand_logp_k,
    )


def is_near_tie(margin: float, epsilon: float) -> bool:
    """A divergence at a step whose baseline top-1/top-2 margin is below ε is a coin flip."""
    return margin < epsilon
