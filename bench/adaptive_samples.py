"""Forward passes and certified accuracy: adaptive CERTIFY (n_max = N) vs fixed-N CERTIFY, side by side.

CPU only, no network: each test input is a simulated base classifier whose class probabilities are
known, and its counts are drawn directly from a multinomial (one "forward pass" per draw).

Realistic p_A: taken from the real Cohen et al. CIFAR-10 ResNet-110 logs (N = 10k, alpha = 1e-3) in
tests/data/reference_results/salman/cifar10_whitebox_cohen_resnet110_noise_S_sigma_S_N10000.tsv:
- a certified row's radius gives pABar = Phi(radius / sigma); nA is the count whose CP lower bound at
  N = 10k, alpha = 1e-3 is the nearest, and p_A is drawn from the posterior Beta(nA + 1, N - nA + 1)
  (uniform prior), which also spreads the rows that hit the largest radius (nA = N) over [~.999, 1];
- an abstained row gets p_A ~ U(0.3, p*), p* = the smallest nA / N that CERTIFY at 10k would certify
  (~.516): the rows that abstain at N = 10k.
The other 1 - p_A: a runner-up class gets min(p_A, .6 (1 - p_A)), the 8 others share the rest (10 classes).
Correct rows have the top class as label; wrong rows a minor class; abstained rows the top or the
runner-up class with probability 1/2 each.

Both methods see the *same* draws: the adaptive run's counts are the first n_used draws of the stream
and the fixed run completes them to N (same n0 selection draws), so the differences come from the
procedures, not from sampling luck. Forward passes include the n0 selection draws.

    python bench/adaptive_samples.py [--small] [--reps R] [--seed S] [--sigmas .25 .5 1]
Goal (issue 6): >= 10x fewer forward passes in total, certified accuracy within 0.5 pp at every grid radius.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import adaptive, stats  # noqa: E402
from core.smoothing import ABSTAIN, certify_from_counts, sequential_certify  # noqa: E402

LOGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference_results" / "salman"
LOG_N, LOG_ALPHA, K = 10_000, 1e-3, 10


def read_log(path: Path) -> dict[str, np.ndarray]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return dict(label=np.array([int(r[1]) for r in rows]), predict=np.array([int(r[2]) for r in rows]),
                radius=np.array([float(r[3]) for r in rows]))


def log_lower_table() -> tuple[np.ndarray, np.ndarray]:
    """nA and its CP lower bound at the logs' N and alpha, for every nA that certifies (bound >= 1/2)."""
    ks = np.arange(LOG_N // 2, LOG_N + 1)
    lowers = np.array([stats.cp_lower(int(k), LOG_N, LOG_ALPHA) for k in ks])
    keep = lowers >= 0.5
    return ks[keep], lowers[keep]


def simulated_inputs(log: dict, sigma: float, table, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities [rows, K] and labels [rows] of the simulated classifiers of one log."""
    ks, lowers = table
    rows = len(log["label"])
    p_A = np.empty(rows)
    certified = log["predict"] >= 0
    nA = ks[np.abs(lowers[None, :] - norm.cdf(log["radius"][certified] / sigma)[:, None]).argmin(1)]
    p_A[certified] = rng.beta(nA + 1, LOG_N - nA + 1)
    p_A[~certified] = rng.uniform(0.3, ks[0] / LOG_N, (~certified).sum())
    probs = np.empty((rows, K))
    probs[:, 0] = p_A                                   # class 0: the top class, class 1: the runner-up
    probs[:, 1] = np.minimum(p_A, 0.6 * (1 - p_A))
    probs[:, 2:] = ((1 - probs[:, 0] - probs[:, 1]) / (K - 2))[:, None]
    correct = certified & (log["predict"] == log["label"])
    labels = np.where(correct, 0, 2)                    # wrong rows: a minor class
    labels[~certified] = rng.integers(0, 2, (~certified).sum())
    return probs, labels


def run_row(probs: np.ndarray, sigma: float, n0: int, N: int, alpha: float, rng: np.random.Generator,
            schedule: dict) -> tuple[tuple[int, float, int], tuple[int, float, int]]:
    """(adaptive, fixed) results (prediction, radius, forward passes) on one shared stream of draws."""
    draws: list[np.ndarray] = []

    def sample(num: int) -> np.ndarray:
        draws.append(rng.multinomial(num, probs))
        return draws[-1]
    pred, radius, n_used = sequential_certify(sample, sigma, n0, N, alpha, **schedule)
    selection, estimation = draws[0], np.sum(draws[1:], axis=0)
    estimation = estimation + rng.multinomial(N - int(estimation.sum()), probs)  # complete the stream to N
    fixed_pred, fixed_radius, _ = certify_from_counts(selection, estimation, alpha, sigma)
    return (pred, radius, n_used), (fixed_pred, fixed_radius, n0 + N)


def certified_accuracy(pred: np.ndarray, radius: np.ndarray, labels: np.ndarray, grid: np.ndarray) -> np.ndarray:
    ok = (pred != ABSTAIN) & (pred == labels)
    return np.array([np.mean(ok & (radius >= r)) for r in grid])


def main(args: argparse.Namespace) -> dict:
    schedule = dict(first_look=args.first_look, growth=args.growth, final_share=args.final_share,
                    power=args.power, futility=args.futility)
    looks, weights = adaptive.schedule(args.N, args.first_look, args.growth, args.final_share, args.power)
    print(f"N = n_max = {args.N}, N0 = {args.N0}, alpha = {args.alpha}; looks {looks}; "
          f"shares of alpha {' '.join(f'{w:.3g}' for w in weights)}")
    table = log_lower_table()
    totals = dict(adaptive=0, fixed=0)
    all_used: list[int] = []
    worst = 0.0
    for sigma in args.sigmas:
        path = args.logs / f"cifar10_whitebox_cohen_resnet110_noise_{sigma:.2f}_sigma_{sigma:.2f}_N10000.tsv"
        log = read_log(path)
        if args.rows:
            log = {k: v[: args.rows] for k, v in log.items()}
        grid = adaptive.default_radius_grid(sigma, args.N, args.alpha * weights[-1])
        res = {"adaptive": [], "fixed": []}
        labels = []
        t0 = time.time()
        for rep in range(args.reps):
            rng = np.random.default_rng([args.seed, int(sigma * 1000), rep])
            probs, lab = simulated_inputs(log, sigma, table, rng)
            labels.append(lab)
            for i in range(len(lab)):
                a, f = run_row(probs[i], sigma, args.N0, args.N, args.alpha, rng, schedule)
                res["adaptive"].append(a)
                res["fixed"].append(f)
        labels = np.concatenate(labels)
        out = {m: np.array(v, dtype=float) for m, v in res.items()}
        used = {m: out[m][:, 2] for m in out}
        acc = {m: certified_accuracy(out[m][:, 0].astype(int), out[m][:, 1], labels, grid) for m in out}
        for m in totals:
            totals[m] += int(used[m].sum())
        all_used += used["adaptive"].astype(int).tolist()
        print(f"\nsigma = {sigma}: {len(labels)} inputs ({args.reps} x {len(log['label'])} rows of {path.name}), "
              f"{time.time() - t0:.1f} s")
        print(f"  forward passes  total: fixed {int(used['fixed'].sum()):,}  adaptive {int(used['adaptive'].sum()):,}"
              f"  ratio {used['fixed'].sum() / used['adaptive'].sum():.1f}x")
        print(f"                  median: fixed {int(np.median(used['fixed'])):,}  adaptive "
              f"{int(np.median(used['adaptive'])):,}   (adaptive quartiles {int(np.percentile(used['adaptive'], 25)):,}"
              f" / {int(np.percentile(used['adaptive'], 75)):,}; at n_max: "
              f"{np.mean(used['adaptive'] == args.N0 + args.N):.1%})")
        print("  radius   cert.acc fixed   adaptive   diff (pp)")
        for r, af, aa in zip(grid, acc["fixed"], acc["adaptive"]):
            print(f"  {r:6.2f}   {af:14.2%}   {aa:8.2%}   {100 * (aa - af):+8.2f}")
            worst = max(worst, 100 * abs(aa - af))
        mean_radius = {m: np.mean(np.where(out[m][:, 0] == labels, out[m][:, 1], 0.0)) for m in out}
        print(f"  ACR: fixed {mean_radius['fixed']:.4f}  adaptive {mean_radius['adaptive']:.4f}")
    ratio = totals["fixed"] / totals["adaptive"]
    print(f"\nall sigmas: forward passes fixed {totals['fixed']:,}  adaptive {totals['adaptive']:,}  "
          f"ratio {ratio:.1f}x;"
          f" adaptive median {int(np.median(all_used)):,} per input; largest |difference| in certified accuracy at a"
          f" grid radius {worst:.2f} pp")
    print(f"goal (>= 10x, <= 0.5 pp): {'met' if ratio >= 10 and worst <= 0.5 else 'NOT met'}")
    return dict(ratio=ratio, worst_pp=worst)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("adaptive_samples.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="4 passes over the logs (< 1 minute on a CPU)")
    p.add_argument("--reps", type=int, default=10, help="passes over each log, fresh p_A and draws each time")
    p.add_argument("--rows", type=int, default=0, help="use only the first ROWS rows of each log (0: all)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--N", type=int, default=100_000, help="fixed N, and the adaptive n_max")
    p.add_argument("--N0", type=int, default=100)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--first_look", type=int, default=adaptive.FIRST_LOOK)
    p.add_argument("--growth", type=float, default=adaptive.GROWTH)
    p.add_argument("--final_share", type=float, default=adaptive.FINAL_SHARE)
    p.add_argument("--power", type=float, default=adaptive.POWER)
    p.add_argument("--futility", type=float, default=adaptive.FUTILITY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logs", type=Path, default=LOGS)
    return p


if __name__ == "__main__":
    a = get_args_parser().parse_args()
    if a.small:
        a.reps = 4
    main(a)
