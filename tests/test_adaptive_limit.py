"""Wald's information limit of bench/adaptive_samples.py (``limit_single``): it meets the oracle where both
have closed forms, no sound procedure beats it (the shipped one, measured on known p_A), and the clairvoyant
SPRT (``sprt``, exact) attains it up to its overshoot."""
import numpy as np
import pytest
from scipy import stats as ss

from bench.adaptive_samples import bernoulli_kl, fixed_target, limit_single, oracle_single, sprt
from core import adaptive
from core.smoothing import sequential_certify

ALPHA = 1e-3


@pytest.mark.parametrize("sigma, r", [(0.25, 0.25), (0.5, 0.5), (0.5, 1.0), (1.0, 2.0), (1.0, 3.0)])
def test_all_hits_limit_is_the_oracle_before_rounding(sigma, r):
    # p_A = 1: every draw is a hit, so fixed N certifies with probability 1 (beta = 0, evidence ln(1/alpha)),
    # KL(1 || t) = ln(1/t), and the oracle's n hits have CP bound alpha^(1/n): its n is ceil(ln(1/alpha) / ln(1/t)).
    # The limit is that quotient unrounded, so 0 <= oracle - limit < 1 (1e-9: float error of the Beta quantile).
    N, n0, grid = 100_000, 100, np.array([0.0, r])
    p = np.array([1.0])
    m, t = fixed_target(p, sigma, N, ALPHA, grid)
    assert m.all() and np.isclose(t[0], ss.norm.cdf(r / sigma))         # the radius is within N's reach
    oracle, limit = oracle_single(p, sigma, N, n0, ALPHA, grid), limit_single(p, sigma, N, n0, ALPHA, grid)
    assert np.isclose(limit[0] - n0, np.log(1 / ALPHA) / np.log(1 / t[0]))
    assert -1e-9 <= oracle[0] - limit[0] < 1


def test_gaussian_regime_ratio_to_the_oracle_is_two_log_alpha_over_z_squared():
    # p_A - t = d small: the oracle needs z_alpha^2 p(1-p) / d^2 draws (normal CP bound), a test with
    # power -> 1 needs ln(1/alpha) / KL and KL = d^2 / (2 p (1 - p)) (1 + O(d)), so limit / oracle ->
    # 2 ln(1/alpha) / z_alpha^2 with a relative error O(d / (p (1 - p))) (the KL's cubic term, the CP
    # bound's skewness): it must shrink with d and be < 1e-3 at d = 1e-3 (~ 5e-3 / p(1-p) ~ 2e-2 at 1e-2).
    sigma, r, N = 1.0, 0.5, 10**9
    grid, t = np.array([0.0, r]), ss.norm.cdf(r / sigma)
    target = 2 * np.log(1 / ALPHA) / ss.norm.isf(ALPHA) ** 2
    errors = []
    for d in (1e-2, 3e-3, 1e-3):
        p = np.array([t + d])
        ratio = limit_single(p, sigma, N, 0, ALPHA, grid, power=1.0) / oracle_single(p, sigma, N, 0, ALPHA, grid)
        errors.append(abs(ratio[0] / target - 1))
    assert errors[0] < 2e-2 and errors[-1] < 1e-3 and errors == sorted(errors, reverse=True)


def test_no_sound_procedure_beats_the_limit_the_shipped_one_measured():
    # The shipped --adaptive rule on inputs of known p_A. Any stopping rule that is valid at alpha at t and
    # certifies r_fix with probability q under p_A needs E[n] >= d(q || alpha) / KL(p_A || t) (Wald), so the
    # limit at the power the rule achieves bounds its mean passes. Both are measured on R runs: the power is
    # taken 3 se low (the bound grows with the power) and the passes 3 se high, so a true bound fails this
    # with probability < 1e-3 per input; a bound too high by the rule's margin over it (printed) fails.
    sigma, N, n0, R = 0.5, 10_000, 100, 60
    looks, weights = adaptive.schedule(N)
    grid = adaptive.default_radius_grid(sigma, N, ALPHA * weights[-1])
    p_A = np.array([0.75, 0.9, 0.99])
    m, t = fixed_target(p_A, sigma, N, ALPHA, grid)
    assert m.all()
    for i, p in enumerate(p_A):
        passes, certified = np.empty(R), np.empty(R, bool)
        for run in range(R):
            rng = np.random.default_rng([run, i])
            pred, radius, passes[run] = sequential_certify(
                lambda num: (lambda h: np.array([h, num - h]))(rng.binomial(num, p)), sigma, n0, N, ALPHA)
            certified[run] = pred == 0 and radius >= sigma * ss.norm.ppf(t[i])
        q = certified.mean() - 3 * certified.std() / np.sqrt(R)
        limit = limit_single(p_A[i:i + 1], sigma, N, n0, ALPHA, grid, power=max(q, 0.0))[0]
        high = passes.mean() + 3 * passes.std() / np.sqrt(R)
        print(f"p_A {p}: power {certified.mean():.3f}, passes {passes.mean():.0f}, limit {limit:.0f}")
        assert certified.mean() > 0.5 and limit <= high


@pytest.mark.parametrize("p, t, power", [(0.9, 0.85, 0.99), (0.99, 0.97, 0.7)])
def test_the_clairvoyant_sprt_attains_the_limit_up_to_its_overshoot(p, t, power):
    # The SPRT of t against p (computed exactly) is valid at alpha and has the power asked, so Wald's bound holds
    # for it; and it attains the bound up to the overshoot of its boundaries: with pi_p, pi_t its P(certify)
    # under p and t and u, v the log likelihood ratio of a hit, a miss, E_p[n] KL(p || t) = E_p[S_tau] <=
    # d(pi_p || pi_t) + pi_p u + (1 - pi_p) |v| (S_tau overshoots A by < u, -B by < |v|). Here u / ln(1/alpha)
    # < 1 %, so E_p[n] must be within 2 % of the limit: a bound too low by more would fail.
    sigma = 1.0
    grid = np.array([0.0, sigma * ss.norm.ppf(t)])
    draws, pi_p, pi_t = sprt(p, t, ALPHA, power, 100_000)
    assert pi_t <= ALPHA and pi_p >= power
    limit = limit_single(np.array([p]), sigma, 100_000, 0, ALPHA, grid, power=power)[0]
    u, v = np.log(p / t), np.log((1 - p) / (1 - t))
    assert draws * bernoulli_kl(p, t) <= bernoulli_kl(pi_p, pi_t) + pi_p * u + (1 - pi_p) * abs(v) + 1e-9
    assert limit <= draws <= 1.02 * limit


def test_bench_reports_the_limit_and_the_sprt_against_it(capsys):
    # The bench's wiring on a few rows: every single-sigma row carries the limit and its ratios in the table, and
    # the SPRT it runs (sound, power >= P_fix) never spends less than the limit at that power (Wald's theorem).
    from bench.adaptive_samples import DEFAULT_LOGS, main
    path, sigma = DEFAULT_LOGS[1]
    results = main(["--log", str(path), "--sigma", str(sigma), "--log_n", "10000", "--log_alpha", "0.001",
                    "--rows", "40", "--reps", "1", "--sprt", "2", "--N", "5000"])
    table = capsys.readouterr().out.split("\n| inputs")[1]
    for r in results:
        assert r["M"] * 100 <= r["limit"] and r["achieved"]["K"] == 2
        assert r["achieved"]["limit"] <= r["achieved"]["sprt"] and r["achieved"]["worst_alpha"] <= ALPHA
        assert f"| {r['limit'] / r['oracle']:.2f} | {r['adaptive'] / r['limit']:.2f} |" in table
