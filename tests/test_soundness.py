"""Statistical soundness: wrong certificates occur at rate <= alpha against classifiers whose class
probabilities are known analytically (tests/soundness_models.py). alpha is large (0.1) so that an
unsound certifier would show; each test also checks that an *unsound* variant is caught."""
import math

import numpy as np
import pytest

from core.cascade import MultiScaleSmooth
from core.smoothing import Smooth, certify_from_counts, example_generator
from core import stats
from tests.soundness_models import Threshold1D, cascade_truth, certificate_is_wrong, point, smoothed_class

ALPHA = 0.1
RUNS = 1200


def tolerance(runs: int, alpha: float = ALPHA) -> float:
    """Binomial slack: 3 standard deviations of a rate alpha over `runs` runs."""
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def hard_points(rng, runs, sigma, lo=-0.4, hi=1.6):
    # many points where p_A is only a little above 1/2: there the bound decides everything
    return rng.uniform(lo, hi, runs) * sigma


def test_smooth_certify_is_sound():
    sigma, n0, n = 0.5, 20, 100
    f = Threshold1D([0.0])
    smooth = Smooth(f, 2, sigma)
    rng = np.random.default_rng(1)
    wrong = certified = 0
    for i, u in enumerate(hard_points(rng, RUNS, sigma)):
        pred, radius = smooth.certify(point(u), n0, n, ALPHA, 1000, example_generator(7, i))
        certified += pred >= 0
        wrong += certificate_is_wrong(lambda us: smoothed_class(f, us, sigma), u, pred, radius)
    assert certified > RUNS / 3, "too few certificates for the test to mean anything"
    assert wrong / RUNS <= tolerance(RUNS), f"wrong-certificate rate {wrong / RUNS:.3f} > alpha {ALPHA}"


def test_unsound_variant_is_caught():
    """The same check flags a certifier that uses the point estimate instead of the lower bound."""
    sigma, n = 0.5, 100
    f = Threshold1D([0.0])
    rng = np.random.default_rng(2)
    wrong = 0
    for i, u in enumerate(hard_points(rng, RUNS, sigma, 0.0, 0.4)):
        smooth = Smooth(f, 2, sigma)
        counts = smooth.sample_counts(point(u), n, 1000, example_generator(3, i))
        c = int(np.argmax(counts))
        p_hat = min(counts[c] / n, 1 - 1e-9)
        pred, radius = (c, stats.radius(sigma, p_hat)) if p_hat > 0.5 else (-1, 0.0)
        wrong += certificate_is_wrong(lambda us: smoothed_class(f, us, sigma), u, pred, radius)
    assert wrong / RUNS > tolerance(RUNS)


def test_smooth_predict_is_sound():
    sigma, n = 0.25, 50
    f = Threshold1D([0.0, 0.3])
    smooth = Smooth(f, 3, sigma)
    rng = np.random.default_rng(3)
    wrong = 0
    for i, u in enumerate(rng.uniform(-0.3, 0.6, RUNS)):
        pred = smooth.predict(point(u), n, ALPHA, 1000, example_generator(11, i))
        wrong += pred >= 0 and pred != smoothed_class(f, u, sigma)[0]
    assert wrong / RUNS <= tolerance(RUNS)


def cascade_setup():
    # different decision boundaries per sigma, 3 classes: every stage can abstain (p0 = 0.5 with 3 classes)
    return {1.0: Threshold1D([-0.8, 0.9]), 0.5: Threshold1D([-0.3, 0.35]), 0.25: Threshold1D([0.1, 0.2])}


@pytest.mark.parametrize("adaptive,alpha_rule", [(False, "mdds"), (True, "mdds"), (False, "union"), (True, "union")])
def test_cascade_certify_is_sound(adaptive, alpha_rule):
    fs = cascade_setup()
    ms = MultiScaleSmooth(fs, 3, p0=0.5, alpha_rule=alpha_rule)
    truth = lambda us: cascade_truth(fs, us, 0.5)  # noqa: E731
    rng = np.random.default_rng(4)
    wrong = certified = 0
    runs = RUNS if not adaptive else 1000
    stages = np.zeros(3, int)
    for i, u in enumerate(rng.uniform(-1.5, 1.5, runs)):
        gens = lambda k, i=i: example_generator(5, i, k)  # noqa: E731
        if adaptive:
            res = ms.certify_adaptive(point(u), 20, 2000, ALPHA, 1000, gens)
        else:
            res = ms.certify(point(u), 20, 100, ALPHA, 1000, gens)
        certified += res.prediction >= 0
        stages[res.stage] += res.prediction >= 0
        wrong += certificate_is_wrong(truth, u, res.prediction, res.radius)
    assert certified > runs / 4
    assert (stages > 0).sum() >= 2, f"certificates from one stage only: {stages}"
    assert wrong / runs <= tolerance(runs), f"wrong-certificate rate {wrong / runs:.3f} > {ALPHA}"


def test_adaptive_smooth_certify_is_sound():
    sigma = 0.5
    f = Threshold1D([0.0])
    smooth = Smooth(f, 2, sigma)
    rng = np.random.default_rng(6)
    wrong = certified = 0
    runs = 1000
    for i, u in enumerate(hard_points(rng, runs, sigma)):
        pred, radius, n_used = smooth.certify_adaptive(point(u), 20, 5000, ALPHA, 1000, example_generator(9, i))
        assert 20 < n_used <= 5020
        certified += pred >= 0
        wrong += certificate_is_wrong(lambda us: smoothed_class(f, us, sigma), u, pred, radius)
    assert certified > runs / 3
    assert wrong / runs <= tolerance(runs), f"wrong-certificate rate {wrong / runs:.3f} > {ALPHA}"


def test_certify_from_counts_matches_smooth():
    sigma = 0.5
    f = Threshold1D([0.0])
    smooth = Smooth(f, 2, sigma)
    x = point(0.3)
    sel = smooth.sample_counts(x, 20, 7, example_generator(0, 1))
    est = smooth.sample_counts(x, 100, 7, example_generator(0, 1).manual_seed(99))
    pred, radius, p = certify_from_counts(sel, est, 0.01, sigma)
    assert pred == int(np.argmax(sel))
    assert radius == pytest.approx(sigma * stats.norm.ppf(p))


def test_adaptive_naive_peeking_is_caught(monkeypatch):
    """Spending the whole alpha at every look (no union bound over the looks) over-certifies, and the
    same check sees it: the alpha split of core.adaptive is what keeps the adaptive certifier sound."""
    from core import adaptive
    monkeypatch.setattr(adaptive, "look_weights", lambda looks, *args, **kwargs: [1.0] * len(looks))
    sigma = 0.5
    f = Threshold1D([0.0])
    smooth = Smooth(f, 2, sigma)
    rng = np.random.default_rng(6)
    wrong = 0
    runs = 600
    for i, u in enumerate(hard_points(rng, runs, sigma)):
        pred, radius, _ = smooth.certify_adaptive(point(u), 20, 5000, ALPHA, 1000, example_generator(9, i),
                                                  radius_grid=np.arange(0, 3, 0.01))
        wrong += certificate_is_wrong(lambda us: smoothed_class(f, us, sigma), u, pred, radius)
    assert wrong / runs > tolerance(runs)
