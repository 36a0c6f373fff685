"""Uncertainty for config-vs-baseline comparisons: pure functions, fixed seeds.

Every comparison shrinktests makes is *paired*: the config and the baseline answer the same
prompts, so per-prompt (or per-constraint) differences carry the signal and the prompt-to-prompt
spread cancels. With 30-odd prompts, "16.7 % vs 13.3 % adherence" (5 vs 4 of 30 prompts) is
noise; these functions say so with numbers:

- :func:`wilson` — Wilson score interval of a rate k/n (loops /N, empty /N);
- :func:`bootstrap_mean` — percentile bootstrap interval of a mean of per-prompt values (KL,
  top-1, differences), resampling prompts with a fixed seed so reports are reproducible;
- :func:`mcnemar` — exact two-sided McNemar test on discordant pass/fail pairs (a constraint
  met by the baseline only, or by the config only);
- :func:`paired_rate_mde` and :func:`paired_mean_mde` — the smallest change those comparisons
  would call significant with 80 % power, so that "within noise" reads as "no change larger
  than this", not as "no change".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

BOOTSTRAP_SAMPLES = 2000
SEED = 0
#: the power at which minimum detectable effects are stated (the usual 80 %)
POWER = 0.8


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval at ``level`` (and a p-value where one is tested)."""

    value: float
    low: float
    high: float
    level: float
    p: float | None = None

    def beyond(self, op: str, limit: float) -> bool:
        """The whole interval breaks ``value op limit``: the violation is not noise."""
        if op in ("<=", "<"):
            return self.low > limit if op == "<=" else self.low >= limit
        return self.high < limit if op == ">=" else self.high <= limit


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate ``k / n``; (0, 1) when ``n == 0``."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_mean(values: Sequence[float], level: float = 0.95,
                   samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval (resampling the values).

    For a paired comparison pass the per-prompt differences. One value gives a zero-width
    interval; none raises ``ValueError``.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values to estimate a mean from")
    mean = float(x.mean())
    if x.size == 1 or np.all(x == x[0]):
        return Estimate(mean, mean, mean, level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    # the percentile interval always brackets the sample mean up to float rounding; make it so
    return Estimate(mean, min(float(low), mean), max(float(high), mean), level)


def mcnemar(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts.

    Under "no difference" each discordant pair is a fair coin, so the p-value is twice the
    binomial tail of the smaller count (capped at 1). No discordant pairs: p = 1.
    """
    if only_first < 0 or only_second < 0:
        raise ValueError("counts must be >= 0")
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)  # exact for any n
    return min(1.0, float(2 * tail))


def paired_rate_change(base: Sequence[bool], cand: Sequence[bool],
                       level: float = 0.95) -> Estimate:
    """Change of a rate (cand − base) over paired outcomes, with a bootstrap interval of the
    mean paired difference and McNemar's p. Positive: the config has more of them."""
    if len(base) != len(cand):
        raise ValueError(f"unpaired outcomes: {len(base)} vs {len(cand)}")
    diffs = [float(c) - float(b) for b, c in zip(base, cand, strict=True)]
    est = bootstrap_mean(diffs, level) if diffs else Estimate(0.0, 0.0, 0.0, level)
    only_base = sum(1 for b, c in zip(base, cand, strict=True) if b and not c)
    only_cand = sum(1 for b, c in zip(base, cand, strict=True) if c and not b)
    return Estimate(est.value, est.low, est.high, level, mcnemar(only_base, only_cand))


def significant(est: Estimate) -> bool:
    """Whether a difference is distinguishable from noise at the estimate's level: its
    McNemar p is below 1 − level where tested, else its interval excludes zero."""
    if est.p is not None:
        return est.p < 1 - est.level
    return est.low > 0 or est.high < 0


def _z_sum(level: float, power: float) -> float:
    """z_{1−α/2} + z_{power} for a two-sided test at α = 1 − ``level``."""
    if not 0 < level < 1 or not 0 < power < 1:
        raise ValueError(f"need 0 < level, power < 1, got level={level}, power={power}")
    normal = NormalDist()
    return normal.inv_cdf(0.5 + level / 2) + normal.inv_cdf(power)


def paired_rate_mde(discordant: int, n: int, level: float = 0.95,
                    power: float = POWER) -> float:
    """The smallest change of a paired rate (cand − base, either sign) that McNemar's test at
    α = 1 − ``level`` would call significant with probability ``power``, given ``n`` pairs of
    which ``discordant`` (b + c) differ.

    Why: a budget judged "within noise" only says that no change was *shown*; with 41 prompts
    a drop of several points can hide in that noise. This bound says how large a change the
    suite would have caught, so a pass reads "no change above MDE", not "no change".

    The normal approximation of the paired-proportion power formula (Connor 1987): with
    discordance ψ = (b + c) / n, detecting a difference δ needs n ≈ (z_{1−α/2} + z_{power})²·ψ/δ²
    (dropping δ² next to ψ in the variance under the alternative), hence

        MDE ≈ (z_{1−α/2} + z_{power}) · sqrt(ψ / n).

    The observed ψ stands in for the discordance under the alternative. With no discordant
    pair it is floored at one (ψ = 1/n): zero observed flips do not mean the suite detects
    any change, only that the spread is at most about one pair. A rate change cannot exceed
    1, so neither does the bound (a figure of 1 means: the suite cannot detect anything).
    """
    if n < 1:
        raise ValueError(f"need at least one pair, got n={n}")
    if not 0 <= discordant <= n:
        raise ValueError(f"need 0 <= discordant <= n, got discordant={discordant}, n={n}")
    psi = max(discordant, 1) / n
    return min(1.0, _z_sum(level, power) * math.sqrt(psi / n))


def paired_mean_mde(values: Sequence[float], level: float = 0.95,
                    power: float = POWER) -> float:
    """The smallest shift of a paired mean that a two-sided test at α = 1 − ``level`` would
    call significant with probability ``power``: ``values`` are the per-prompt differences
    (for KL(base‖config) the per-prompt KL itself, the baseline's own being 0).

    Why: as for :func:`paired_rate_mde`, so that a mean KL "within noise" comes with the size
    of change the prompts could have shown. The normal approximation of the one-sample power
    formula, n = ((z_{1−α/2} + z_{power})·sd/δ)², solved for δ:

        MDE = (z_{1−α/2} + z_{power}) · sd / sqrt(n),

    sd the sample standard deviation (n − 1) of the values. With few prompts the t quantiles
    would be larger, so this is a lower bound there. Values that are all equal give 0, as the
    bootstrap interval of such values has no width; fewer than two values have no spread and
    raise ``ValueError``.
    """
    if len(values) < 2:
        raise ValueError(f"need at least two values for a spread, got {len(values)}")
    sd = statistics.stdev(float(v) for v in values)
    return _z_sum(level, power) * sd / math.sqrt(len(values))


def ranks(values: Sequence[float]) -> npt.NDArray[np.float64]:
    """Ranks 1..n of ``values``, ties sharing the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    out = np.empty(x.size, dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        out[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float], permutations: int = 10_000,
             seed: int = SEED) -> tuple[float, float]:
    """Spearman's rank correlation of paired values and its two-sided permutation p-value.

    The p-value is the share of ``permutations`` random pairings (fixed seed, so a rerun
    prints the same figure) whose |ρ| reaches the observed one, counting the observed pairing
    itself. Fewer than 3 pairs, or a constant side, have no defined correlation: (nan, 1.0).
    """
    if len(x) != len(y):
        raise ValueError(f"unpaired values: {len(x)} vs {len(y)}")
    if len(x) < 3:
        return float("nan"), 1.0
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    if norm == 0:
        return float("nan"), 1.0
    rho = float((rx * ry).sum() / norm)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(ry) for _ in range(permutations)])
    null = np.abs(shuffled @ rx) / norm
    p = (1 + int((null >= abs(rho) - 1e-12).sum())) / (permutations + 1)
    return max(-1.0, min(1.0, rho)), p
