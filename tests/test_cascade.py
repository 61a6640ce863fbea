"""The MDDS cascade on scripted counts: every branch of ALGORITHMS §3b, checked by hand."""
import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from core import stats
from core.cascade import UNDECIDED, MultiScaleSmooth, StageCounts, cascade_decide
from core.smoothing import ABSTAIN

SIGMAS = [1.0, 0.5, 0.25]


def scripted(stages):
    calls = []

    def sample(k):
        calls.append(k)
        sel, est = stages[k]
        return StageCounts(np.asarray(sel), np.asarray(est))
    return sample, calls


def cp(k, n, a):
    return proportion_confint(k, n, alpha=2 * a, method="beta")


def test_first_stage_certifies_without_cap():
    sample, calls = scripted([([0, 100, 0], [2, 995, 3])])
    res = cascade_decide(sample, SIGMAS, 0.001)
    assert (res.prediction, res.stage, calls) == (1, 0, [0])   # later stages never sampled
    assert res.radius == pytest.approx(1.0 * stats.norm.ppf(cp(995, 1000, 0.001)[0]))
    assert res.r_neg == stats.NO_EARLIER_STAGE
    assert res.n_used == 1100


def test_undecided_stops_the_cascade():
    sample, calls = scripted([([0, 100, 0], [450, 520, 30])])
    res = cascade_decide(sample, SIGMAS, 0.001)
    assert (res.prediction, res.radius, res.stage, calls) == (UNDECIDED, 0.0, 0, [0])


def test_abstain_then_certify_with_cap_at_certifying_alpha():
    stage0 = ([40, 30, 30], [400, 300, 300])        # top class upper bound < .5: confident abstain
    stage1 = ([0, 100, 0], [5, 990, 5])             # certifies class 1 at alpha/2
    sample, calls = scripted([stage0, stage1])
    res = cascade_decide(sample, SIGMAS, 0.001)
    a1 = 0.001 / 2
    R = 0.5 * stats.norm.ppf(cp(990, 1000, a1)[0])
    # off-class bound of class 1 at stage 0, bounded at the *certifying* stage's alpha (cells [300, 400, 300])
    from statsmodels.stats.proportion import multinomial_proportions_confint
    pB = multinomial_proportions_confint([300, 400, 300], alpha=2 * a1, method="goodman")[1:, 1].max()
    r0 = 1.0 * stats.norm.ppf(pB)
    assert r0 < 0 and calls == [0, 1]
    assert res.prediction == 1 and res.stage == 1 and res.sigma == 0.5
    assert res.r_neg == pytest.approx(r0)
    assert res.radius == pytest.approx(min(R, -r0))


def test_cap_making_radius_negative_abstains_but_keeps_stage():
    # stage 0 abstains (max upper bound ~0.47 < .5); stage 1 certifies class 1, whose off classes at
    # stage 0 sit just below .5 -> r_0 slightly negative -> the radius is capped to -r_0
    sample, _ = scripted([([40, 20, 40], [4600, 800, 4600]), ([0, 100, 0], [0, 1000, 0])])
    res = cascade_decide(sample, SIGMAS, 0.01)
    assert res.prediction == 1 and 0 < res.radius < 0.1 and res.radius == pytest.approx(-res.r_neg)
    # stage 0's selection picked class 0 (it abstains on class 0), but class 2 has 60% of the estimation
    # draws: certifying class 1 at stage 1 would be unsound within any radius -> ABSTAIN, stage kept
    sample, _ = scripted([([60, 0, 40], [300, 100, 600]), ([0, 100, 0], [0, 1000, 0])])
    res = cascade_decide(sample, SIGMAS, 0.01)
    assert res.prediction == ABSTAIN and res.radius == 0.0
    assert res.stage == 1 and res.r_neg > 0


def test_all_stages_abstain():
    ab = ([34, 33, 33], [340, 330, 330])
    sample, calls = scripted([ab, ab, ab])
    res = cascade_decide(sample, SIGMAS, 0.001)
    assert (res.prediction, res.radius, res.stage, calls) == (ABSTAIN, 0.0, 2, [0, 1, 2])


def test_selection_ties_go_to_lowest_class():
    sample, _ = scripted([([0, 50, 50], [0, 999, 1])])
    assert cascade_decide(sample, [1.0], 0.001).prediction == 1
    sample, _ = scripted([([0, 50, 50], [0, 1, 999])])
    assert cascade_decide(sample, [1.0], 0.001).prediction == ABSTAIN


