"""How close can ``--adaptive`` get to the oracle? A vectorized model of its rule, for sweeps and a limit.

bench/adaptive_samples.py runs the shipped code input by input (tens of ms each); this models the same
rule on whole arrays (10,000 inputs in about a second), on the same simulated inputs and oracle:

- looks ``adaptive.look_schedule``, shares ``adaptive.look_weights``, the grid ``adaptive.default_radius_grid``;
- at look l, grid radius g is certified when the hits reach h[l, g], the least count whose Clopper-Pearson
  lower bound at alpha w_l clears p_g = Phi(r_g / sigma) (randomized: also at h - 1 when the input's uniform,
  floored at ``U_FLOOR``, is below the exact remainder: ``rcp_thresholds``);
- stop at the top of the grid, at n_max, or when the predictive probability of reaching the next grid
  radius at the last look is below ``futility`` (``reach_probability``).

``--free_peek`` gives every look the *whole* alpha: not a valid certificate, but no valid rule can prove a
radius faster, so what it spends is a floor on any procedure of this kind; what remains above the oracle
is the cost of learning that the next grid radius is out of reach (the oracle knows it).

``--sweep`` runs the tuning protocol of the shipped constants: a grid of (growth, final share, power,
futility, randomized) on ONE training distribution (whitebox sigma .50, seed 0), the cheapest design whose
worst gap there is within ``--target`` (default .2 pp, leaving room), then that design on every other log
and on fresh draws (seed 1): the held-out figures.

    python bench/adaptive_frontier.py                       # shipped constants and the free-peek floor
    python bench/adaptive_frontier.py --sweep               # the tuning protocol
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import stats as ss
from scipy.special import betaln

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.adaptive_samples import DEFAULT_LOGS, Log, oracle_single, population, read_log  # noqa: E402
from core import adaptive  # noqa: E402

TRAIN = DEFAULT_LOGS[2]          # whitebox sigma .50
FAMILIES = [("cp", "(shipped)"), ("free", "(free peek: the whole alpha at every look, NOT valid: a floor)"),
            ("cp+rand", "(randomized Clopper-Pearson at every look)"),
            ("kt", "(Ville on the KT mixture at every look, Voracek 2024)"),
            ("kt+cp", "(KT mixture at alpha (1 - final) + CP at alpha final at the last look)")]
U_FLOOR = 0.01                   # the randomized bound's uniform is floored here (a finite bound at all hits)
RANDOMIZED = False              # the shipped bound; --randomized 1 models the randomized one


# Phase-1 home of the rule's array math (moves to core.adaptive with the wiring).
def rcp_thresholds(looks: np.ndarray, levels: np.ndarray, p_g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h[l, g]: the least hit count at look l whose Clopper-Pearson lower bound at levels[l] is >= p_g[g]
    (P_p(X >= h) <= a); q[l, g] = (a - P_p(X >= h)) / P_p(X = h - 1): the randomized bound (reject p when
    P_p(X > x) + U P_p(X = x) <= a) certifies p_g at h - 1 hits exactly when U <= q."""
    n = np.asarray(looks)[:, None]
    a = np.asarray(levels, float)[:, None]
    p = np.asarray(p_g, float)[None, :]
    h = ss.binom.isf(a, n, p) + 1                    # isf(a) = least k with P(X > k) <= a
    for _ in range(2):                               # guard the float edge either way
        h = np.where(ss.binom.sf(h - 1, n, p) > a, h + 1, h)
        h = np.where((h > 0) & (ss.binom.sf(h - 2, n, p) <= a), h - 1, h)
    mass = ss.binom.pmf(h - 1, n, p)
    q = np.where(mass > 0, (a - ss.binom.sf(h - 1, n, p)) / np.maximum(mass, 1e-300), 0.0)
    return h.astype(np.int64), np.clip(q, 0.0, 1.0)


