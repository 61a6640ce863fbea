"""Cohen et al. randomized smoothing: Monte-Carlo CERTIFY and PREDICT (ALGORITHMS §1).

``Smooth`` wraps any callable base classifier f: [B,C,H,W] pixel-space batch (noise already added)
-> scores [B,K]. The smoothed classifier is g(x) = argmax_c P(argmax f(x + eps) = c),
eps ~ N(0, sigma^2 I) in pixel space. Noise is drawn on x's device from a ``torch.Generator``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from core import adaptive, stats

ABSTAIN = -1


def example_generator(seed: int, idx: int, stage: int = 0, device: torch.device | str = "cpu",
                      worker: int = 0) -> torch.Generator:
    """The generator of one example (and cascade stage): rows never depend on sharding, order or resume.

    ``worker`` > 0 gives the independent stream of worker r when one example's draws are split (SplitCounts).
    """
    entropy = [int(seed), int(idx), int(stage)] + ([int(worker)] if worker else [])
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return g


class SplitCounts:
    """Split one example's n0 and n draws across W workers (torch.distributed ranks): worker r draws its
    share from its own stream, the counts are summed (all-reduce), and one bound is computed on the sum —
    exactly a run with n0 and n draws, so the guarantee is unchanged."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def share(self, num: int) -> int:
        return num // self.world + (1 if self.rank < num % self.world else 0)

    def reduce(self, counts: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        counts = counts.cpu()  # gloo reduces CPU tensors; a few int64s per call
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts


def certify_decision(stage: adaptive.Stage) -> tuple[int, float]:
    """Cohen's CERTIFY rule on a stage's lower bound pABar of cAHat: (cAHat, sigma * Phi^-1(pABar)) if
    pABar >= 1/2, else (ABSTAIN, 0). The one rule of the fixed (one look) and the sequential path."""
    if stage.pLower < 0.5:
        return ABSTAIN, 0.0
    return stage.cAHat, stats.radius(stage.sigma, stage.pLower)


def certify_from_counts(counts_selection: np.ndarray, counts_estimation: np.ndarray, alpha: float,
                        sigma: float) -> tuple[int, float, float]:
    """Cohen's CERTIFY decision from the two independent count vectors.

    cAHat = argmax of the n0 selection counts (ties -> lowest class); nA = its count among the n fresh
    estimation samples; pABar = one-sided (1 - alpha) Clopper-Pearson lower bound.
    Returns (cAHat or ABSTAIN, radius, pABar).
    """
    stage = adaptive.Stage.from_counts(adaptive.StageCounts(counts_selection, counts_estimation), sigma, alpha)
    return (*certify_decision(stage), stage.pLower)


def sequential_certify(sample: adaptive.Sampler, sigma: float, n0: int, n_max: int, alpha: float,
                       radius_grid: Sequence[float] | None = None, first_look: int = adaptive.FIRST_LOOK,
                       growth: float = adaptive.GROWTH, final_share: float = adaptive.FINAL_SHARE,
                       power: float = adaptive.POWER, futility: float = adaptive.FUTILITY) -> tuple[int, float, int]:
    """Sequential CERTIFY on counts drawn by ``sample(num)`` (one stream): (cAHat or ABSTAIN, radius, n_used).

    With probability >= 1 - alpha, a non-abstaining answer's class is g(x + delta) for ||delta|| < radius
    (``core.adaptive``). n_used = n0 + estimation draws (<= n0 + n_max).
    """
    adaptive.check_n0(n0)
    looks, weights = adaptive.schedule(n_max, first_look, growth, final_share, power)
    grid = adaptive.radius_grid_for(sigma, n_max, alpha * weights[-1], radius_grid)
    stage = adaptive.Stage(sample, sigma, n0, looks, weights, alpha, futility)
    while not stage.done and adaptive.settle([(*stage.radius(0.5), stage)], grid):
        stage.advance()
    return (*certify_decision(stage), stage.n_used)


def predict_from_counts(counts: np.ndarray, alpha: float) -> int:
    """Cohen's PREDICT: top class if the binomial test of the top-2 counts rejects at alpha, else ABSTAIN."""
    top2 = np.argsort(-np.asarray(counts), kind="stable")[:2]
    count1, count2 = int(counts[top2[0]]), int(counts[top2[1]]) if len(top2) > 1 else 0
    return int(top2[0]) if stats.binom_pvalue(count1, count2) <= alpha else ABSTAIN


class Smooth:
    """A smoothed classifier g around a base classifier f (Cohen et al. 2019).

    ``noise_sigma`` (default ``sigma``): the noise actually drawn, which may exceed the nominal ``sigma`` of
    the radius (DDS / FT-CADIS draw the diffusion schedule's noise at t*, slightly above σ). The certificate
    of smoothing at noise_sigma ≥ σ covers σ·Φ⁻¹(p̲) (conservative), so anything smaller is refused.
    """

    ABSTAIN = ABSTAIN

    def __init__(self, base_classifier: Callable[[torch.Tensor], torch.Tensor], num_classes: int, sigma: float,
                 seed: int = 0, split: SplitCounts | None = None, noise_sigma: float | None = None):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if noise_sigma is not None and not noise_sigma >= sigma:
            raise ValueError(f"noise_sigma={noise_sigma} below sigma={sigma} would over-certify")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.noise_sigma = float(sigma if noise_sigma is None else noise_sigma)
        self.seed = seed
        self.split = split
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        key = str(x.device)  # a default stream per device, advancing across calls (never the global RNG)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=x.device).manual_seed(self.seed)
        return self._generators[key]

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int,
                      generator: torch.Generator | None = None) -> np.ndarray:
        """Counts of argmax f(x + eps) over ``num`` noise draws, in batches; one host sync at the end.

        x: [C,H,W] on the device where f runs. Returns int64 counts [num_classes].
        """
        g = self._generator(x, generator)
        if self.split is not None:
            num = self.split.share(num)
        if hasattr(self.base_classifier, "eval"):
            self.base_classifier.eval()
        # one extra bin collects labels >= num_classes (a wider classifier head); it is dropped below
        counts = torch.zeros(self.num_classes + 1, dtype=torch.int64, device=x.device)
        remaining = num
        while remaining > 0:
            bs = min(batch_size, remaining)
            remaining -= bs
            noise = torch.randn((bs, *x.shape), generator=g, device=x.device, dtype=x.dtype)
            batch = noise.mul_(self.noise_sigma).add_(x)  # x + sigma * noise, in place: the same bits, no extra buffer
            predictions = self.base_classifier(batch).argmax(1).clamp_(max=self.num_classes)
            # index_add_, not torch.bincount: on CUDA bincount reads max(predictions) back to the host (a sync)
            counts.index_add_(0, predictions, torch.ones_like(predictions))
        counts = counts[: self.num_classes]
        if self.split is not None:
            counts = self.split.reduce(counts)
        return counts.cpu().numpy()

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> tuple[int, float]:
        """CERTIFY: with probability >= 1 - alpha over the sampling, if the returned class is not
        ABSTAIN then g(x + delta) equals it for every ||delta||_2 < radius.

        The n0 selection samples pick cAHat; n *fresh* samples estimate pA (never reused).
        """
        def sample(num: int) -> np.ndarray:
            return self.sample_counts(x, num, batch_size, generator)
        return certify_decision(adaptive.Stage.fixed(sample, self.sigma, n0, n, alpha))

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int,
                generator: torch.Generator | None = None) -> int:
        """PREDICT: returns g(x) or ABSTAIN; a wrong non-abstaining answer has probability <= alpha."""
        return predict_from_counts(self.sample_counts(x, n, batch_size, generator), alpha)

    def certify_adaptive(self, x: torch.Tensor, n0: int, n_max: int, alpha: float, batch_size: int,
                         generator: torch.Generator | None = None, **kwargs) -> tuple[int, float, int]:
        """Sample-efficient CERTIFY (anytime-valid; same overall alpha): ``sequential_certify`` on one noise
        stream of x. kwargs: radius_grid, first_look, growth, final_share, power, futility."""
        return sequential_certify(lambda num: self.sample_counts(x, num, batch_size, generator), self.sigma, n0,
                                  n_max, alpha, **kwargs)
