"""Known-probability soundness sweeps (>= 2,000 runs each) of the sequential certifiers and of ``--sound``.

Each run certifies an input whose class probabilities are known in closed form; a run is *wrong* when it
certifies and the certificate is false. The rate must stay within alpha + 3 sd (binomial, over the runs);
each sweep is paired with a variant known to be unsound, which the same check must flag. alpha = 0.1, so
that an unsound procedure shows. (tests/test_soundness.py runs smaller versions of these in CI.)

- adaptive, one sigma: counts of a two-class classifier with p_A drawn near the hard region
  (p_A in [.45, .95]); wrong = certified with sigma Phi^-1(p_A) < radius (or the wrong class). Unsound
  variant: the whole alpha at every look (no split).
- adaptive cascade (MDDS, ``--cascade_alpha union``): three stages with the 1-D threshold classifiers of
  tests/soundness_models.py, grid step .01 (the rule keeps looking as long as it can); wrong = a radius
  above what the exact probabilities give (the certifying stage's p_A and every earlier stage's largest
  off-class probability), or the ground-truth cascade differing from the prediction within the radius.
  Unsound variant: no split at all (the whole alpha at every look and for every bound). Spending the whole
  alpha at every look but keeping the union rule's split over the bounds (each at alpha / 6) is printed
  too, without a verdict: it over-spends its bounds' levels, yet the slack of the split over the stages
  keeps its rate below alpha, so a rate test at alpha cannot flag it.
- ``--sound``: the discretized-Gaussian sampler (core/noise.py) through a 4-pixel threshold classifier
  applied after rounding to the grid, whose exact p_A under the grid noise is a 4-fold convolution; wrong =
  radius > sigma Phi^-1(p_A) (the bound, less the sampler's tv_bound, above the exact p_A). Unsound variant: the noise table built at sigma / 2 (the [-1, 1] vs [0, 1] scale
  slip of diffusion pipelines) while certifying at sigma. (Through ``Smooth(sound=True).certify``.)

    python bench/adaptive_soundness.py [--runs 2000] [--only adaptive|cascade|sound]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats as ss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import adaptive  # noqa: E402
from core.noise import LEVELS, DiscreteGaussian  # noqa: E402
from core import cascade  # noqa: E402
from core.smoothing import Smooth, example_generator, sequential_certify  # noqa: E402
from tests.soundness_models import GRID_W, Threshold1D, cascade_exact_radius, cascade_truth, certificate_is_wrong, grid_threshold_sf  # noqa: E402,E501

ALPHA = 0.1


def tolerance(runs: int, alpha: float = ALPHA) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def verdict(name: str, wrong: int, certified: int, runs: int, expect_sound: bool) -> bool:
    rate, tol = wrong / runs, tolerance(runs)
    ok = rate <= tol if expect_sound else rate > tol
    print(f"  {name:<40} wrong {wrong:5d}/{runs} = {rate:.4f} (alpha + 3 sd = {tol:.4f}), certified "
          f"{certified / runs:.0%} -> {'sound' if rate <= tol else 'UNSOUND'} ({'as expected' if ok else 'NOT'})")
    return ok


# -------------------------------------------------------------------------------------- one sigma
def adaptive_single(runs: int, seed: int, **kwargs) -> tuple[int, int]:
    """Wrong certificates of sequential CERTIFY on exact binomial counts of known p_A."""
    sigma, n0, n_max = 0.5, 20, 5000
    rng = np.random.default_rng(seed)
    wrong = certified = 0
    for p_A in rng.uniform(0.45, 0.95, runs):
        probs = np.array([p_A, 1 - p_A])
        pred, radius, _ = sequential_certify(lambda num: rng.multinomial(num, probs), sigma, n0, n_max,
                                                      ALPHA, radius_grid=np.arange(0, 3, 0.01), **kwargs)
        certified += pred >= 0
        wrong += pred >= 0 and (pred != 0 or radius > sigma * ss.norm.ppf(p_A))
    return wrong, certified


# ---------------------------------------------------------------------------------------- cascade
CASCADE = {1.0: Threshold1D([-0.8, 0.9]), 0.5: Threshold1D([-0.3, 0.35]), 0.25: Threshold1D([0.1, 0.2])}


def adaptive_cascade(runs: int, seed: int, **kwargs) -> tuple[int, int]:
    """Wrong certificates of the sequential cascade (``--cascade_alpha union``: provably alpha overall):
    a radius above what the exact probabilities give (``cascade_exact_radius``, the strict check; the
    geometric check against the true cascade, ``certificate_is_wrong``, is counted in ``geometric``)."""
    sigmas = sorted(CASCADE, reverse=True)
    rng = np.random.default_rng(seed)
    wrong = certified = 0
    for u in rng.uniform(-1.5, 1.5, runs):
        samplers = [(lambda num, p=CASCADE[s].probs(u, s)[0]: rng.multinomial(num, p)) for s in sigmas]
        res = cascade.sequential_cascade(samplers, sigmas, 20, 2000, ALPHA, 0.5, alpha_rule="union",
                                         radius_grid=np.arange(0, 3, 0.01), **kwargs)
        if res.prediction < 0:
            continue
        certified += 1
        strict = res.radius > cascade_exact_radius(CASCADE, u, res.prediction, res.stage, 0.5)
        wrong += strict or certificate_is_wrong(lambda us: cascade_truth(CASCADE, us, 0.5), u, res.prediction,
                                                res.radius)
    return wrong, certified


# ------------------------------------------------------------------------------------------ sound
class GridThreshold:
    """f(x) = [sum_i GRID_W_i round(255 x_i) > b] on 4 pixels ([B, 1, 2, 2]): a classifier of f o round."""

    def __init__(self, b: float):
        self.b = b

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        ints = torch.round(batch.double().reshape(len(batch), -1) * LEVELS)
        return torch.nn.functional.one_hot((ints @ torch.as_tensor(GRID_W, dtype=torch.float64) > self.b).long(), 2)


def sound_runs(runs: int, seed: int, sampler_sigma_factor: float = 1.0) -> tuple[int, int]:
    """Wrong bounds of ``Smooth(sound=True).certify`` against the exact p_A of f o round under grid noise;
    ``sampler_sigma_factor`` != 1 swaps in a noise table at the wrong scale (the unsound variant)."""
    sigma, n0, n = 0.25, 20, 200
    sf = grid_threshold_sf(DiscreteGaussian(sigma))
    wrong_table = DiscreteGaussian(sigma * sampler_sigma_factor) if sampler_sigma_factor != 1 else None
    rng = np.random.default_rng(seed)
    wrong = certified = 0
    for i in range(runs):
        j = rng.integers(40, 216, 4)
        J = int((GRID_W * j).sum())
        b = J + rng.uniform(-1.6, 0.4) * LEVELS * sigma * 2       # p_A mostly in (.5, .95): the bound decides
        smooth = Smooth(GridThreshold(b), 2, sigma, sound=True)
        if wrong_table is not None:
            smooth.grid_noise = wrong_table
        x = torch.as_tensor(j, dtype=torch.float32).reshape(1, 2, 2) / LEVELS
        pred, radius = smooth.certify(x, n0, n, ALPHA, 256, example_generator(seed, i))
        if pred < 0:
            continue
        certified += 1
        p_pred = sf(b - J) if pred == 1 else 1 - sf(b - J)
        wrong += radius > sigma * ss.norm.ppf(p_pred)        # the bound exceeded the exact p_A
    return wrong, certified


@contextlib.contextmanager
def no_alpha_split(stages: bool = False):
    """The known-unsound variant of the sequential certifiers: every look gets the whole alpha (with
    ``stages``, every bound of the cascade too: no union bound anywhere)."""
    saved = adaptive.look_weights, cascade.stage_alpha
    adaptive.look_weights = lambda looks, *a, **k: [1.0] * len(looks)
    if stages:
        cascade.stage_alpha = lambda alpha, *a, **k: alpha
    try:
        yield
    finally:
        adaptive.look_weights, cascade.stage_alpha = saved


def main(argv: list[str] | None = None) -> bool:
    args = get_args_parser().parse_args(argv)
    runs, ok = args.runs, True
    print(f"alpha = {ALPHA}, {runs} runs per sweep")
    sweeps = {
        "adaptive": ("adaptive CERTIFY, one sigma (n0 20, n_max 5000, grid step .01)", adaptive_single),
        "cascade": ("adaptive MDDS cascade, sigmas 1 > .5 > .25 (n0 20, n_max 2000)", adaptive_cascade),
        "sound": ("--sound: CERTIFY on grid noise (n0 20, n 200), 4-pixel f o round", sound_runs),
    }
    for key, (title, fn) in sweeps.items():
        if args.only not in (None, key):
            continue
        t = time.time()
        print(title + ":")
        ok &= verdict("shipped", *fn(runs, 1), runs, True)
        if key == "sound":
            ok &= verdict("unsound: noise table at sigma / 2", *fn(runs, 2, 0.5), runs, False)
        elif key == "cascade":
            with no_alpha_split(stages=True):
                ok &= verdict("unsound: the whole alpha everywhere", *fn(runs, 2), runs, False)
            with no_alpha_split():
                wrong, certified = fn(runs, 3)
            print(f"  (whole alpha at every look, split over the bounds: wrong {wrong}/{runs} = {wrong / runs:.4f}, "
                  f"certified {certified / runs:.0%}; no verdict)")
        else:
            with no_alpha_split():
                ok &= verdict("unsound: the whole alpha at every look", *fn(runs, 2), runs, False)
        print(f"  ({time.time() - t:.0f} s)")
    print("all as expected" if ok else "SOME SWEEP NOT AS EXPECTED")
    return ok


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("adaptive_soundness.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2000)
    p.add_argument("--only", choices=["adaptive", "cascade", "sound"], default=None)
    return p


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