def kt_thresholds(looks: np.ndarray, alpha: float, p_g: np.ndarray) -> np.ndarray:
    """h[l, g]: the least hit count k > n_l p_g at which the Krichevsky-Trofimov mixture likelihood ratio
    B(k + 1/2, n - k + 1/2) / B(1/2, 1/2) / (p^k (1 - p)^(n - k)) reaches 1 / alpha: by Ville's inequality an
    anytime-valid test of p <= p_g at every look with no split of alpha (Voracek 2024's sequential test)."""
    h = np.zeros((len(looks), len(p_g)), np.int64)
    for t, n in enumerate(looks):
        k = np.arange(n + 1)
        log_mix = betaln(k + 0.5, n - k + 0.5) - betaln(0.5, 0.5)
        for g, p in enumerate(p_g):
            ok = (log_mix - k * np.log(p) - (n - k) * np.log1p(-p) >= -np.log(alpha)) & (k > n * p)
            h[t, g] = np.flatnonzero(ok)[0] if ok.any() else n + 1
    return h


def reach_probability(k, n, n_last, h_last):
    """Predictive probability that the hits reach h_last by n_last given k of n: the rate's uncertainty
    plus the luck of the draws to come (normal approximation, v = (k + 1/2) / (n + 1))."""
    k, m = np.asarray(k, float), n_last - n
    v = (k + 0.5) / (n + 1)
    sd = np.sqrt(v * (1 - v) * (m * m / (n + 1) + m))
    return ss.norm.sf((np.asarray(h_last) - 0.5 - k - m * v) / np.maximum(sd, 1e-12))


class Simulated:
    """One log's simulated inputs with their estimation counts at every look of a fine schedule."""

    def __init__(self, log: Log, reps: int, seed: int, N: int, n0: int, alpha: float, first: int, growth: float):
        rng = np.random.default_rng([seed, log.key, 99])
        pops = [population(log, rng) for _ in range(reps)]
        probs = np.concatenate([p for p, _ in pops])
        labels = np.concatenate([lab for _, lab in pops])
        self.log, self.N, self.n0, self.alpha = log, N, n0, alpha
        self.looks = np.array(adaptive.look_schedule(N, first, growth))
        selection = rng.multinomial(n0, probs)
        self.c = selection.argmax(1)                                 # cAHat: ties -> lowest class
        p_c = probs[np.arange(len(self.c)), self.c]
        steps = np.diff(np.concatenate([[0], self.looks]))
        self.S = np.cumsum(rng.binomial(steps[None, :], p_c[:, None]), 1)   # hits of cAHat at each look
        self.U = rng.uniform(size=len(self.c))
        self.correct = self.c == labels
        self.p_A = probs.max(1)
        self.M = len(self.c)

    def run(self, final: float, power: float, futility: float, randomized: bool, family: str = "cp") -> dict:
        """family: cp (the shipped union bound over the looks), free (the whole alpha at every look: a floor,
        not valid), kt (Ville on the KT mixture at every look), kt+cp (kt at alpha (1 - final), CP at alpha
        final on the last look)."""
        looks, N, alpha = self.looks, self.N, self.alpha
        weights = np.array(adaptive.look_weights(list(looks), final, power))
        if family != "cp":
            weights = np.ones(len(looks)) if family in ("free", "kt") else np.zeros(len(looks))
            weights[-1] = final if family == "kt+cp" else 1.0
        grid = adaptive.default_radius_grid(self.log.sigma, N, alpha * weights[-1])
        p_g = ss.norm.cdf(grid / self.log.sigma)
        h, q = rcp_thresholds(looks, alpha * np.maximum(weights, 1e-300), p_g)
        if family in ("kt", "kt+cp"):
            kt = kt_thresholds(looks, alpha * (1 - final if family == "kt+cp" else 1.0), p_g)
            h = kt if family == "kt" else np.minimum(h, kt)
            randomized = False
        S = self.S[:, :, None]
        hit = S >= h[None]
        if randomized:
            hit |= (S == h[None] - 1) & (np.maximum(self.U, U_FLOOR)[:, None, None] <= q[None])
        level = np.maximum.accumulate(hit.sum(2) - 1, 1)             # certified grid level after each look
        G, L = len(grid), len(looks)
        tau = np.full(self.M, L - 1)
        active = np.ones(self.M, bool)
        for t in range(L - 1):
            i = np.flatnonzero(active)
            g = level[i, t]
            nxt = np.minimum(g + 1, G - 1)
            reach = reach_probability(self.S[i, t], looks[t], looks[-1], h[-1, nxt])
            stop = (g >= G - 1) | (reach < futility)
            tau[i[stop]] = t
            active[i[stop]] = False
        lev = level[np.arange(self.M), tau]
        fixed_h, _ = rcp_thresholds(np.array([N]), np.array([alpha]), p_g)
        lev_fixed = (self.S[:, -1, None] >= fixed_h[0][None]).sum(1) - 1
        acc = np.array([np.mean(self.correct & (lev >= g)) for g in range(G)])
        acc_fixed = np.array([np.mean(self.correct & (lev_fixed >= g)) for g in range(G)])
        oracle = oracle_single(self.p_A, self.log.sigma, N, self.n0, alpha, grid)
        passes = float((self.n0 + looks[tau]).sum())
        return {"adaptive": passes, "oracle": float(oracle.sum()), "fixed": self.M * float(self.n0 + N),
                "gap": 100 * (acc - acc_fixed), "grid": grid, "tau": tau, "level": lev}


