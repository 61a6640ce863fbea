"""bench/adaptive_frontier.py models the shipped --adaptive rule on arrays: on the same counts it must stop
at the same look and certify the same grid radius as ``sequential_certify`` (else its sweeps and its floor
would describe another rule)."""
import numpy as np
from scipy import stats as ss

from bench.adaptive_frontier import Simulated, rcp_thresholds
from bench.adaptive_samples import DEFAULT_LOGS, Log, read_log
from core import adaptive
from core.smoothing import sequential_certify


def test_model_decides_as_the_shipped_rule():
    path, sigma = DEFAULT_LOGS[1]
    log = read_log(path, sigma, 10_000, 1e-3)
    log = Log(log.path, sigma, log.log_n, log.log_alpha, *(v[:150] for v in (log.idx, log.label, log.predict, log.radius)))
    N, n0, alpha = 20_000, 10, 1e-3
    sim = Simulated(log, 1, 0, N, n0, alpha, adaptive.FIRST_LOOK, adaptive.GROWTH)
    r = sim.run(adaptive.FINAL_SHARE, adaptive.POWER, adaptive.FUTILITY, randomized=False)
    steps = np.diff(np.concatenate([np.zeros((sim.M, 1), int), sim.S], axis=1), axis=1)
    looks = sim.looks
    for i in range(sim.M):
        draws = iter([np.array([1, 0])] + [np.array([h, m - h]) for h, m in zip(steps[i], np.diff(np.r_[0, looks]))])
        pred, radius, n_used = sequential_certify(lambda num: next(draws), sigma, 1, N, alpha)
        assert n_used - 1 == looks[r["tau"][i]], i
        level = int(np.searchsorted(r["grid"], radius, side="right")) - 1 if pred >= 0 else -1
        assert level == r["level"][i], i
    assert len(set(r["tau"].tolist())) > 5 and len(set(r["level"].tolist())) >= 3   # a varied sample


def test_thresholds_are_the_clopper_pearson_bound_and_the_randomized_remainder():
    n, a, p = np.array([50, 400]), np.array([1e-3, 1e-2]), np.array([0.6, 0.9])
    h, q = rcp_thresholds(n, a, p)
    for t in range(2):
        for g in range(2):
            lower = lambda k: ss.beta.ppf(a[t], k, n[t] - k + 1)   # noqa: E731
            if h[t, g] > n[t]:                                      # not even all hits certify p
                assert lower(n[t]) < p[g]
                continue
            assert lower(h[t, g]) >= p[g] > lower(h[t, g] - 1)
            tail = ss.binom.sf(h[t, g] - 1, n[t], p[g])            # P(X >= h) <= a < P(X >= h - 1)
            assert np.isclose(tail + q[t, g] * ss.binom.pmf(h[t, g] - 1, n[t], p[g]), a[t])
