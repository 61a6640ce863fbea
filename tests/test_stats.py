import math

import numpy as np
import pytest
from scipy.stats import beta, norm
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint

from core import stats


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 100000])
@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.001])
def test_cp_bounds_equal_statsmodels(n, alpha):
    for nA in sorted({0, 1, n // 3, n // 2, n - 1, n} - {-1}):
        if not 0 <= nA <= n:
            continue
        lo, hi = stats.cp_bounds(nA, n, alpha)
        ref_lo, ref_hi = proportion_confint(nA, n, alpha=2 * alpha, method="beta")
        assert lo == pytest.approx(0.0 if nA == 0 else ref_lo, abs=1e-15)
        assert hi == pytest.approx(1.0 if nA == n else ref_hi, abs=1e-15)
        # the one-sided lower bound is the Beta(alpha; nA, n - nA + 1) quantile
        if 0 < nA:
            assert lo == pytest.approx(beta.ppf(alpha, nA, n - nA + 1), rel=1e-9)
        assert lo <= nA / n <= hi


def test_cp_rejects_bad_counts():
    with pytest.raises(ValueError):
        stats.cp_bounds(5, 0, 0.01)
    with pytest.raises(ValueError):
        stats.cp_bounds(11, 10, 0.01)


def test_radius_hand_checked():
    # Cohen: sigma * Phi^-1(pABar); Phi^-1(0.975) = 1.959964
    assert stats.radius(0.5, 0.975) == pytest.approx(0.5 * 1.959963984540054, rel=1e-12)
    assert stats.radius(0.25, 0.5) == 0.0
    # MDDS p0: sigma * (Phi^-1(p) - Phi^-1(p0)); Phi^-1(0.6) = 0.2533471
    assert stats.radius(1.0, 0.975, p0=0.6) == pytest.approx(1.959963984540054 - 0.2533471031357997, rel=1e-12)
    assert stats.radius(1.0, 0.3) < 0
    # largest certifiable radius at N=10^4, alpha=1e-3 is sigma * 3.20 (reference_results README)
    assert stats.radius(1.0, stats.cp_lower(10000, 10000, 0.001)) == pytest.approx(3.2, abs=0.01)


def test_floor_radius_never_rounds_up():
    rng = np.random.default_rng(0)
    for r in np.concatenate([rng.uniform(0, 4, 2000), [0.2499999999, 0.24960001, 1.0, 3.7190164854556804]]):
        s = stats.floor_radius(float(r))
        assert float(s) <= r
        assert r - float(s) < 1.01e-6
    assert stats.floor_radius(0.0) == "0.0"
    assert stats.floor_radius(0.2496) == "0.2496"   # '{:.3}' would write 0.25 (pitfall 4)


def test_pool_counts_rules():
    # counts: c=0 has 50; others 20, 7, 3, 2, 1, 1 (class order shuffled)
    counts = np.array([50, 1, 7, 2, 20, 3, 1])
    assert stats.pool_counts(counts, 0).tolist() == [50, 20, 7, 7]   # 3+2 pooled into 5; leftover 1+1 joins the last cell
    # no off-class cell reaches 5: the leftover joins c's own cell -> 2-cell fallback territory
    assert stats.pool_counts(np.array([90, 2, 1, 1]), 0).tolist() == [94]
    assert stats.pool_counts(np.array([80, 15, 3, 2]), 0).tolist() == [80, 15, 5]


def test_offclass_upper_goodman_and_fallback():
    counts = np.array([50, 1, 7, 2, 20, 3, 1])
    cells = stats.pool_counts(counts, 0)
    ref = multinomial_proportions_confint(cells, alpha=0.02, method="goodman")[1:, 1].max()
    assert stats.offclass_upper(counts, 0, 0.01) == pytest.approx(ref)
    # fallback (<= 2 cells): one-sided CP upper bound of the off-c mass
    counts = np.array([90, 10, 0])
    assert stats.offclass_upper(counts, 0, 0.01) == pytest.approx(proportion_confint(10, 100, alpha=0.02, method="beta")[1])
    # the certified class is NOT this stage's top class: the bound is on the mass off c (pitfall 2)
    counts = np.array([10, 88, 2])
    assert stats.offclass_upper(counts, 0, 0.01) == pytest.approx(proportion_confint(90, 100, alpha=0.02, method="beta")[1])
    # an off-class bound of 1 gives r = +inf (-> abstain in the cascade)
    assert stats.radius(1.0, stats.offclass_upper(np.array([0, 100]), 0, 0.01)) == math.inf


def test_binom_pvalue():
    assert stats.binom_pvalue(10, 10) == pytest.approx(1.0)
    assert stats.binom_pvalue(0, 0) == 1.0
    # two-sided exact test: P(X >= 15 or X <= 5), X ~ Bin(20, .5)
    from scipy.stats import binom
    assert stats.binom_pvalue(15, 5) == pytest.approx(2 * binom.sf(14, 20, 0.5))
    assert norm.ppf(0.5) == 0
