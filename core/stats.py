"""The statistics of randomized smoothing, in one place (pure numpy/scipy/statsmodels; no torch).

Conventions: ``alpha`` is always the *one-sided* failure probability of the bound being computed.
Every bound below holds with probability >= 1 - alpha over the sampling, whatever the true proportion.
"""
from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

import numpy as np
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint

# Classes with fewer counts than this are pooled before the Goodman bound (MDDS rule, ALGORITHMS §3b).
POOL_MIN = 5
# Sentinel of the MDDS files for "no earlier stage" (an off-class radius no cap can reach).
NO_EARLIER_STAGE = -100.0


def cp_bounds(nA: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided (1 - alpha) Clopper-Pearson lower and upper bounds of a binomial proportion.

    The two-sided ``proportion_confint(..., alpha=2*alpha, method="beta")`` interval: its lower end
    is the Beta(alpha; nA, n - nA + 1) quantile (ALGORITHMS §1); each end alone fails w.p. <= alpha.
    """
    if n <= 0:
        raise ValueError(f"need n > 0 samples, got {n}")
    if not 0 <= nA <= n:
        raise ValueError(f"need 0 <= nA <= n, got nA={nA}, n={n}")
    lo, hi = proportion_confint(int(nA), int(n), alpha=2 * alpha, method="beta")
    # statsmodels returns nan at the degenerate ends; the exact bounds there are 0 and 1.
    lo = 0.0 if nA == 0 or math.isnan(lo) else float(lo)
    hi = 1.0 if nA == n or math.isnan(hi) else float(hi)
    return lo, hi


def cp_lower(nA: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound pABar (Cohen's CERTIFY)."""
    return cp_bounds(nA, n, alpha)[0]


def cp_upper(nA: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound."""
    return cp_bounds(nA, n, alpha)[1]


def radius(sigma: float, p_lower: float, p0: float = 0.5) -> float:
    """Certified L2 radius sigma * (Phi^-1(p_lower) - Phi^-1(p0)); negative when p_lower < p0.

    With p0 = 1/2 this is Cohen's sigma * Phi^-1(pABar). An upper bound p of an off class gives the
    (negative) radius up to which that class stays below p0 (MDDS r_j).
    """
    return float(sigma * (norm.ppf(p_lower) - norm.ppf(p0)))


def floor_radius(r: float, digits: int = 6) -> str:
    """Format a radius for a TSV, rounding *down* (never up: a rounded-up radius would over-certify)."""
    if r == 0:
        return "0.0"
    short = repr(float(r))  # shortest text that reads back as exactly r: not rounded at all
    if "e" not in short and len(short.partition(".")[2]) <= digits:
        return short
    q = Decimal(r).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_FLOOR)
    s = format(q.normalize(), "f")
    return s if "." in s else s + ".0"


def pool_counts(counts: np.ndarray, c: int) -> np.ndarray:
    """MDDS cells for the off-class bound of class c: [n_c, other classes in descending order].

    Classes with >= POOL_MIN counts keep their own cell; smaller ones are pooled until the pool
    reaches POOL_MIN; a leftover pool goes into the last cell (n_c's own when no off cell exists).
    """
    counts = np.asarray(counts, dtype=np.int64)
    others = np.delete(counts, c)
    cells, pool = [int(counts[c])], 0
    for ni in sorted(others.tolist(), reverse=True):
        if ni >= POOL_MIN:
            cells.append(ni)
        else:
            pool += ni
            if pool >= POOL_MIN:
                cells.append(pool)
                pool = 0
    if pool > 0:
        cells[-1] += pool
    return np.asarray(cells, dtype=np.int64)


def offclass_upper(counts: np.ndarray, c: int, alpha: float) -> float:
    """(1 - alpha) upper bound on the largest probability of any class other than c.

    Goodman simultaneous bounds over the pooled cells (ALGORITHMS §3b); with <= 2 cells, our sound
    fallback: the one-sided Clopper-Pearson upper bound of the total off-c mass (n - n_c) out of n
    (pitfall 2: the reference bounded the mass off that stage's own top class instead).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    cells = pool_counts(counts, c)
    if len(cells) <= 2:
        return cp_upper(n - int(counts[c]), n, alpha)
    ci = multinomial_proportions_confint(cells, alpha=2 * alpha, method="goodman")
    return float(min(1.0, ci[1:, 1].max()))


def offclass_radius(sigma_j: float, counts_j: np.ndarray, c: int, alpha: float, p0: float = 0.5) -> float:
    """MDDS r_j = sigma_j (Phi^-1(pBUpper_j) - Phi^-1(p0)) of an earlier cascade stage j for the certified
    class c: within radius -r_j no class other than c reaches p0 at sigma_j (pBUpper_j bounded at alpha)."""
    return radius(sigma_j, offclass_upper(counts_j, c, alpha), p0)


def binom_pvalue(count1: int, count2: int) -> float:
    """Two-sided binomial test p-value of count1 out of count1 + count2 at p = 1/2 (Cohen's PREDICT)."""
    if count1 + count2 == 0:
        return 1.0
    return float(binomtest(int(count1), int(count1 + count2), p=0.5).pvalue)