def test_fallback_uses_mass_off_certified_class():
    # Stage 0's selection picked class 0, which abstains (300/1000), although class 1 holds 70%.
    # Stage 1 certifies class 1. Cells for c = 1 at stage 0: [700, 300] -> 2-cell fallback: our bound
    # is the CP upper bound of the mass off class 1 (300/1000); the reference's 1 - lower(class 0)
    # (~0.74) would bound the mass off class 0 instead.
    sample, _ = scripted([([100, 0], [300, 700]), ([0, 100], [0, 1000])])
    res = cascade_decide(sample, [1.0, 0.5], 0.01)
    a1 = 0.01 / 2
    assert stats.pool_counts(np.array([300, 700]), 1).tolist() == [700, 300]
    pB = cp(300, 1000, a1)[1]
    assert res.prediction == 1 and res.stage == 1
    assert res.r_neg == pytest.approx(stats.radius(1.0, pB))
    assert res.radius == pytest.approx(min(0.5 * stats.norm.ppf(cp(1000, 1000, a1)[0]), -res.r_neg))
    # a Goodman case: c = 2 certified, stage-0 cells [3, 547, 450] -> class 1 above .5 -> abstain
    counts0 = np.array([450, 547, 3])
    sample, _ = scripted([([100, 0, 0], counts0), ([0, 0, 100], [0, 0, 1000])])
    res = cascade_decide(sample, [1.0, 0.5], 0.01)
    from statsmodels.stats.proportion import multinomial_proportions_confint
    pB = multinomial_proportions_confint([3, 547, 450], alpha=2 * a1, method="goodman")[1:, 1].max()
    assert res.r_neg == pytest.approx(stats.radius(1.0, pB)) and res.prediction == ABSTAIN


def test_multiscale_orders_sigmas_descending_and_is_lazy():
    calls = []

    def make(sig, cls):
        def f(x):
            calls.append(sig)
            return torch.nn.functional.one_hot(torch.full((x.shape[0],), cls), 3).float()
        return f
    ms = MultiScaleSmooth({0.25: make(0.25, 2), 1.0: make(1.0, 0), 0.5: make(0.5, 1)}, 3)
    assert ms.sigmas == [1.0, 0.5, 0.25]
    res = ms.certify(torch.zeros(1, 2, 2), 10, 100, 0.001, 50)
    assert res.prediction == 0 and res.stage == 0 and set(calls) == {1.0}


def test_mdds_predict_prior_and_threshold():
    def const(cls):
        return lambda x: torch.nn.functional.one_hot(torch.full((x.shape[0],), cls), 3).float()
    ms = MultiScaleSmooth({1.0: const(2), 0.5: const(1)}, 3, p0=0.5)
    r = ms.predict_detailed(torch.zeros(1, 2, 2), 20, 10, clean_logits=torch.tensor([5.0, 0.0, 0.0]))
    # stage 0 accepts class 2: prior (.9 * [0,0,1] + .1/3) -> log(.0333)= -3.4 on class 0, log(.933) on 2
    assert r.pred0 == 2 and r.stage == 0
    assert r.prediction == int(np.argmax(np.array([5.0, 0, 0]) + np.log([0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3])))
    assert ms.predict(torch.zeros(1, 2, 2), 20, 10) == 2


def test_alpha_rules():
    from core.cascade import stage_alpha
    assert [stage_alpha(0.006, k) for k in range(3)] == pytest.approx([0.006, 0.003, 0.002])
    assert [stage_alpha(0.006, k, 3, "union") for k in range(3)] == pytest.approx([0.001] * 3)
    # union: the (k + 1) bounds of every stage a run could end at add up to alpha
    assert sum((k + 1) * stage_alpha(0.006, k, 3, "union") for k in range(3)) == pytest.approx(0.006)
    with pytest.raises(ValueError):
        stage_alpha(0.1, 0, 3, "none")
    # a certificate at stage 0 under 'union' uses the smaller level -> a smaller radius
    sample, _ = scripted([([0, 100, 0], [2, 995, 3])])
    mdds = cascade_decide(sample, SIGMAS, 0.001)
    sample, _ = scripted([([0, 100, 0], [2, 995, 3])])
    union = cascade_decide(sample, SIGMAS, 0.001, alpha_rule="union")
    assert union.radius == pytest.approx(1.0 * stats.norm.ppf(cp(995, 1000, 0.001 / 6)[0]))
    assert union.radius < mdds.radius