def report(name: str, r: dict) -> None:
    print(f"  {name:<70} adaptive/oracle {r['adaptive'] / r['oracle']:.3f}  fixed/adaptive "
          f"{r['fixed'] / r['adaptive']:5.1f}x  worst gap {r['gap'].min():+.2f} pp  "
          f"(gaps {' '.join(f'{x:+.2f}' for x in r['gap'])})")


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    logs = [read_log(p, s, 10_000, 1e-3) for p, s in DEFAULT_LOGS]
    design = {"final": args.final_share, "power": args.power, "futility": args.futility, "randomized": args.randomized}
    growth = args.growth
    if args.sweep:
        train = read_log(*TRAIN, 10_000, 1e-3)
        best = None
        print(f"training: {train.name}, seed 0, {args.reps} reps; target worst gap >= -{args.target} pp")
        for g in (1.1, 1.15, 1.2, 1.3):
            sim = Simulated(train, args.reps, 0, args.N, args.N0, args.alpha, args.first_look, g)
            for final, power, fut, rnd in itertools.product((0.4, 0.5, 0.6, 0.7), (0.0, 0.5, 1.0),
                                                            (0.03, 0.04, 0.05, 0.06, 0.07), (False, True)):
                r = sim.run(final, power, fut, rnd)
                ratio = r["adaptive"] / r["oracle"]
                if r["gap"].min() >= -args.target and (best is None or ratio < best[0]):
                    best = (ratio, g, {"final": final, "power": power, "futility": fut, "randomized": rnd})
        print(f"chosen: growth {best[1]}, {best[2]} (training adaptive/oracle {best[0]:.3f})")
        growth, design = best[1], best[2]
    print(f"\ndesign: growth {growth}, first look {args.first_look}, {design}; held-out: seed 1")
    totals = {"adaptive": 0.0, "oracle": 0.0, "fixed": 0.0}
    worst = 0.0
    for lg in logs:
        sim = Simulated(lg, args.reps, 1, args.N, args.N0, args.alpha, args.first_look, growth)
        r = sim.run(**design)
        report(lg.name, r)
        for k in totals:
            totals[k] += r[k]
        worst = min(worst, r["gap"].min())
        for family, label in FAMILIES[1:] if args.compare else FAMILIES[1:2]:
            report(f"  {label}", sim.run(design["final"], design["power"], design["futility"], family == "cp+rand",
                                         family.replace("cp+rand", "cp")))
    print(f"\n  all logs: adaptive/oracle {totals['adaptive'] / totals['oracle']:.3f}, fixed/adaptive "
          f"{totals['fixed'] / totals['adaptive']:.1f}x, worst gap {worst:+.2f} pp")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("adaptive_frontier.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", action="store_true", help="tune on the training log, report on the others")
    p.add_argument("--compare", action="store_true", help="also the other bound families on every log")
    p.add_argument("--target", type=float, default=0.2, help="worst gap allowed on the training log (pp)")
    p.add_argument("--reps", type=int, default=20, help="passes over each log (500 rows each)")
    p.add_argument("--N", type=int, default=100_000)
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--first_look", type=int, default=adaptive.FIRST_LOOK)
    p.add_argument("--growth", type=float, default=adaptive.GROWTH)
    p.add_argument("--final_share", type=float, default=adaptive.FINAL_SHARE)
    p.add_argument("--power", type=float, default=adaptive.POWER)
    p.add_argument("--futility", type=float, default=adaptive.FUTILITY)
    p.add_argument("--randomized", type=int, choices=[0, 1], default=int(RANDOMIZED))
    return p


if __name__ == "__main__":
    main()
